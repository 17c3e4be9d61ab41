"""Type-aware comparison of one predicted value with one gold value (pure functions).

Gold values are read with the same per-type normalisers as extracted values
(:func:`quarry.variables.types.normalise_value`), so "3,5 mg", "12 March 2020", "Yes." or
"rct" mean in a gold file exactly what they mean in a model's answer. Then:

- text: equal after Unicode NFKC, case folding, whitespace collapsing and trimming punctuation
  at the ends ("The ALPHA trial." equals "the alpha trial");
- integer, number: equal within a tolerance, ``|p - g| <= max(absolute, relative * max(|p|,
  |g|))``, by default relative 1e-6 and absolute 0; units in the text are ignored by the parser;
- boolean: yes/no, true/false, 1/0, y/n … all mean the same two values;
- date: compared at the precision of the gold value: gold "2021" accepts any date in 2021, gold
  "2021-03" any day of March 2021; a prediction less precise than the gold value is wrong;
- category: the same allowed value, ignoring case;
- multi_category, list: the same set of items (list items compared like text, duplicates and
  order ignored); items also count towards micro precision, recall and F1.

"Not stated" (a blank gold cell, or "N/A", "not reported" …) is a value of its own: a
prediction of "not stated" against it is correct. For multi_category a blank gold cell also
accepts "none of these apply" (``[]``), which a spreadsheet shows as blank too.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from quarry.variables.types import JsonValue, TypeSpec, VariableType, normalise_value
from quarry.variables.values import InvalidValue

__all__ = [
    "CellComparison",
    "InvalidValue",
    "Outcome",
    "Prediction",
    "PredictionState",
    "Tolerance",
    "compare_cell",
    "parse_gold",
    "text_key",
]


class PredictionState(StrEnum):
    """What the prediction source holds for a (document, variable) pair."""

    VALUE = "value"  # a value
    NOT_STATED = "not_stated"  # an answer: the document does not state it
    NO_ANSWER = "no_answer"  # extracted, but no answer (failed, cancelled, unfinished)
    NOT_EXTRACTED = "not_extracted"  # never extracted: the pair is not evaluated


class Outcome(StrEnum):
    """How a pair was judged; the first six are counted, the last two are skipped."""

    CORRECT = "correct"
    CORRECT_NOT_STATED = "correct_not_stated"
    WRONG = "wrong"  # both have a value, and they differ
    MISSED = "missed"  # gold has a value, the prediction says not stated
    SPURIOUS = "spurious"  # gold says not stated, the prediction has a value
    NO_ANSWER = "no_answer"  # the extraction gave no answer: counted as wrong
    GOLD_INVALID = "gold_invalid"  # the gold value does not fit the variable: skipped
    NOT_EXTRACTED = "not_extracted"  # nothing was extracted for the pair: skipped


SKIPPED = frozenset({Outcome.GOLD_INVALID, Outcome.NOT_EXTRACTED})
SET_TYPES = frozenset({VariableType.MULTI_CATEGORY, VariableType.LIST})


@dataclass(frozen=True)
class Tolerance:
    """How far a number may be from the gold number and still be correct."""

    absolute: float = 0.0
    relative: float = 1e-6

    def allows(self, predicted: float, gold: float) -> bool:
        allowed = max(self.absolute, self.relative * max(abs(predicted), abs(gold)))
        return abs(predicted - gold) <= allowed


@dataclass(frozen=True)
class Prediction:
    """A predicted value with where it came from.

    ``grounded`` is whether the value's evidence quote was found in the document; None when
    the value is not an extraction's (a reviewer's correction) or there is no value.
    ``confidence`` and ``support`` are the extraction's too (None likewise).
    """

    state: PredictionState
    value: JsonValue = None
    grounded: bool | None = None
    detail: str = ""  # why there is no answer (the extraction's status and error)
    confidence: float | None = None
    support: str | None = None


@dataclass(frozen=True)
class CellComparison:
    """The verdict on one pair. ``correct`` is None when the pair is skipped.

    For multi_category and list variables, ``matched_items`` / ``predicted_items`` /
    ``gold_items`` feed the micro precision, recall and F1 (not stated counts as no items).
    """

    outcome: Outcome
    reason: str
    matched_items: int = 0
    predicted_items: int = 0
    gold_items: int = 0

    @property
    def correct(self) -> bool | None:
        if self.outcome in SKIPPED:
            return None
        return self.outcome in (Outcome.CORRECT, Outcome.CORRECT_NOT_STATED)


def text_key(text: str) -> str:
    """Text as compared: NFKC, case folded, whitespace collapsed, no punctuation at the ends."""
    key = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(key)
    while start < end and (key[start] == " " or unicodedata.category(key[start])[0] == "P"):
        start += 1
    while end > start and (key[end - 1] == " " or unicodedata.category(key[end - 1])[0] == "P"):
        end -= 1
    return key[start:end]


def parse_gold(spec: TypeSpec, raw: object) -> JsonValue:
    """A gold value in its stored form; None is "not stated". Raises InvalidValue."""
    return normalise_value(spec, raw)


def _show(value: JsonValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "; ".join(str(item) for item in value) or "(none apply)"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _category_key(text: str) -> str:
    """Allowed values are unique ignoring case and Unicode form (the codebook checks it)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _items(spec: TypeSpec, value: JsonValue) -> dict[str, str]:
    """A set value as {comparison key: shown item}."""
    if value is None:
        return {}
    items = value if isinstance(value, list) else [value]
    key = _category_key if spec.type is VariableType.MULTI_CATEGORY else text_key
    return {key(str(item)): str(item) for item in items}


def _listing(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))


