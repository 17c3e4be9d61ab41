"""Whether the two profiles of a two-profile run gave the same answer for a pair (pure).

Answers are compared the way an evaluation compares a value with a gold value
(evaluation/compare.py), in both directions, so the verdict is symmetric: numbers equal
within the default tolerance (relative 1e-6), dates equal as dates (a date matches only the
same date at the same precision: "2021" and "2021-03-04" disagree), text equal once
normalised (case, Unicode form, spacing, punctuation at the ends), categories the same
allowed value, multi_category and list the same set, booleans the same. "Not stated" is an
answer: both saying it agree, one saying it against a value disagree. A pair only one profile
answered (the other's extraction failed or was cancelled) is `one_missing`; one neither
answered has no verdict.
"""

from __future__ import annotations

from typing import Any

from quarry.evaluation.compare import Prediction, PredictionState, Tolerance, compare_cell
from quarry.models import Agreement, ExtractionStatus
from quarry.variables.types import TypeSpec

_ANSWERED = frozenset({ExtractionStatus.SUCCEEDED.value, ExtractionStatus.NOT_FOUND.value})
_TOLERANCE = Tolerance()


def _prediction(status: str, value: Any) -> Prediction:
    if status == ExtractionStatus.SUCCEEDED and value is not None:
        return Prediction(PredictionState.VALUE, value)
    return Prediction(PredictionState.NOT_STATED)


def _as_gold(status: str, value: Any) -> Any:
    return value if status == ExtractionStatus.SUCCEEDED else None


def agreement_of(
    spec: TypeSpec, first: tuple[str, Any], second: tuple[str, Any]
) -> Agreement | None:
    """The verdict on two finished extractions of a pair, each as (status, value)."""
    first_answered, second_answered = first[0] in _ANSWERED, second[0] in _ANSWERED
    if not (first_answered or second_answered):
        return None
    if not (first_answered and second_answered):
        return Agreement.ONE_MISSING
    one_way = compare_cell(spec, _as_gold(*first), _prediction(*second), _TOLERANCE)
    other_way = compare_cell(spec, _as_gold(*second), _prediction(*first), _TOLERANCE)
    if one_way.correct and other_way.correct:
        return Agreement.AGREE
    return Agreement.DISAGREE
