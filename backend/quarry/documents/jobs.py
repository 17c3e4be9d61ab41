"""`documents.parse`: this process's parsing, fed from the database like the runs' tasks.

A wake-up (after an upload, or from the sweeper) says "documents are waiting". The woken
process claims as many as its parser can take at once (`parse_concurrency`), oldest first,
each with a lease (documents/lifecycle.py), parses them in isolated child processes
(documents/parsing/isolation.py), renews the leases while the parses run, and stores each
result only while it still holds the lease; it claims again as parses end, until none is
waiting. A parse slower than the sweep interval is therefore never started twice, and a
document whose parser keeps dying with its worker ends failed instead of being retried
forever. A process that claimed a full batch posts a wake-up (throttled) so that idle workers
help with a large upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import timedelta

import structlog

from quarry.capacity import Slots
from quarry.db import job_write_scope
from quarry.documents import lifecycle
from quarry.documents.parsing import DocumentKind, DocumentParseError, ParsedDocument
from quarry.documents.parsing.isolation import (
    UNEXPECTED_REASON,
    IsolatedParser,
    ParserClosedError,
)
from quarry.jobs import PARSE_DOCUMENT, JobContext

log = structlog.get_logger(__name__)

_FEED_KEY = "documents.parse_feed"
#: The one id parse wake-ups carry: at most one waits in the queue.
WAKE_ID = "waiting"
ANNOUNCE_EVERY_SECONDS = 1.0


class ParseFeed:
    """This process's parsing (see the module docstring); one per job context."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._parser = IsolatedParser.from_settings(ctx.settings)
        # Twice the parser's children: one document's result is stored while the next parses.
        self._slots = Slots(2 * ctx.settings.parse_concurrency)
        self._lease = timedelta(seconds=ctx.settings.task_lease_seconds)
        self._feed: asyncio.Task[None] | None = None
        self._look_again = False
        self._parses: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._announced = 0.0
        self._stopping = False

    @classmethod
    def for_context(cls, ctx: JobContext) -> ParseFeed:
        feed = ctx.extras.get(_FEED_KEY)
        if not isinstance(feed, ParseFeed):
            feed = ctx.extras[_FEED_KEY] = ParseFeed(ctx)
        return feed

    def wake(self) -> None:
        if self._stopping:
            return
        if self._feed is not None and not self._feed.done():
            self._look_again = True
            return
        self._feed = asyncio.create_task(self._claim_forever(), name="quarry-parse-feed")
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._renew_forever(), name="quarry-parse-leases")

    async def _claim_forever(self) -> None:
        ctx = self._ctx
        try:
            while not self._stopping:
                free = await self._slots.wait_until_free()
                self._slots.take(free)
                try:
                    async with job_write_scope(ctx.sessionmaker) as session:
                        claimed = await lifecycle.claim_documents(
                            session, ctx.worker_id, self._lease, free
                        )
                finally:
                    self._slots.give(free)
                self._slots.take(len(claimed))
                if len(claimed) == self._slots.capacity:
                    self._announce()
                for document in claimed:
                    self._parses[document.id] = asyncio.create_task(self._parse(document))
                if not claimed:
                    if self._look_again:
                        self._look_again = False
                        continue
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("documents.parse_feed_failed")  # the sweeper wakes it again

    async def _parse(self, document: lifecycle.ClaimedDocument) -> None:
        ctx = self._ctx
        document_id = str(document.id)
        try:
            path = ctx.storage.path_for(document.storage_key)
            parsed: ParsedDocument | None = None
            error: str | None = None
            try:
                parsed = await self._parser.parse(path, DocumentKind(document.kind))
            except ParserClosedError:
                return  # this process is stopping: `stop` hands the document back
            except DocumentParseError as exc:
                error = exc.reason
            except Exception:
                log.exception("documents.parse.crashed", document_id=document_id)
                error = UNEXPECTED_REASON
            async with job_write_scope(ctx.sessionmaker) as session:
                if parsed is not None:
                    stored = await lifecycle.store_parsed(
                        session, document.id, ctx.worker_id, parsed
                    )
                else:
                    stored = await lifecycle.store_failed(
                        session, document.id, ctx.worker_id, error or UNEXPECTED_REASON
                    )
            if not stored:
                log.info("documents.parse.lease_lost", document_id=document_id)
            elif parsed is not None:
                log.info("documents.parse.ready", document_id=document_id, pages=len(parsed.pages))
            else:
                log.info("documents.parse.failed", document_id=document_id, reason=error)
        finally:
            self._parses.pop(document.id, None)
            self._slots.give()
            if not self._stopping and (self._feed is None or self._feed.done()):
                self.wake()  # a slot is free: look for the next document

    def _announce(self) -> None:
        if not getattr(self._ctx.queue, "fleet", False):
            return
        now = time.monotonic()
        if now - self._announced < ANNOUNCE_EVERY_SECONDS:
            return
        self._announced = now
        task = asyncio.create_task(self._ctx.queue.enqueue(PARSE_DOCUMENT, [WAKE_ID]))
        task.add_done_callback(_log_failure)

    async def _renew_forever(self) -> None:
        interval = self._lease.total_seconds() / 3
        while self._parses or (self._feed is not None and not self._feed.done()):
            await asyncio.sleep(interval)
            held = list(self._parses)
            if not held:
                continue
            try:
                async with job_write_scope(self._ctx.sessionmaker) as session:
                    await lifecycle.renew_leases(session, held, self._ctx.worker_id, self._lease)
            except Exception as exc:  # a blip: the lease has two more beats of slack
                log.warning("documents.lease_renewal_failed", error=repr(exc))

    async def stop(self, grace: float = 0.0) -> None:
        self._stopping = True
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed
        if self._parses:
            await asyncio.wait(set(self._parses.values()), timeout=grace)
        unfinished = list(self._parses)
        for task in list(self._parses.values()):
            task.cancel()
        await asyncio.gather(*self._parses.values(), return_exceptions=True)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if unfinished:
            with contextlib.suppress(Exception):
                async with job_write_scope(self._ctx.sessionmaker) as session:
                    await lifecycle.release_documents(session, unfinished, self._ctx.worker_id)
        await self._parser.aclose()


async def parse_documents_job(ctx: JobContext, _waiting: str) -> None:
    """`documents.parse`: documents wait to be parsed; this process takes some (at once)."""
    ParseFeed.for_context(ctx).wake()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("documents.announce_failed", error=repr(task.exception()))
