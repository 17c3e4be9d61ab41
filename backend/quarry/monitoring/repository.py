"""Queries behind the readiness probe (health.py) and the work gauges of /metrics (metrics.py).

Both read the database because it is the source of truth in both modes; every query here is
cheap and indexed, since probes and scrapes come every few seconds whatever the load.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from quarry.models import ACTIVE_RUN_STATUSES, Extraction, Run


async def ping(connection: AsyncConnection) -> None:
    """One round trip that needs no table (raises when the database does not answer)."""
    await connection.execute(text("SELECT 1"))


async def count_runs_by_status(session: AsyncSession) -> dict[str, int]:
    """Runs per status (statuses without runs are absent)."""
    rows = await session.execute(select(Run.status, func.count()).group_by(Run.status))
    return {str(status): int(count) for status, count in rows}


async def count_active_tasks_by_status(session: AsyncSession) -> dict[str, int]:
    """Tasks ((document, variable) extractions) of queued and running runs, per status."""
    active = select(Run.id).where(Run.status.in_(ACTIVE_RUN_STATUSES))
    rows = await session.execute(
        select(Extraction.status, func.count())
        .where(Extraction.run_id.in_(active))
        .group_by(Extraction.status)
    )
    return {str(status): int(count) for status, count in rows}
