"""`runs.prepare`: create a large run's remaining task rows, a chunk per transaction.

A run's first chunk of task rows is created with the run itself, so its first tasks can
start at once; the rest are created here, chunk by chunk (runs/lifecycle.py:
`prepare_chunk`), under a lease on the run so that one process does it at a time and a
preparer that died is replaced (the sweeper re-sends the job). Each chunk wakes the run's
workers; cancelling or stopping the run ends the preparation at its next chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta

import structlog

from quarry.db import job_write_scope
from quarry.jobs import WORK_ON_RUN, JobContext
from quarry.runs import lifecycle

log = structlog.get_logger(__name__)

_PREPARER_KEY = "runs.preparer"


class Preparer:
    """This process's preparations under way, one per run."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}

    @classmethod
    def for_context(cls, ctx: JobContext) -> Preparer:
        preparer = ctx.extras.get(_PREPARER_KEY)
        if not isinstance(preparer, Preparer):
            preparer = ctx.extras[_PREPARER_KEY] = Preparer(ctx)
        return preparer

    def start(self, run_id: uuid.UUID) -> None:
        task = self._running.get(run_id)
        if task is None or task.done():
            self._running[run_id] = asyncio.create_task(
                self._prepare(run_id), name=f"quarry-prepare-{run_id}"
            )

    async def _prepare(self, run_id: uuid.UUID) -> None:
        ctx = self._ctx
        lease = timedelta(seconds=ctx.settings.task_lease_seconds)
        try:
            async with job_write_scope(ctx.sessionmaker) as session:
                if not await lifecycle.take_preparation(session, run_id, ctx.worker_id, lease):
                    return  # prepared, stopped, or another process is at it
            created = 0
            while True:
                async with job_write_scope(ctx.sessionmaker) as session:
                    chunk = await lifecycle.prepare_chunk(session, run_id, ctx.worker_id, lease)
                created += chunk.created
                if chunk.created:
                    await ctx.queue.enqueue(WORK_ON_RUN, [str(run_id)])
                if not chunk.more:
                    break
            log.info("runs.prepared", run_id=str(run_id), tasks=created)
        except Exception:
            # Its lease expires and the sweeper sends the job again.
            log.exception("runs.prepare_failed", run_id=str(run_id))
        finally:
            self._running.pop(run_id, None)

    async def stop(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def prepare_run_job(ctx: JobContext, run_id: str) -> None:
    """`runs.prepare`: start preparing the run in this process (returns at once)."""
    Preparer.for_context(ctx).start(uuid.UUID(run_id))
