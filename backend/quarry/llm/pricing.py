"""What LLM calls cost: a price table per model, in USD per million tokens.

Pure functions. The built-in table holds the list prices of common OpenAI models; the setting
`QUARRY_LLM_PRICES` adds models (a local server, an Azure deployment name) and overrides
entries. A model the table does not know has no price: costs are then `None` ("unknown
price"), never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPrice:
    """USD per million input (prompt) and output (completion) tokens."""

    input: float
    output: float

    def to_json(self) -> dict[str, float]:
        return {"input": self.input, "output": self.output}

    @classmethod
    def from_json(cls, data: object) -> ModelPrice | None:
        """Read `{"input": x, "output": y}` (a run's settings snapshot); None if it is not one."""
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(input=float(data["input"]), output=float(data["output"]))
        except (KeyError, TypeError, ValueError):
            return None


# List prices (standard tier, USD per million tokens) at the time of writing. Providers change
# them; set QUARRY_LLM_PRICES to override any entry or to price other models.
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(input=0.15, output=0.60),
    "gpt-4o": ModelPrice(input=2.50, output=10.00),
    "gpt-4.1": ModelPrice(input=2.00, output=8.00),
    "gpt-4.1-mini": ModelPrice(input=0.40, output=1.60),
    "gpt-4.1-nano": ModelPrice(input=0.10, output=0.40),
    "o4-mini": ModelPrice(input=1.10, output=4.40),
}

# A dated snapshot of a model: `gpt-4o-mini-2024-07-18`, `gpt-4-0613`.
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


def price_table(
    overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, ModelPrice]:
    """The built-in prices with `overrides` (`{"model": {"input": …, "output": …}}`) on top.

    Names are compared without regard to case."""
    table = {name.lower(): price for name, price in DEFAULT_PRICES.items()}
    for name, price in (overrides or {}).items():
        table[name.lower()] = ModelPrice(input=float(price["input"]), output=float(price["output"]))
    return table


def find_price(table: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    """The price of `model`: its own entry, else — for a dated snapshot — its base model's.

    Among the entries the name starts with, the longest wins (`gpt-4o-mini-2024-07-18` is
    priced as `gpt-4o-mini`, not `gpt-4o`). Only a date may follow the base name: variants
    such as `gpt-4o-audio-preview` are priced differently from `gpt-4o` and need an entry of
    their own, so they stay unknown rather than get a wrong price.
    """
    name = model.strip().lower()
    if name in table:
        return table[name]
    candidates = [
        key
        for key in table
        if name.startswith(key) and _DATE_SUFFIX.fullmatch(name[len(key) :]) is not None
    ]
    return table[max(candidates, key=len)] if candidates else None


def cost_usd(price: ModelPrice | None, tokens_in: int, tokens_out: int) -> float | None:
    """What the tokens cost at `price`, in USD (None when the price is unknown)."""
    if price is None:
        return None
    return round((tokens_in * price.input + tokens_out * price.output) / 1_000_000, 8)


def format_usd(amount: float) -> str:
    """`$0.50`, `$12.00`, `$0.0042`: cents for round amounts, more digits for small ones."""
    if round(amount, 2) == amount:
        return f"${amount:,.2f}"
    return "$" + f"{amount:,.8f}".rstrip("0")
