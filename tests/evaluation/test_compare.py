"""Type-aware comparison of one predicted value with one gold value."""

from __future__ import annotations

import pytest

from quarry.evaluation.compare import (
    Outcome,
    Prediction,
    PredictionState,
    Tolerance,
    compare_cell,
    parse_gold,
    text_key,
)
from quarry.evaluation.metrics import Tally
from quarry.variables.types import InvalidValue, JsonValue, TypeSpec, VariableType

TEXT = TypeSpec(VariableType.TEXT)
INTEGER = TypeSpec(VariableType.INTEGER)
NUMBER = TypeSpec(VariableType.NUMBER, unit="mg")
BOOLEAN = TypeSpec(VariableType.BOOLEAN)
DATE = TypeSpec(VariableType.DATE)
CATEGORY = TypeSpec(VariableType.CATEGORY, ("RCT", "Cohort", "Unknown"))
MULTI = TypeSpec(VariableType.MULTI_CATEGORY, ("Mortality", "Morbidity", "Quality of life"))
LIST = TypeSpec(VariableType.LIST)
DEFAULT = Tolerance()


def value(v: JsonValue, grounded: bool | None = True) -> Prediction:
    return Prediction(PredictionState.VALUE, v, grounded)


NOT_STATED = Prediction(PredictionState.NOT_STATED)


def judge(
    spec: TypeSpec, gold_raw: object, predicted: Prediction, tolerance: Tolerance = DEFAULT
) -> Outcome:
    return compare_cell(spec, parse_gold(spec, gold_raw), predicted, tolerance).outcome


@pytest.mark.parametrize(
    ("spec", "gold", "predicted", "outcome"),
    [
        (TEXT, "The ALPHA trial.", "the  alpha trial", Outcome.CORRECT),
        (TEXT, "ＡＬＰＨＡ", "alpha", Outcome.CORRECT),  # Unicode compatibility forms
        (TEXT, "ALPHA", "BETA", Outcome.WRONG),
        (INTEGER, "1,234", 1234, Outcome.CORRECT),
        (INTEGER, "87 participants", 78, Outcome.WRONG),
        (NUMBER, "3,5 mg", 3.5, Outcome.CORRECT),  # decimal comma, unit in the text
        (NUMBER, "61.5 years", 61.5, Outcome.CORRECT),
        (NUMBER, "47.0", 47, Outcome.CORRECT),
        (NUMBER, "0.1", 0.1 + 0.2 - 0.2, Outcome.CORRECT),  # float noise within 1e-6
        (NUMBER, "10", 10.5, Outcome.WRONG),
        (BOOLEAN, "Yes", True, Outcome.CORRECT),
        (BOOLEAN, "0", False, Outcome.CORRECT),
        (BOOLEAN, "n", True, Outcome.WRONG),
        (DATE, "2021", "2021-03-05", Outcome.CORRECT),  # compared at the gold's precision
        (DATE, "March 2021", "2021-03-30", Outcome.CORRECT),
        (DATE, "12 May 2019", "2019-05-12", Outcome.CORRECT),
        (DATE, "2019-05-12", "2019-05", Outcome.WRONG),  # less precise than the gold
        (DATE, "2020", "2021-01-01", Outcome.WRONG),
        (CATEGORY, "rct", "RCT", Outcome.CORRECT),
        (CATEGORY, "Cohort", "RCT", Outcome.WRONG),
        (CATEGORY, "Unknown", "Unknown", Outcome.CORRECT),  # an allowed value, not "not stated"
        (MULTI, "mortality; quality of life", ["Quality of life", "Mortality"], Outcome.CORRECT),
        (MULTI, "Mortality", ["Mortality", "Morbidity"], Outcome.WRONG),
        (LIST, "Aspirin; atorvastatin.", ["atorvastatin", "aspirin", "aspirin"], Outcome.CORRECT),
        (LIST, "aspirin", ["aspirin", "placebo"], Outcome.WRONG),
    ],
)
def test_values_are_compared_per_type(
    spec: TypeSpec, gold: str, predicted: JsonValue, outcome: Outcome
) -> None:
    assert judge(spec, gold, value(predicted)) is outcome


@pytest.mark.parametrize("spec", [TEXT, INTEGER, NUMBER, BOOLEAN, DATE, CATEGORY, MULTI, LIST])
def test_not_stated_is_a_value_of_its_own(spec: TypeSpec) -> None:
    some = {
        VariableType.TEXT: "x",
        VariableType.INTEGER: 1,
        VariableType.NUMBER: 1.5,
        VariableType.BOOLEAN: True,
        VariableType.DATE: "2020",
        VariableType.CATEGORY: "RCT",
        VariableType.MULTI_CATEGORY: ["Mortality"],
        VariableType.LIST: ["x"],
    }[spec.type]
    gold_some = {VariableType.MULTI_CATEGORY: "Mortality", VariableType.LIST: "x"}.get(
        spec.type, some
    )
    assert judge(spec, "", NOT_STATED) is Outcome.CORRECT_NOT_STATED
    assert judge(spec, "Not reported.", NOT_STATED) is Outcome.CORRECT_NOT_STATED
    assert judge(spec, "", value(some)) is Outcome.SPURIOUS
    assert judge(spec, gold_some, NOT_STATED) is Outcome.MISSED


