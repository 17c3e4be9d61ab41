"""What a run freezes (runs/snapshot.py): every field decided as answer-changing or not, old
rows read with defaults, and the result cache's key following exactly the answer fields."""

from __future__ import annotations

from typing import Any

import pytest

from quarry.runs.snapshot import FrozenPrice, RunSnapshot, cache_key

BASE = RunSnapshot(model="m")


def key(snapshot: RunSnapshot) -> str:
    return cache_key(snapshot, system_prompt="s", document_sha256="d", variable_prompt="v")


def test_every_field_is_declared_answer_changing_or_not() -> None:
    RunSnapshot.check_fields_are_classified()

    class WithANewField(RunSnapshot):
        retries_per_call: int = 3

    with pytest.raises(TypeError, match="unclassified: \\['retries_per_call'\\]"):
        WithANewField.check_fields_are_classified()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("engine_version", "9"),
        ("model", "other"),
        ("temperature", 0.7),
        ("max_document_chars", 5000),
        ("grounding_fuzzy_threshold", 0.95),
        ("group_size", 5),
    ],
)
def test_an_answer_field_changes_the_cache_key(field: str, value: Any) -> None:
    assert field in RunSnapshot.ANSWER_FIELDS
    assert key(BASE.model_copy(update={field: value})) != key(BASE)


@pytest.mark.parametrize(
    ("field", "value"),
    [("repair_attempts", 5), ("force_fresh", True), ("price", FrozenPrice(input=1, output=2))],
)
def test_a_run_field_does_not_change_the_cache_key(field: str, value: Any) -> None:
    assert field in RunSnapshot.RUN_FIELDS
    assert key(BASE.model_copy(update={field: value})) == key(BASE)


def test_a_row_from_before_the_snapshot_reads_with_defaults() -> None:
    old = {
        "temperature": 0.2,
        "repair_attempts": 1,
        "budget_usd": 3.0,  # a column of the run now: ignored here
        "price_usd_per_million": {"input": 0.15, "output": 0.6},
    }
    snapshot = RunSnapshot.from_row(old, "gpt-4o-mini")
    assert snapshot.model == "gpt-4o-mini" and snapshot.engine_version == "1"
    assert (snapshot.temperature, snapshot.repair_attempts, snapshot.group_size) == (0.2, 1, 1)
    assert snapshot.model_price is not None and snapshot.model_price.output == 0.6
    assert RunSnapshot.from_row(snapshot.to_row(), "ignored") == snapshot
