"""The price table: built-in list prices, QUARRY_LLM_PRICES on top, dated snapshots priced as
their base model, unknown models left unpriced."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from quarry.llm.pricing import ModelPrice, cost_usd, find_price, format_usd, price_table
from quarry.settings import Settings


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o-mini", ModelPrice(0.15, 0.60)),
        ("gpt-4o", ModelPrice(2.50, 10.00)),
        ("gpt-4.1", ModelPrice(2.00, 8.00)),
        ("gpt-4.1-mini", ModelPrice(0.40, 1.60)),
        ("gpt-4.1-nano", ModelPrice(0.10, 0.40)),
        ("o4-mini", ModelPrice(1.10, 4.40)),
        # Dated snapshots take their base model's price, the longest matching name winning.
        ("gpt-4o-mini-2024-07-18", ModelPrice(0.15, 0.60)),
        ("gpt-4o-2024-08-06", ModelPrice(2.50, 10.00)),
        ("gpt-4.1-nano-2025-04-14", ModelPrice(0.10, 0.40)),
        ("o4-mini-2025-04-16", ModelPrice(1.10, 4.40)),
        ("GPT-4o-Mini", ModelPrice(0.15, 0.60)),
        # Unknown, or a variant priced differently from its base: no price rather than a guess.
        ("gpt-4o-audio-preview", None),
        ("gpt-4o-mini-tts", None),
        ("llama3.1:8b", None),
        ("Qwen/Qwen2.5-7B-Instruct", None),
        ("gpt-4", None),
    ],
)
def test_built_in_prices(model: str, expected: ModelPrice | None) -> None:
    assert find_price(price_table(), model) == expected


def test_overrides_add_models_and_replace_built_in_prices() -> None:
    table = price_table(
        {"llama3.1:8b": {"input": 0.0, "output": 0.0}, "GPT-4o": {"input": 2.0, "output": 9.0}}
    )
    assert find_price(table, "llama3.1:8b") == ModelPrice(0.0, 0.0)
    assert find_price(table, "gpt-4o") == ModelPrice(2.0, 9.0)
    assert find_price(table, "gpt-4o-2024-11-20") == ModelPrice(2.0, 9.0)
    assert find_price(table, "gpt-4o-mini") == ModelPrice(0.15, 0.60)  # others untouched
    # An exact entry for a snapshot beats its base model's.
    dated = price_table({"gpt-4o-2024-05-13": {"input": 5.0, "output": 15.0}})
    assert find_price(dated, "gpt-4o-2024-05-13") == ModelPrice(5.0, 15.0)


def test_cost_is_tokens_times_the_price_per_million() -> None:
    price = ModelPrice(input=0.15, output=0.60)
    assert cost_usd(price, 1_000_000, 0) == pytest.approx(0.15)
    assert cost_usd(price, 12_345, 678) == pytest.approx((12_345 * 0.15 + 678 * 0.60) / 1e6)
    assert cost_usd(price, 0, 0) == 0.0
    assert cost_usd(None, 12_345, 678) is None


def test_prices_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARRY_LLM_PRICES", '{"my-model": {"input": 0.5, "output": 1.5}}')
    settings = Settings(_env_file=None)
    assert find_price(price_table(settings.llm_prices), "my-model") == ModelPrice(0.5, 1.5)
    assert find_price(price_table(settings.llm_prices), "gpt-4o-mini") == ModelPrice(0.15, 0.60)


@pytest.mark.parametrize(
    "value",
    [
        '{"my-model": {"input": 0.5}}',
        '{"my-model": {"input": 0.5, "output": 1.5, "cached": 0.1}}',
        '{"my-model": {"input": -1, "output": 1.5}}',
        '{"my-model": 0.5}',
        "not json",
    ],
)
def test_a_malformed_price_table_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("QUARRY_LLM_PRICES", value)
    with pytest.raises((ValidationError, ValueError)):
        Settings(_env_file=None)


def test_frozen_prices_round_trip_and_junk_is_no_price() -> None:
    price = ModelPrice(0.4, 1.6)
    assert ModelPrice.from_json(price.to_json()) == price
    assert ModelPrice.from_json(None) is None
    assert ModelPrice.from_json({"input": 1}) is None
    assert ModelPrice.from_json({"input": "x", "output": 1}) is None


@pytest.mark.parametrize(
    ("amount", "text"),
    [(0.5, "$0.50"), (12, "$12.00"), (1234.5, "$1,234.50"), (0.0042, "$0.0042"), (1.005, "$1.005")],
)
def test_amounts_read_as_dollars(amount: float, text: str) -> None:
    assert format_usd(amount) == text
