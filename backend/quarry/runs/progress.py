"""Live progress for the browser (`GET …/runs/{id}/events`), at a cost that does not grow with
the run's size or with the number of people watching it.

One watcher per run per process reads the run's row (its counters: runs/lifecycle.py) and
its new log lines once a second and hands both to every open stream of that run; it stops
when the last stream closes. A stream that resumes from an older event id (`Last-Event-ID`)
first reads what it missed itself, a page at a time, then follows the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.models import ACTIVE_RUN_STATUSES
from quarry.runs import repository
from quarry.runs.schemas import RunEventOut
from quarry.runs.service import runs_out
from quarry.settings import Settings

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0
#: Log lines a watcher keeps for streams that are a little behind.
_KEPT_EVENTS = 2000
_PAGE = 500


class _Watch:
    """What one run looks like now, shared by its streams."""

    def __init__(self, run_id: uuid.UUID, first_id: int) -> None:
        self.run_id = run_id
        self.progress: str | None = None
        self.status: str | None = None
        self.gone = False
        #: (event id, SSE message) of recent log lines, oldest first.
        self.events: deque[tuple[int, str]] = deque()
        #: A stream that has seen less than this must read the database: the log lines up
        #: to it are no longer kept here (or were there before the watcher started).
        self.kept_after = first_id
        self.last_id = first_id
        self.streams = 0
        self.version = 0
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    def keep(self, event_id: int, message: str) -> None:
        self.events.append((event_id, message))
        self.last_id = event_id
        if len(self.events) > _KEPT_EVENTS:
            self.kept_after = self.events.popleft()[0]

    async def publish(self) -> None:
        async with self.changed:
            self.version += 1
            self.changed.notify_all()

    @property
    def ended(self) -> bool:
        return self.gone or (self.status is not None and self.status not in ACTIVE_RUN_STATUSES)


def _log_message(event: object) -> tuple[int, str]:
    out = RunEventOut.model_validate(event)
    return out.id, f"id: {out.id}\nevent: log\ndata: {out.model_dump_json()}\n\n"


async def _next_version(watch: _Watch, version: int) -> None:
    """Until the watcher publishes again (or a while, so a stream notices its end)."""

    def moved() -> bool:
        return watch.version != version

    async with watch.changed:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_SECONDS * 5):
                await watch.changed.wait_for(moved)


class ProgressHub:
    """The watchers of one process (one per app)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._watches: dict[uuid.UUID, _Watch] = {}

    async def _watch(self, run_id: uuid.UUID) -> _Watch:
        watch = self._watches.get(run_id)
        if watch is None:
            async with self._sessionmaker() as session:
                newest = await repository.newest_event_id(session, run_id)
            watch = self._watches.get(run_id)  # another stream may have made it meanwhile
            if watch is None:
                watch = self._watches[run_id] = _Watch(run_id, newest)
                watch.task = asyncio.create_task(
                    self._poll(watch), name=f"quarry-progress-{run_id}"
                )
        return watch

    async def _poll(self, watch: _Watch) -> None:
        try:
            while watch.streams > 0 or watch.progress is None:
                try:
                    await self._read(watch)
                except Exception as exc:  # a database blip: the streams wait for the next
                    log.warning("runs.progress_read_failed", error=repr(exc))
                await watch.publish()
                if watch.ended:
                    return
                await asyncio.sleep(POLL_SECONDS)
        finally:
            if self._watches.get(watch.run_id) is watch:
                del self._watches[watch.run_id]

    async def _read(self, watch: _Watch) -> None:
        async with self._sessionmaker() as session:
            run = await repository.run_by_id(session, watch.run_id)
            if run is None:
                watch.gone = True
                return
            while True:
                events = await repository.list_events(session, watch.run_id, watch.last_id, _PAGE)
                for event in events:
                    watch.keep(*_log_message(event))
                if len(events) < _PAGE:
                    break
            out = (await runs_out(session, self._settings, [run]))[0]
        watch.status = run.status
        watch.progress = out.model_dump_json()

    async def stream(self, run_id: uuid.UUID, after_id: int) -> AsyncIterator[str]:
        """Server-sent events for one client: `progress`, `log` lines after `after_id`, `end`."""
        watch = await self._watch(run_id)
        watch.streams += 1
        try:
            seen, last_progress = after_id, ""
            while True:
                version = watch.version  # before reading: a publish meanwhile is not missed
                # What this stream missed that the watcher no longer keeps (or never had):
                # read on its own account, a page at a time.
                while seen < watch.kept_after:
                    async with self._sessionmaker() as session:
                        events = await repository.list_events(session, run_id, seen, _PAGE)
                    events = [e for e in events if e.id <= watch.kept_after]
                    for event in events:
                        seen, message = _log_message(event)
                        yield message
                    if len(events) < _PAGE:
                        seen = max(seen, watch.kept_after)
                for event_id, message in list(watch.events):
                    if event_id > seen:
                        seen = event_id
                        yield message
                if watch.progress is not None and watch.progress != last_progress:
                    last_progress = watch.progress
                    yield f"event: progress\ndata: {watch.progress}\n\n"
                if watch.ended:
                    end = {"status": watch.status} if not watch.gone else {}
                    yield f"event: end\ndata: {json.dumps(end)}\n\n"
                    return
                await _next_version(watch, version)
        finally:
            watch.streams -= 1

    def watched(self) -> dict[uuid.UUID, int]:
        """The runs watched now, with how many streams each has (one reader per run)."""
        return {run_id: watch.streams for run_id, watch in self._watches.items()}

    async def close(self) -> None:
        for watch in list(self._watches.values()):
            if watch.task is not None:
                watch.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch.task
