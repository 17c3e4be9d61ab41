"""What a run costs, and its budget (the estimate before it starts: estimate.py).

Tokens are what the provider reported for each call, summed on the run row as outcomes are
stored; a run's price per token is frozen in its snapshot when it is created (so a later
change of QUARRY_LLM_PRICES, or a worker configured differently from the API, does not
reprice it). A budget is held call by call: each call reserves its estimated cost before it
is sent (runs/lifecycle.py: `reserve_budget`), so a run overspends by at most what its calls
in flight cost beyond their estimates.
"""

from __future__ import annotations

from quarry.llm.pricing import ModelPrice, find_price, format_usd, price_table
from quarry.runs.snapshot import RunSnapshot
from quarry.settings import Settings


def run_price(settings: Settings, snapshot: RunSnapshot) -> ModelPrice | None:
    """The run's price: frozen at creation, else (a run from before prices were frozen) the
    current table's."""
    return snapshot.model_price or find_price(price_table(settings.llm_prices), snapshot.model)


def budget_reason(budget: float) -> str:
    return f"The run's budget of {format_usd(budget)} was reached."
