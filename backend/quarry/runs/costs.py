"""What a run costs, and its budget (the estimate before it starts: estimate.py).

Tokens are what the provider reported for each call, summed on the run row as outcomes are
stored; a run's price per token is frozen in its snapshot when it is created (so a later
change of QUARRY_LLM_PRICES, or a worker configured differently from the API, does not
reprice it). A budget is held call by call: each call reserves its estimated cost before it
is sent (runs/lifecycle.py: `reserve_budget`), so a run overspends by at most what its calls
in flight cost beyond their estimates.

A batch run's answers that came in a provider batch are billed at the batch price (the
price less the profile's `batch_discount`); their tokens are summed per batch
(`llm_batches`), so `run_cost` takes the discount off exactly those. A budget cannot be held
over a batch (runs/service.py refuses the pair). A two-profile run's budget holds over both
profiles' calls, each counted at its own profile's price (the run row counts the second
profile's tokens apart).
"""

from __future__ import annotations

from quarry.llm.pricing import ModelPrice, cost_usd, find_price, format_usd, price_table
from quarry.runs.repository import RunTokens
from quarry.runs.snapshot import RunSnapshot
from quarry.settings import Settings


def run_price(settings: Settings, snapshot: RunSnapshot) -> ModelPrice | None:
    """The run's price: frozen at creation, else (a run from before prices were frozen) the
    current table's."""
    return snapshot.model_price or find_price(price_table(settings.llm_prices), snapshot.model)


def run_cost(
    price: ModelPrice | None,
    tokens_in: int,
    tokens_out: int,
    *,
    batch_tokens_in: int = 0,
    batch_tokens_out: int = 0,
    batch_discount: float = 0.0,
) -> float | None:
    """What a run's tokens cost: all at `price`, less `batch_discount` of what its batch
    answers' tokens (part of the totals) cost — batch calls are billed at the batch price,
    the live calls of a batch run (re-asks, fallbacks) at the full price."""
    full = cost_usd(price, tokens_in, tokens_out)
    if full is None or not batch_discount:
        return full
    batched = cost_usd(price, batch_tokens_in, batch_tokens_out) or 0.0
    return round(max(full - batch_discount * batched, 0.0), 8)


def spent_usd(snapshot: RunSnapshot, tokens: RunTokens) -> float | None:
    """What a live run's tokens have cost: a two-profile run's second-profile tokens at
    that profile's price, the rest at the run's (None when a price is unknown)."""
    first = cost_usd(
        snapshot.model_price,
        tokens.tokens_in - tokens.second_in,
        tokens.tokens_out - tokens.second_out,
    )
    if snapshot.second_profile is None or first is None:
        return first
    second = cost_usd(snapshot.second_profile.model_price, tokens.second_in, tokens.second_out)
    return None if second is None else round(first + second, 8)


def budget_reason(budget: float) -> str:
    return f"The run's budget of {format_usd(budget)} was reached."
