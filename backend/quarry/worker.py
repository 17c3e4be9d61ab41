"""The job transport facade: the only module that knows how jobs travel.

Embedded mode (no QUARRY_REDIS_URL) runs jobs on asyncio tasks inside the API process with a
bounded number of concurrent jobs per kind. Distributed mode (Arq on Redis) arrives with the
distributed-execution issue and plugs in here; nothing else changes, because services only
see the `JobQueue` protocol and jobs only take ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from quarry.documents.repository import documents_to_parse
from quarry.documents.service import parse_document_job
from quarry.jobs import EXTRACT_PAIR, PARSE_DOCUMENT, JobContext
from quarry.models.base import utcnow
from quarry.runs.repository import tasks_to_requeue
from quarry.runs.tasks import run_extract_pair

log = structlog.get_logger(__name__)

JobFunction = Callable[[JobContext, str], Awaitable[None]]

#: Every job Quarry runs, by its dotted name.
JOBS: dict[str, JobFunction] = {
    EXTRACT_PAIR: run_extract_pair,
    PARSE_DOCUMENT: parse_document_job,
}

SWEEP_INTERVAL_SECONDS = 30.0
# Parsing is CPU-bound and runs in threads; a couple at a time keeps the API responsive.
PARSE_CONCURRENCY = 2


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
        if job not in JOBS:
            raise ValueError(f"unknown job {job}")
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
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="quarry-sweeper")

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

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await sweep(self._ctx, self)  # type: ignore[arg-type]
            except Exception:
                log.exception("worker.sweep_failed")
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)


async def sweep(ctx: JobContext, queue: EmbeddedQueue) -> None:
    """Re-deliver what the database says is unfinished: never-enqueued, lost or abandoned jobs."""
    async with ctx.sessionmaker() as session:
        task_ids = [str(i) for i in await tasks_to_requeue(session, utcnow())]
        doc_ids = [str(i) for i in await documents_to_parse(session)]
    if task_ids:
        await queue.enqueue(EXTRACT_PAIR, task_ids)
    if doc_ids:
        await queue.enqueue(PARSE_DOCUMENT, doc_ids)
    if task_ids or doc_ids:
        log.info("worker.swept", tasks=len(task_ids), documents=len(doc_ids))


def embedded_concurrency(llm_concurrency: int) -> dict[str, int]:
    return {EXTRACT_PAIR: llm_concurrency, PARSE_DOCUMENT: PARSE_CONCURRENCY}
