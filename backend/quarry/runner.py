"""The jobs, the sweeper every mode runs, and the embedded (in-process) queue.

Jobs take one id and find everything else in the database, so the transports only carry ids:
embedded mode (no QUARRY_REDIS_URL) runs them on asyncio tasks inside the API process, with a
bounded number of concurrent jobs per kind (this module); distributed mode carries them in
Redis through Arq to `quarry worker` processes (worker.py, the only module that imports arq).
Both deliver at least once; the database decides whether a delivered job has anything to do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from quarry.db import job_write_scope
from quarry.documents.repository import documents_to_parse
from quarry.documents.service import parse_document_job
from quarry.jobs import EXTRACT_PAIR, PARSE_DOCUMENT, JobContext, JobQueue
from quarry.models.base import utcnow
from quarry.runs.repository import active_run_ids, tasks_to_requeue
from quarry.runs.tasks import finish_run_if_done, run_extract_pair

log = structlog.get_logger(__name__)

JobFunction = Callable[[JobContext, str], Awaitable[None]]

#: Every job Quarry runs, by its dotted name.
JOBS: dict[str, JobFunction] = {
    EXTRACT_PAIR: run_extract_pair,
    PARSE_DOCUMENT: parse_document_job,
}


def check_job(job: str) -> None:
    if job not in JOBS:
        raise ValueError(f"unknown job {job}")


async def sweep(ctx: JobContext, queue: JobQueue) -> None:
    """Re-deliver what the database says is unfinished (never-enqueued tasks, expired leases,
    unparsed documents) and finish runs whose last task's worker died before it could."""
    async with ctx.sessionmaker() as session:
        task_ids = [str(i) for i in await tasks_to_requeue(session, utcnow())]
        doc_ids = [str(i) for i in await documents_to_parse(session)]
    if task_ids:
        # Each of these is pending or its lease expired: nobody holds it, so a queue that
        # remembers a delivery as "in progress" may forget it (see ArqQueue.redeliver).
        redeliver = getattr(queue, "redeliver", queue.enqueue)
        await redeliver(EXTRACT_PAIR, task_ids)
    if doc_ids:
        # No lease here: a live parse cannot be told from a dead one, so only enqueue.
        await queue.enqueue(PARSE_DOCUMENT, doc_ids)
    async with job_write_scope(ctx.sessionmaker) as session:
        for run_id in await active_run_ids(session):
            await finish_run_if_done(session, run_id)
    if task_ids or doc_ids:
        log.info("worker.swept", tasks=len(task_ids), documents=len(doc_ids))


class EmbeddedQueue:
    """In-process queues, one per job kind, each drained by a fixed pool of asyncio workers.

    A job already waiting is not queued twice; the database decides whether a delivered job
    still has anything to do, so duplicates would be harmless anyway, only wasteful.
    """

    def __init__(self, concurrency: dict[str, int]) -> None:
        self._concurrency = concurrency
        self._queues: dict[str, asyncio.Queue[str]] = {job: asyncio.Queue() for job in JOBS}
        self._waiting: dict[str, set[str]] = {job: set() for job in JOBS}
        self._workers: list[asyncio.Task[None]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._ctx: JobContext | None = None

    async def enqueue(self, job: str, ids: list[str]) -> None:
        check_job(job)
        waiting = self._waiting[job]
        for job_id in ids:
            if job_id not in waiting:
                waiting.add(job_id)
                self._queues[job].put_nowait(job_id)

    async def start(self, ctx: JobContext) -> None:
        self._ctx = ctx
        for job in JOBS:
            for n in range(self._concurrency.get(job, 1)):
                self._workers.append(
                    asyncio.create_task(self._drain(job), name=f"quarry-{job}-{n}")
                )
        self._sweeper = asyncio.create_task(self._sweep_forever(ctx), name="quarry-sweeper")

    async def stop(self) -> None:
        tasks = [*self._workers, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()

    async def join(self) -> None:
        """Wait until every queued job has been processed (used by tests and the CLI)."""
        for queue in self._queues.values():
            await queue.join()

    async def _drain(self, job: str) -> None:
        assert self._ctx is not None
        queue, function = self._queues[job], JOBS[job]
        while True:
            job_id = await queue.get()
            self._waiting[job].discard(job_id)
            try:
                await function(self._ctx, job_id)
            except Exception:
                # The row stays pending/running; the sweeper will deliver it again.
                log.exception("worker.job_failed", job=job, job_id=job_id)
            finally:
                queue.task_done()

    async def _sweep_forever(self, ctx: JobContext) -> None:
        while True:
            try:
                await sweep(ctx, self)
            except Exception:
                log.exception("worker.sweep_failed")
            await asyncio.sleep(ctx.settings.sweep_interval_seconds)
