"""The jobs, the sweeper every mode runs, and the embedded (in-process) queue.

Jobs take one id and find everything else in the database, so the transports only carry ids:
embedded mode (no QUARRY_REDIS_URL) runs them on asyncio tasks inside the API process (this
module); distributed mode carries them in Redis through Arq to `quarry worker` processes
(worker.py, the only module that imports arq). Every job is a wake-up that returns at once:
the work it starts — extraction tasks, preparing a run, parsing — is claimed from the
database and run by the process's own executors (runs/executor.py, runs/preparer.py,
documents/jobs.py), which hold leases on what they work on. So what Arq carries is a bounded
number of wake-ups per run, never one job per pair, and the transport can come and go (a
Redis restart) without interrupting work in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable

import structlog

from quarry.batches import repository as batches_repository
from quarry.batches.poller import BatchPoller
from quarry.db import job_write_scope
from quarry.documents import lifecycle as documents_lifecycle
from quarry.documents.jobs import WAKE_ID, ParseFeed, parse_documents_job
from quarry.jobs import (
    PARSE_DOCUMENT,
    POLL_BATCH,
    PREPARE_RUN,
    WORK_ON_RUN,
    JobContext,
    JobQueue,
)
from quarry.models.base import utcnow
from quarry.runs import lifecycle, repository
from quarry.runs.executor import TaskExecutor
from quarry.runs.preparer import Preparer, prepare_run_job
from quarry.webhooks.sender import DeliverySender

log = structlog.get_logger(__name__)

JobFunction = Callable[[JobContext, str], Awaitable[None]]


async def work_on_run_job(ctx: JobContext, run_id: str) -> None:
    """`runs.work`: run `run_id` has tasks to claim; this process takes some (returns at once)."""
    TaskExecutor.for_context(ctx).wake(uuid.UUID(run_id))


async def poll_batch_job(ctx: JobContext, batch_id: str) -> None:
    """`runs.poll_batch`: poll provider batch `batch_id` (now, if this process already does)."""
    BatchPoller.for_context(ctx).watch(uuid.UUID(batch_id))


#: Every job Quarry runs, by its dotted name.
JOBS: dict[str, JobFunction] = {
    WORK_ON_RUN: work_on_run_job,
    POLL_BATCH: poll_batch_job,
    PREPARE_RUN: prepare_run_job,
    PARSE_DOCUMENT: parse_documents_job,
}


def check_job(job: str) -> None:
    if job not in JOBS:
        raise ValueError(f"unknown job {job}")


async def sweep(ctx: JobContext, queue: JobQueue) -> None:
    """What the database says needs a worker, woken again: tasks whose lease expired (handed
    back in bounded, indexed batches — the cost follows what expired), runs with pending
    tasks, runs whose preparation stopped, provider batches nobody polls (their poller's
    process stopped or died), documents waiting to be parsed. Also finishes any
    active run with nothing left (a safety net: every transition finishes its run itself)."""
    now = utcnow()
    woken: set[uuid.UUID] = set()
    reclaimed = 0
    while True:
        async with job_write_scope(ctx.sessionmaker) as session:
            count, runs = await lifecycle.reclaim_expired(session, now)
        reclaimed += count
        woken |= runs
        if count < lifecycle.RECLAIM_BATCH:
            break
    async with ctx.sessionmaker() as session:
        woken |= set(await repository.runs_with_work(session))
        to_prepare = await lifecycle.runs_to_prepare(session, now)
        to_parse = await documents_lifecycle.any_to_parse(session, now)
        to_poll = await batches_repository.batches_to_poll(session, now)
    if to_poll:
        await queue.enqueue(POLL_BATCH, [str(b) for b in to_poll])
    if to_prepare:
        await queue.enqueue(PREPARE_RUN, [str(r) for r in to_prepare])
    if woken:
        await queue.enqueue(WORK_ON_RUN, [str(r) for r in sorted(woken)])
    if to_parse:
        await queue.enqueue(PARSE_DOCUMENT, [WAKE_ID])
    if reclaimed:
        log.info("worker.swept", expired_tasks=reclaimed, runs=len(woken))


async def stop_work(ctx: JobContext, grace: float) -> None:
    """Stop this process's work: preparations and webhook deliveries at once, extraction and
    parses after `grace` seconds for what is in flight; what is unfinished is handed back."""
    await Preparer.for_context(ctx).stop()
    await BatchPoller.for_context(ctx).stop()
    await DeliverySender.for_context(ctx).stop()
    await asyncio.gather(
        TaskExecutor.for_context(ctx).stop(grace), ParseFeed.for_context(ctx).stop(grace)
    )


class EmbeddedQueue:
    """Wake-ups delivered in this process: a job waiting already is not queued twice."""

    fleet = False

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._waiting: set[tuple[str, str]] = set()
        self._drainer: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._ctx: JobContext | None = None

    async def enqueue(self, job: str, ids: list[str]) -> None:
        check_job(job)
        for object_id in ids:
            key = (job, object_id)
            if key not in self._waiting:
                self._waiting.add(key)
                self._queue.put_nowait(key)

    async def start(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._drainer = asyncio.create_task(self._drain(ctx), name="quarry-jobs")
        self._sweeper = asyncio.create_task(self._sweep_forever(ctx), name="quarry-sweeper")
        DeliverySender.for_context(ctx).start()  # the webhooks' outbox

    async def stop(self) -> None:
        for task in (self._sweeper, self._drainer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._ctx is not None:
            await stop_work(self._ctx, grace=0)

    async def join(self) -> None:
        """Wait until every job delivered so far has run (jobs return at once)."""
        await self._queue.join()

    async def _drain(self, ctx: JobContext) -> None:
        while True:
            job, object_id = await self._queue.get()
            self._waiting.discard((job, object_id))
            try:
                await JOBS[job](ctx, object_id)
            except Exception:
                # The database still says what is to do; the sweeper delivers it again.
                log.exception("worker.job_failed", job=job, job_id=object_id)
            finally:
                self._queue.task_done()

    async def _sweep_forever(self, ctx: JobContext) -> None:
        while True:
            try:
                await sweep(ctx, self)
            except Exception:
                log.exception("worker.sweep_failed")
            await asyncio.sleep(ctx.settings.sweep_interval_seconds)
