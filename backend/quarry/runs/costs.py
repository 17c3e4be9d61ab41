"""What a run costs as it goes, and its budget (the estimate before it starts: estimate.py).

Tokens are what the provider reported for each call, summed from the task rows; a run's
price per token is frozen in its settings when it is created (so a later change of
QUARRY_LLM_PRICES, or a worker configured differently from the API, does not reprice it).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.db import job_write_scope
from quarry.llm.pricing import ModelPrice, cost_usd, find_price, format_usd, price_table
from quarry.models import ACTIVE_RUN_STATUSES, Extraction, ExtractionStatus, Run
from quarry.models.base import utcnow
from quarry.runs import repository
from quarry.settings import Settings

log = structlog.get_logger(__name__)

#: The run settings keys this module reads and writes.
BUDGET_KEY = "budget_usd"
PRICE_KEY = "price_usd_per_million"
CANCELLED_REASON = "The run was cancelled."


def budget_of(run_settings: Mapping[str, Any]) -> float | None:
    budget = run_settings.get(BUDGET_KEY)
    return float(budget) if isinstance(budget, int | float) else None


def run_price(settings: Settings, model: str, run_settings: Mapping[str, Any]) -> ModelPrice | None:
    """The run's price: frozen at creation, else (a run from before prices were known) the
    current table's."""
    frozen = ModelPrice.from_json(run_settings.get(PRICE_KEY))
    return frozen or find_price(price_table(settings.llm_prices), model)


def budget_reason(budget: float) -> str:
    return f"The run's budget of {format_usd(budget)} was reached."


# -- as it goes -------------------------------------------------------------------------------


async def run_tokens(session: AsyncSession, run_id: uuid.UUID) -> tuple[int, int]:
    """Input and output tokens the run's calls have used so far (one aggregate)."""
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(Extraction.tokens_in), 0),
                func.coalesce(func.sum(Extraction.tokens_out), 0),
            ).where(Extraction.run_id == run_id)
        )
    ).one()
    return int(row[0]), int(row[1])


async def stop_reason(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, run_id: uuid.UUID
) -> str | None:
    """Why the run may start no new call — it was cancelled or has ended, or its budget is
    spent — or None when it may go on.

    One read of the run row, plus one aggregate of its tokens when it has a budget. The
    first process to find the budget spent cancels the pending tasks and logs it (once).
    """
    async with sessionmaker() as session:
        row = (
            await session.execute(
                select(Run.status, Run.model, Run.settings, Run.error).where(Run.id == run_id)
            )
        ).one_or_none()
        if row is None or row.status not in ACTIVE_RUN_STATUSES:
            return CANCELLED_REASON
        budget = budget_of(row.settings)
        price = run_price(settings, row.model, row.settings) if budget is not None else None
        if budget is None or price is None:  # no budget (a budget always has a price)
            return None
        tokens_in, tokens_out = await run_tokens(session, run_id)
    spent = cost_usd(price, tokens_in, tokens_out) or 0.0
    if spent < budget:
        return None
    reason = budget_reason(budget)
    if row.error != reason:
        async with job_write_scope(sessionmaker) as session:
            await _stop_for_budget(session, run_id, reason, budget, spent)
    return reason


def _rowcount(result: Any) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0


async def _stop_for_budget(
    session: AsyncSession, run_id: uuid.UUID, reason: str, budget: float, spent: float
) -> None:
    """Record on the run that its budget is spent, cancel its pending tasks and log it — if
    no other process has done so already (compare-and-set on the run's error)."""
    marked = await session.execute(
        update(Run)
        .where(
            Run.id == run_id,
            Run.status.in_(ACTIVE_RUN_STATUSES),
            Run.error.is_(None) | (Run.error != reason),
        )
        .values(error=reason)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(marked) != 1:
        return
    cancelled = await session.execute(
        update(Extraction)
        .where(Extraction.run_id == run_id, Extraction.status == ExtractionStatus.PENDING)
        .values(status=ExtractionStatus.CANCELLED, error=reason, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    repository.add_event(
        session,
        run_id,
        "run.budget_reached",
        f"{reason} The run has cost {format_usd(spent)}; no new call starts, and "
        f"{_rowcount(cancelled)} extractions will not run (calls in flight finish).",
        level="warning",
        data={"budget_usd": budget, "cost_usd": spent},
    )
    log.info("runs.budget_reached", run_id=str(run_id), budget_usd=budget, cost_usd=spent)
