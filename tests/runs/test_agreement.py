"""The verdict on a two-profile run's pair: type-aware, symmetric, "not stated" an answer."""

from __future__ import annotations

from typing import Any

import pytest

from quarry.models import Agreement
from quarry.runs.agreement import agreement_of
from quarry.variables.types import TypeSpec, VariableType

OK, NONE, FAILED, CANCELLED = "succeeded", "not_found", "failed", "cancelled"


def spec(kind: str, *allowed: str) -> TypeSpec:
    return TypeSpec(type=VariableType(kind), allowed_values=allowed)


@pytest.mark.parametrize(
    ("kind", "first", "second", "verdict"),
    [
        ("text", "The ALPHA trial.", "the alpha trial", Agreement.AGREE),
        ("text", "Lyon", "Porto", Agreement.DISAGREE),
        ("number", 0.1 + 0.2, 0.3, Agreement.AGREE),  # within the relative tolerance
        ("number", 2.5, 2.6, Agreement.DISAGREE),
        ("integer", 64, 46, Agreement.DISAGREE),
        ("date", "2021-03-04", "2021-03-04", Agreement.AGREE),
        ("date", "2021", "2021-03-04", Agreement.DISAGREE),  # not the same precision
        ("boolean", True, True, Agreement.AGREE),
        ("boolean", True, False, Agreement.DISAGREE),
        ("list", ["b", "A"], ["a", "b", "b"], Agreement.AGREE),
        ("list", ["a"], ["a", "c"], Agreement.DISAGREE),
    ],
)
def test_values_are_compared_by_their_type(
    kind: str, first: Any, second: Any, verdict: Agreement
) -> None:
    assert agreement_of(spec(kind), (OK, first), (OK, second)) is verdict
    assert agreement_of(spec(kind), (OK, second), (OK, first)) is verdict


def test_categories_are_the_same_allowed_value() -> None:
    design = spec("category", "RCT", "Cohort")
    assert agreement_of(design, (OK, "RCT"), (OK, "RCT")) is Agreement.AGREE
    assert agreement_of(design, (OK, "RCT"), (OK, "Cohort")) is Agreement.DISAGREE


def test_not_stated_is_an_answer_and_a_missing_one_is_not() -> None:
    text = spec("text")
    assert agreement_of(text, (NONE, None), (NONE, None)) is Agreement.AGREE
    assert agreement_of(text, (NONE, None), (OK, "Lyon")) is Agreement.DISAGREE
    assert agreement_of(text, (OK, "Lyon"), (FAILED, None)) is Agreement.ONE_MISSING
    assert agreement_of(text, (CANCELLED, None), (NONE, None)) is Agreement.ONE_MISSING
    assert agreement_of(text, (FAILED, None), (CANCELLED, None)) is None