def test_a_blank_multi_category_also_accepts_none_apply() -> None:
    assert judge(MULTI, "", value([])) is Outcome.CORRECT_NOT_STATED
    assert judge(MULTI, "Mortality", value([])) is Outcome.MISSED


def test_no_answer_is_wrong_and_never_extracted_is_skipped() -> None:
    failed = Prediction(PredictionState.NO_ANSWER, detail="the extraction failed (timeout)")
    comparison = compare_cell(INTEGER, 12, failed, DEFAULT)
    assert comparison.outcome is Outcome.NO_ANSWER and comparison.correct is False
    assert "timeout" in comparison.reason
    skipped = compare_cell(INTEGER, 12, Prediction(PredictionState.NOT_EXTRACTED), DEFAULT)
    assert skipped.outcome is Outcome.NOT_EXTRACTED and skipped.correct is None


def test_numbers_use_the_larger_of_the_absolute_and_relative_tolerance() -> None:
    assert judge(NUMBER, "100", value(100.4)) is Outcome.WRONG
    assert judge(NUMBER, "100", value(100.4), Tolerance(absolute=0.5)) is Outcome.CORRECT
    assert judge(NUMBER, "100", value(100.4), Tolerance(relative=0.01)) is Outcome.CORRECT
    assert judge(NUMBER, "100", value(102), Tolerance(absolute=0.5, relative=0.01)) is (
        Outcome.WRONG
    )
    reason = compare_cell(INTEGER, 87, value(78), DEFAULT).reason
    assert reason == "78 differs from 87 by 9."


def test_a_predicted_value_that_does_not_fit_the_type_is_wrong_not_an_error() -> None:
    comparison = compare_cell(INTEGER, 5, value("several"), DEFAULT)
    assert comparison.outcome is Outcome.WRONG and "does not fit" in comparison.reason


@pytest.mark.parametrize(
    ("spec", "raw"),
    [
        (INTEGER, "3.5"),
        (INTEGER, "about 12 or 13"),
        (BOOLEAN, "maybe"),
        (DATE, "03/04/2020"),  # day and month could be swapped
        (CATEGORY, "Case series"),
        (MULTI, "Mortality; Survival"),
    ],
)
def test_gold_values_that_do_not_fit_are_refused_like_model_answers(
    spec: TypeSpec, raw: str
) -> None:
    with pytest.raises(InvalidValue):
        parse_gold(spec, raw)


def test_set_items_feed_micro_precision_recall_and_f1() -> None:
    tally = Tally()
    pairs = [
        ("Mortality; Quality of life", ["Mortality", "Quality of life"]),  # 2 of 2
        ("Mortality", ["Mortality", "Morbidity"]),  # 1 matched, 1 extra
        ("", ["Morbidity"]),  # spurious: 1 extra
        ("Morbidity", None),  # missed: 1 gold item not predicted
    ]
    for gold, predicted in pairs:
        prediction = NOT_STATED if predicted is None else value(predicted)
        comparison = compare_cell(MULTI, parse_gold(MULTI, gold), prediction, DEFAULT)
        tally.add(comparison, prediction, gold_stated=bool(gold))
    assert (tally.matched_items, tally.predicted_items, tally.gold_items) == (3, 5, 4)
    assert tally.precision == 0.6 and tally.recall == 0.75 and tally.f1 == round(6 / 9, 4)
    assert tally.compared == 4 and tally.correct == 1 and tally.accuracy == 0.25
    assert (tally.wrong, tally.spurious, tally.missed) == (1, 1, 1)


def test_grounding_figures_count_only_extracted_values() -> None:
    tally = Tally()
    rows = [
        (value(5, grounded=True), 5),  # grounded, correct
        (value(6, grounded=True), 5),  # grounded, wrong
        (value(5, grounded=False), 5),  # ungrounded, correct
        (value(7, grounded=None), 5),  # a reviewer's value: no grounding verdict
        (NOT_STATED, 5),
    ]
    for prediction, gold in rows:
        tally.add(compare_cell(INTEGER, gold, prediction, DEFAULT), prediction, gold_stated=True)
    assert (tally.grounded_values, tally.grounded_correct) == (2, 1)
    assert (tally.ungrounded_values, tally.ungrounded_correct) == (1, 1)
    assert tally.grounded_share == round(2 / 3, 4)
    assert tally.grounding_precision == 0.5 and tally.ungrounded_accuracy == 1.0


def test_text_key_ignores_case_spacing_and_end_punctuation_only() -> None:
    assert text_key("  «The  ALPHA trial.» ") == "the alpha trial"
    assert text_key("co-operate") != text_key("cooperate")
