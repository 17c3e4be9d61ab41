"""Queries behind the readiness probe (health.py) and the work gauges of /metrics (metrics.py).

Both read the database because it is the source of truth in both modes; every query here is
cheap and indexed, since probes and scrapes come every few seconds whatever the load.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from quarry.models import ACTIVE_RUN_STATUSES, ExtractionStatus, Run


async def ping(connection: AsyncConnection) -> None:
    """One round trip that needs no table (raises when the database does not answer)."""
    await connection.execute(text("SELECT 1"))


async def count_runs_by_status(session: AsyncSession) -> dict[str, int]:
    """Runs per status (statuses without runs are absent)."""
    rows = await session.execute(select(Run.status, func.count()).group_by(Run.status))
    return {str(status): int(count) for status, count in rows}


async def count_active_tasks_by_status(session: AsyncSession) -> dict[str, int]:
    """Tasks ((document, variable) extractions) of preparing, queued and running runs, per
    status: the runs' own counters summed (runs/lifecycle.py), not a scan of their tasks —
    a scrape costs the same whatever the size of the runs."""
    columns = {status: Run.__table__.c[column] for status, column in _COUNTERS.items()}
    row = (
        await session.execute(
            select(*(func.coalesce(func.sum(c), 0) for c in columns.values())).where(
                Run.status.in_(ACTIVE_RUN_STATUSES)
            )
        )
    ).one()
    return {status: int(count) for status, count in zip(columns, row, strict=True)}


_COUNTERS = {
    ExtractionStatus.PENDING.value: "pending_count",
    ExtractionStatus.RUNNING.value: "running_count",
    ExtractionStatus.SUCCEEDED.value: "succeeded_count",
    ExtractionStatus.NOT_FOUND.value: "not_found_count",
    ExtractionStatus.FAILED.value: "failed_count",
    ExtractionStatus.CANCELLED.value: "cancelled_count",
}