def _compare_sets(spec: TypeSpec, gold: JsonValue, predicted: JsonValue) -> CellComparison:
    gold_items, predicted_items = _items(spec, gold), _items(spec, predicted)
    matched = len(gold_items.keys() & predicted_items.keys())
    counts = {
        "matched_items": matched,
        "predicted_items": len(predicted_items),
        "gold_items": len(gold_items),
    }
    if gold_items.keys() == predicted_items.keys():
        return CellComparison(Outcome.CORRECT, "The same items.", **counts)
    missing = [gold_items[k] for k in gold_items.keys() - predicted_items.keys()]
    extra = [predicted_items[k] for k in predicted_items.keys() - gold_items.keys()]
    parts = []
    if missing:
        parts.append(f"missing {_listing(missing)}")
    if extra:
        parts.append(f"extra {_listing(extra)}")
    reason = "; ".join(parts)
    return CellComparison(Outcome.WRONG, reason[0].upper() + reason[1:] + ".", **counts)


def _compare_values(
    spec: TypeSpec, gold: JsonValue, predicted: JsonValue, tolerance: Tolerance
) -> CellComparison:
    """Both gold and prediction have a value (already normalised for the type)."""
    match spec.type:
        case VariableType.INTEGER | VariableType.NUMBER:
            assert isinstance(gold, int | float) and isinstance(predicted, int | float)
            if tolerance.allows(float(predicted), float(gold)):
                return CellComparison(Outcome.CORRECT, "Equal within the tolerance.")
            difference = abs(float(predicted) - float(gold))
            return CellComparison(
                Outcome.WRONG,
                f"{_show(predicted)} differs from {_show(gold)} by {difference:g}.",
            )
        case VariableType.DATE:
            assert isinstance(gold, str) and isinstance(predicted, str)
            if len(predicted) < len(gold):
                return CellComparison(
                    Outcome.WRONG, f"{predicted} is less precise than the gold date {gold}."
                )
            if predicted[: len(gold)] == gold:
                precision = {4: "year", 7: "month"}.get(len(gold), "day")
                return CellComparison(Outcome.CORRECT, f"The same date (to the {precision}).")
            return CellComparison(Outcome.WRONG, f"{predicted} is not {gold}.")
        case VariableType.MULTI_CATEGORY | VariableType.LIST:
            return _compare_sets(spec, gold, predicted)
        case VariableType.TEXT:
            if text_key(str(predicted)) == text_key(str(gold)):
                return CellComparison(Outcome.CORRECT, "The same text (ignoring case).")
            return CellComparison(Outcome.WRONG, f"'{_show(predicted)}' is not '{_show(gold)}'.")
        case VariableType.CATEGORY:
            if _category_key(str(predicted)) == _category_key(str(gold)):
                return CellComparison(Outcome.CORRECT, "The same category.")
            return CellComparison(Outcome.WRONG, f"'{_show(predicted)}' is not '{_show(gold)}'.")
        case VariableType.BOOLEAN:
            if predicted == gold:
                return CellComparison(Outcome.CORRECT, "The same answer.")
            return CellComparison(Outcome.WRONG, f"{_show(predicted)} is not {_show(gold)}.")
    raise AssertionError(f"unhandled type {spec.type}")  # pragma: no cover


def _as_stored(spec: TypeSpec, value: JsonValue) -> JsonValue:
    """A stored prediction in its normalised form (old rows or reviews may predate a rule)."""
    if spec.type in (VariableType.INTEGER, VariableType.NUMBER) and isinstance(value, int | float):
        if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise InvalidValue(f"{value!r} is not a usable number.")
        return value
    return normalise_value(spec, value)


def _not_stated_set(spec: TypeSpec, value: JsonValue) -> bool:
    """Blank in a spreadsheet: not stated, or an empty multi_category ("none apply")."""
    return value is None or (spec.type is VariableType.MULTI_CATEGORY and value == [])


def compare_cell(
    spec: TypeSpec, gold: JsonValue, prediction: Prediction, tolerance: Tolerance
) -> CellComparison:
    """Judge ``prediction`` against ``gold`` (None = not stated) for a variable of ``spec``."""
    gold_count = len(_items(spec, gold)) if spec.type in SET_TYPES else 0
    if prediction.state is PredictionState.NOT_EXTRACTED:
        return CellComparison(Outcome.NOT_EXTRACTED, "Nothing was extracted for this pair.")
    if prediction.state is PredictionState.NO_ANSWER:
        detail = f": {prediction.detail}" if prediction.detail else "."
        return CellComparison(Outcome.NO_ANSWER, f"No answer{detail}", gold_items=gold_count)
    predicted: JsonValue = None
    if prediction.state is PredictionState.VALUE:
        try:
            predicted = _as_stored(spec, prediction.value)
        except InvalidValue as exc:
            return CellComparison(
                Outcome.WRONG,
                f"The predicted value does not fit the variable: {exc}",
                gold_items=gold_count,
            )
    blank = _not_stated_set if spec.type is VariableType.MULTI_CATEGORY else _is_none
    gold_blank, predicted_blank = blank(spec, gold), blank(spec, predicted)
    if gold_blank and predicted_blank:
        return CellComparison(Outcome.CORRECT_NOT_STATED, "Both say not stated.")
    if predicted_blank:
        return CellComparison(
            Outcome.MISSED,
            f"Predicted not stated; the gold value is {_show(gold)}.",
            gold_items=gold_count,
        )
    if gold_blank:
        predicted_count = len(_items(spec, predicted)) if spec.type in SET_TYPES else 0
        return CellComparison(
            Outcome.SPURIOUS,
            f"Predicted {_show(predicted)}; the gold value is not stated.",
            predicted_items=predicted_count,
        )
    return _compare_values(spec, gold, predicted, tolerance)


def _is_none(spec: TypeSpec, value: JsonValue) -> bool:
    return value is None
