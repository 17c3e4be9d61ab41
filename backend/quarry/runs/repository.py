"""Queries for runs, their task rows (extractions) and their processing log."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import (
    ACTIVE_RUN_STATUSES,
    Extraction,
    ExtractionStatus,
    Run,
    RunEvent,
    RunStatus,
)
from quarry.models.base import utcnow


async def get_run(session: AsyncSession, project_id: uuid.UUID, run_id: uuid.UUID) -> Run | None:
    result = await session.execute(
        select(Run).where(Run.id == run_id, Run.project_id == project_id)
    )
    return result.scalar_one_or_none()


async def list_runs(
    session: AsyncSession, project_id: uuid.UUID, limit: int, offset: int
) -> tuple[Sequence[Run], int]:
    total = await session.scalar(
        select(func.count()).select_from(Run).where(Run.project_id == project_id)
    )
    result = await session.execute(
        select(Run)
        .where(Run.project_id == project_id)
        .order_by(Run.created_at.desc(), Run.id)
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all(), total or 0


@dataclass
class RunTotals:
    """What a run's task rows add up to: counts per status and tokens spent."""

    counts: dict[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0


async def run_totals(
    session: AsyncSession, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, RunTotals]:
    """Task counts per status and token sums for each run, in one query.

    Tokens are summed from the task rows rather than kept on the run row: a counter on the
    run would be one hot row every task has to update, which serialises the workers.
    """
    totals = {run_id: RunTotals() for run_id in run_ids}
    if not run_ids:
        return totals
    result = await session.execute(
        select(
            Extraction.run_id,
            Extraction.status,
            func.count(),
            func.coalesce(func.sum(Extraction.tokens_in), 0),
            func.coalesce(func.sum(Extraction.tokens_out), 0),
        )
        .where(Extraction.run_id.in_(run_ids))
        .group_by(Extraction.run_id, Extraction.status)
    )
    for run_id, status, count, tokens_in, tokens_out in result.all():
        run = totals[run_id]
        run.counts[status] = count
        run.tokens_in += int(tokens_in)
        run.tokens_out += int(tokens_out)
    return totals


async def status_counts(
    session: AsyncSession, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """Task counts per status for each run, in one query."""
    return {run_id: t.counts for run_id, t in (await run_totals(session, run_ids)).items()}


# -- the task path ---------------------------------------------------------------------------
# Every task runs the statements below (claim, heartbeat, store, "anything left?"), thousands
# of times per run. Building a statement and its cache key afresh each time cost more
# processor time than executing it, so these are built once, with bound parameters.

_TASKS = cast(Table, Extraction.__table__)
_UNFINISHED = (ExtractionStatus.PENDING, ExtractionStatus.RUNNING)

_ANY_UNFINISHED = (
    select(_TASKS.c.id)
    .where(_TASKS.c.run_id == bindparam("run_id"), _TASKS.c.status.in_(_UNFINISHED))
    .limit(1)
)

_ANY_PENDING = (
    select(_TASKS.c.id)
    .where(_TASKS.c.run_id == bindparam("run_id"), _TASKS.c.status == ExtractionStatus.PENDING)
    .limit(1)
)

_CLAIM = (
    update(_TASKS)
    .where(
        _TASKS.c.id == bindparam("task_id"),
        _TASKS.c.run_id.in_(select(Run.id).where(Run.status.in_(ACTIVE_RUN_STATUSES))),
        (_TASKS.c.status == ExtractionStatus.PENDING)
        | (
            (_TASKS.c.status == ExtractionStatus.RUNNING)
            & (_TASKS.c.lease_expires_at < bindparam("now"))
        ),
    )
    .values(
        status=ExtractionStatus.RUNNING,
        lease_owner=bindparam("owner"),
        lease_expires_at=bindparam("expires"),
        started_at=bindparam("now"),
    )
    .returning(
        _TASKS.c.run_id, _TASKS.c.document_id, _TASKS.c.variable_id, _TASKS.c.prompt_version_id
    )
)

#: The condition for a task this worker still holds: it may write only then.
_HELD = (
    _TASKS.c.id == bindparam("task_id"),
    _TASKS.c.lease_owner == bindparam("owner"),
    _TASKS.c.status == ExtractionStatus.RUNNING,
)

_RENEW = update(_TASKS).where(*_HELD).values(lease_expires_at=bindparam("expires"))

#: Columns a stored outcome adds to rather than sets: a task's attempts and tokens count
#: every time it ran (a retried run included); the run's token totals are their sum.
ADDED_COLUMNS = ("attempts", "tokens_in", "tokens_out")
_STORES: dict[tuple[str, ...], Any] = {}


def _store_statement(columns: tuple[str, ...]) -> Any:
    """The store statement setting `columns` (built once per set of columns)."""
    statement = _STORES.get(columns)
    if statement is None:
        values: dict[str, Any] = {
            column: (
                _TASKS.c[column] + bindparam(f"v_{column}")
                if column in ADDED_COLUMNS
                else bindparam(f"v_{column}")
            )
            for column in columns
        }
        statement = _STORES[columns] = (
            update(_TASKS)
            .where(*_HELD)
            .values(
                **values,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=bindparam("finished"),
            )
        )
    return statement


async def has_unfinished_tasks(session: AsyncSession, run_id: uuid.UUID) -> bool:
    """Cheap (an index probe): is any task of the run still pending or running?"""
    return await session.scalar(_ANY_UNFINISHED, {"run_id": run_id}) is not None


async def has_pending_tasks(session: AsyncSession, run_id: uuid.UUID) -> bool:
    """Cheap (an index probe): is any task of the run still waiting to be claimed?"""
    return await session.scalar(_ANY_PENDING, {"run_id": run_id}) is not None


async def run_status(session: AsyncSession, run_id: uuid.UUID) -> str | None:
    status: str | None = await session.scalar(select(Run.status).where(Run.id == run_id))
    return status


def _rowcount(result: Any) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0


@dataclass(frozen=True)
class ClaimedTask:
    run_id: uuid.UUID
    document_id: uuid.UUID
    variable_id: uuid.UUID
    prompt_version_id: uuid.UUID


async def claim_extraction(
    session: AsyncSession, extraction_id: uuid.UUID, owner: str, lease: timedelta
) -> ClaimedTask | None:
    """Compare-and-set: take a pending task (or one whose lease expired) of an active run.

    Returns what the task is about, or None when there is nothing to take."""
    now = utcnow()
    result = await session.execute(
        _CLAIM, {"task_id": extraction_id, "owner": owner, "now": now, "expires": now + lease}
    )
    row = result.one_or_none()
    return None if row is None else ClaimedTask(*row)


async def renew_lease(
    session: AsyncSession, extraction_id: uuid.UUID, owner: str, lease: timedelta
) -> bool:
    """Heartbeat: extend the lease of a task this worker still holds; False if it lost it."""
    result = await session.execute(
        _RENEW, {"task_id": extraction_id, "owner": owner, "expires": utcnow() + lease}
    )
    return _rowcount(result) == 1


async def store_outcome(
    session: AsyncSession, extraction_id: uuid.UUID, owner: str, values: dict[str, Any]
) -> bool:
    """Write a task's result if this worker still holds its lease (idempotent per task).

    `values` are column values, except that those of `ADDED_COLUMNS` are added to the row's."""
    columns = tuple(sorted(values))
    params = {f"v_{column}": values[column] for column in columns}
    params.update(task_id=extraction_id, owner=owner, finished=utcnow())
    result = await session.execute(_store_statement(columns), params)
    return _rowcount(result) == 1


async def mark_run_started(session: AsyncSession, run_id: uuid.UUID) -> bool:
    result = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(status=RunStatus.RUNNING, started_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def finish_run_if_done(session: AsyncSession, run_id: uuid.UUID) -> str | None:
    """Set the final status once no task is pending or running; returns it if this call did."""
    counts = (await status_counts(session, [run_id]))[run_id]
    if counts.get(ExtractionStatus.PENDING, 0) or counts.get(ExtractionStatus.RUNNING, 0):
        return None
    failed = counts.get(ExtractionStatus.FAILED, 0)
    done = sum(counts.values())
    if failed and failed == done:
        final = RunStatus.FAILED
    elif failed or counts.get(ExtractionStatus.CANCELLED, 0):
        final = RunStatus.COMPLETED_WITH_ERRORS
    else:
        final = RunStatus.COMPLETED
    result = await session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(ACTIVE_RUN_STATUSES))
        .values(status=final, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return final if _rowcount(result) == 1 else None


async def cancel_pending(session: AsyncSession, run_id: uuid.UUID) -> int:
    result = await session.execute(
        update(Extraction)
        .where(Extraction.run_id == run_id, Extraction.status == ExtractionStatus.PENDING)
        .values(
            status=ExtractionStatus.CANCELLED, error="The run was cancelled.", finished_at=utcnow()
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


async def reset_for_retry(session: AsyncSession, run_id: uuid.UUID) -> list[uuid.UUID]:
    """Failed and cancelled tasks of the run go back to pending; returns their ids."""
    retry_statuses = (ExtractionStatus.FAILED, ExtractionStatus.CANCELLED)
    ids = list(
        (
            await session.execute(
                select(Extraction.id).where(
                    Extraction.run_id == run_id, Extraction.status.in_(retry_statuses)
                )
            )
        ).scalars()
    )
    if ids:
        await session.execute(
            update(Extraction)
            .where(Extraction.id.in_(ids), Extraction.status.in_(retry_statuses))
            .values(
                status=ExtractionStatus.PENDING,
                error=None,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=None,
            )
            .execution_options(synchronize_session=False)
        )
    return ids


async def tasks_to_requeue(session: AsyncSession, now: datetime) -> Sequence[uuid.UUID]:
    """Pending tasks of active runs, and running ones whose lease has expired."""
    result = await session.execute(
        select(Extraction.id)
        .join(Run, Run.id == Extraction.run_id)
        .where(
            Run.status.in_(ACTIVE_RUN_STATUSES),
            (Extraction.status == ExtractionStatus.PENDING)
            | (
                (Extraction.status == ExtractionStatus.RUNNING)
                & (Extraction.lease_expires_at < now)
            ),
        )
        .order_by(Extraction.created_at)
    )
    return result.scalars().all()


async def active_run_ids(session: AsyncSession) -> Sequence[uuid.UUID]:
    result = await session.execute(select(Run.id).where(Run.status.in_(ACTIVE_RUN_STATUSES)))
    return result.scalars().all()


def add_event(
    session: AsyncSession,
    run_id: uuid.UUID,
    event: str,
    message: str,
    *,
    level: str = "info",
    document_id: uuid.UUID | None = None,
    variable_id: uuid.UUID | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        RunEvent(
            run_id=run_id,
            event=event,
            message=message,
            level=level,
            document_id=document_id,
            variable_id=variable_id,
            data=data or {},
        )
    )


async def list_events(
    session: AsyncSession, run_id: uuid.UUID, after_id: int, limit: int
) -> Sequence[RunEvent]:
    result = await session.execute(
        select(RunEvent)
        .where(RunEvent.run_id == run_id, RunEvent.id > after_id)
        .order_by(RunEvent.id)
        .limit(limit)
    )
    return result.scalars().all()


async def count_events(session: AsyncSession, run_id: uuid.UUID) -> int:
    return (
        await session.scalar(
            select(func.count()).select_from(RunEvent).where(RunEvent.run_id == run_id)
        )
        or 0
    )
