"""Every state transition of a provider batch (`llm_batches`), in one place.

A batch answers some of a run's running tasks: their lease owner is the batch's
(``batch:<id>``, runs/lifecycle.py `hand_to_batch`) until its deadline. One process polls it
at a time, under a poll lease; its outcomes are stored with the run's own task transitions
(runs/lifecycle.py `store_outcomes`, `release_tasks`), by the batch as owner.

    ==============  ==================  =======================================  ==============
    from            to                  when                                     function
    ==============  ==================  =======================================  ==============
    —               submitting          its requests are built; its tasks'       open_batch
                                        leases move to it (one transaction)
    submitting      submitting          its input file is uploaded               record_upload
    submitting      validating | …      the provider created it                  record_state
    provider's      provider's          a poll (validating, in_progress,         record_state
                                        finalizing, cancelling, and the final
                                        completed | failed | expired |
                                        cancelled)
    any             ingested            its answers are stored, the tasks it     finish_batch
                                        left unanswered handed back (or the
                                        provider refused it: `error` says why)
    ==============  ==================  =======================================  ==============

    Polling: `take_poll` leases the row to one process (an expired lease may be taken over,
    so a restarted fleet resumes polling instead of resubmitting); `release_poll` gives it
    up at once when the process stops.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.llm.batch import BatchState
from quarry.models import LlmBatch
from quarry.models.base import utcnow

SUBMITTING = "submitting"


async def open_batch(
    session: AsyncSession,
    run_id: uuid.UUID,
    *,
    requests: int,
    poller: str,
    poll_lease: timedelta,
    deadline: datetime,
) -> LlmBatch:
    """A new batch of `run_id` being submitted, leased for polling to `poller` (the
    submitting process). The caller moves its tasks' leases to it in the same transaction."""
    now = utcnow()
    batch = LlmBatch(
        id=uuid.uuid4(),
        run_id=run_id,
        status=SUBMITTING,
        requests=requests,
        poll_owner=poller,
        poll_expires_at=now + poll_lease,
        deadline_at=deadline,
    )
    session.add(batch)
    await session.flush()
    return batch


async def set_task_count(session: AsyncSession, batch_id: uuid.UUID, tasks: int) -> None:
    await session.execute(update(LlmBatch).where(LlmBatch.id == batch_id).values(tasks=tasks))


async def record_upload(session: AsyncSession, batch_id: uuid.UUID, input_file_id: str) -> None:
    await session.execute(
        update(LlmBatch).where(LlmBatch.id == batch_id).values(input_file_id=input_file_id)
    )


async def record_state(
    session: AsyncSession,
    batch_id: uuid.UUID,
    state: BatchState,
    *,
    interval: float,
    next_poll_at: datetime,
) -> str | None:
    """Store what the provider says of the batch; returns its status before (None if the
    row is gone), so the caller can log a change."""
    before = (
        await session.execute(select(LlmBatch.status).where(LlmBatch.id == batch_id))
    ).scalar_one_or_none()
    if before is None:
        return None
    await session.execute(
        update(LlmBatch)
        .where(LlmBatch.id == batch_id)
        .values(
            status=state.status,
            provider_batch_id=state.id,
            input_file_id=state.input_file_id,
            output_file_id=state.output_file_id,
            error_file_id=state.error_file_id,
            completed_count=state.completed,
            failed_count=state.failed,
            error=state.errors,
            poll_interval=interval,
            next_poll_at=next_poll_at,
        )
    )
    return str(before)


async def take_poll(
    session: AsyncSession, batch_id: uuid.UUID, owner: str, lease: timedelta
) -> LlmBatch | None:
    """Lease the batch's polling to `owner` (renewing its own lease, or taking over an
    expired one); the row, or None when another process polls it or it is ingested."""
    now = utcnow()
    result = await session.execute(
        update(LlmBatch)
        .where(
            LlmBatch.id == batch_id,
            LlmBatch.ingested_at.is_(None),
            LlmBatch.poll_owner.is_(None)
            | (LlmBatch.poll_owner == owner)
            | (LlmBatch.poll_expires_at < now),
        )
        .values(poll_owner=owner, poll_expires_at=now + lease)
    )
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        return None
    return (
        await session.execute(
            select(LlmBatch)
            .where(LlmBatch.id == batch_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()


async def release_poll(session: AsyncSession, batch_id: uuid.UUID, owner: str) -> None:
    await session.execute(
        update(LlmBatch)
        .where(LlmBatch.id == batch_id, LlmBatch.poll_owner == owner)
        .values(poll_owner=None, poll_expires_at=None)
    )


async def add_ingested(
    session: AsyncSession, batch_id: uuid.UUID, tokens_in: int, tokens_out: int
) -> None:
    """Tokens of the batch's answers just stored (billed at the batch price)."""
    if not (tokens_in or tokens_out):
        return
    await session.execute(
        update(LlmBatch)
        .where(LlmBatch.id == batch_id)
        .values(
            tokens_in=LlmBatch.tokens_in + tokens_in, tokens_out=LlmBatch.tokens_out + tokens_out
        )
    )


async def finish_batch(
    session: AsyncSession,
    batch_id: uuid.UUID,
    *,
    status: str | None = None,
    error: str | None = None,
) -> None:
    """Nothing more to do for the batch (ingested, refused, or its submission abandoned)."""
    values: dict[str, object] = {
        "ingested_at": utcnow(),
        "poll_owner": None,
        "poll_expires_at": None,
        "next_poll_at": None,
    }
    if status is not None:
        values["status"] = status
    if error is not None:
        values["error"] = error
    await session.execute(update(LlmBatch).where(LlmBatch.id == batch_id).values(**values))
