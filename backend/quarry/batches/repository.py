"""Queries about provider batches (their transitions: batches/lifecycle.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import Extraction, ExtractionStatus, LlmBatch
from quarry.runs.lifecycle import ClaimedTask

#: How many of a run's batches may expire (or be cancelled at the provider) before its
#: remaining calls are made live: each expiry costs a completion window (24 h).
MAX_UNFINISHED_BATCHES = 2


async def batch_tasks(session: AsyncSession, run_id: uuid.UUID, owner: str) -> list[ClaimedTask]:
    """The run's tasks a batch still holds (running, leased to `owner`), in run order."""
    rows = await session.execute(
        select(
            Extraction.id,
            Extraction.run_id,
            Extraction.document_id,
            Extraction.variable_id,
            Extraction.prompt_version_id,
            Extraction.seq,
            Extraction.slot,
        )
        .where(
            Extraction.run_id == run_id,
            Extraction.status == ExtractionStatus.RUNNING,
            Extraction.lease_owner == owner,
        )
        .order_by(Extraction.seq)
    )
    return [ClaimedTask(*row) for row in rows.all()]


async def batches_to_poll(session: AsyncSession, now: datetime) -> Sequence[uuid.UUID]:
    """Batches not ingested that nobody polls (never started, or the poller's lease
    expired: its process died)."""
    result = await session.execute(
        select(LlmBatch.id).where(
            LlmBatch.ingested_at.is_(None),
            LlmBatch.poll_owner.is_(None) | (LlmBatch.poll_expires_at < now),
        )
    )
    return result.scalars().all()


async def open_batches(session: AsyncSession, run_id: uuid.UUID) -> Sequence[uuid.UUID]:
    result = await session.execute(
        select(LlmBatch.id).where(LlmBatch.run_id == run_id, LlmBatch.ingested_at.is_(None))
    )
    return result.scalars().all()


async def fallback_reason(session: AsyncSession, run_id: uuid.UUID) -> str | None:
    """Why the run's calls are now made live rather than batched (None: batch them): the
    provider refused one of its batches, or too many ended unanswered."""
    rows = (
        await session.execute(
            select(LlmBatch.status, func.count())
            .where(LlmBatch.run_id == run_id, LlmBatch.ingested_at.is_not(None))
            .group_by(LlmBatch.status)
        )
    ).all()
    counts = {str(status): int(n) for status, n in rows}
    if counts.get("failed"):
        return "the provider refused a batch of the run"
    if counts.get("expired", 0) + counts.get("cancelled", 0) >= MAX_UNFINISHED_BATCHES:
        return f"{MAX_UNFINISHED_BATCHES} of the run's batches ended before they were answered"
    return None


@dataclass(frozen=True)
class BatchSummary:
    """A run's provider batches as its progress shows them."""

    batches: int
    open: int
    #: The least advanced status of its open batches (or of all, when none is open).
    status: str
    requests: int
    completed: int
    failed: int
    tokens_in: int
    tokens_out: int


_ORDER = (
    "submitting",
    "validating",
    "in_progress",
    "finalizing",
    "cancelling",
    "completed",
    "expired",
    "cancelled",
    "failed",
)


async def summaries(
    session: AsyncSession, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, BatchSummary]:
    """The batches of each of `run_ids` that has any, summed (one query)."""
    if not run_ids:
        return {}
    rows = (
        await session.execute(
            select(
                LlmBatch.run_id,
                LlmBatch.status,
                LlmBatch.ingested_at.is_(None).label("open"),
                func.count(),
                func.sum(LlmBatch.requests),
                func.sum(LlmBatch.completed_count),
                func.sum(LlmBatch.failed_count),
                func.sum(LlmBatch.tokens_in),
                func.sum(LlmBatch.tokens_out),
            )
            .where(LlmBatch.run_id.in_(list(run_ids)))
            .group_by(LlmBatch.run_id, LlmBatch.status, LlmBatch.ingested_at.is_(None))
        )
    ).all()
    grouped: dict[uuid.UUID, list[tuple[str, bool, list[int]]]] = {}
    for run_id, status, is_open, *numbers in rows:
        grouped.setdefault(run_id, []).append(
            (str(status), bool(is_open), [int(n or 0) for n in numbers])
        )
    out: dict[uuid.UUID, BatchSummary] = {}
    for run_id, parts in grouped.items():
        open_parts = [p for p in parts if p[1]]
        statuses = [p[0] for p in (open_parts or parts)]
        status = min(statuses, key=lambda s: _ORDER.index(s) if s in _ORDER else len(_ORDER))
        totals = [sum(p[2][i] for p in parts) for i in range(6)]
        out[run_id] = BatchSummary(
            batches=totals[0],
            open=sum(p[2][0] for p in open_parts),
            status=status,
            requests=totals[1],
            completed=totals[2],
            failed=totals[3],
            tokens_in=totals[4],
            tokens_out=totals[5],
        )
    return out
