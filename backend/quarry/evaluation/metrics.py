"""Adding up pair verdicts into the figures an evaluation reports (pure).

Definitions (also in the API schema):

- ``compared``: pairs with a usable gold value and a prediction source entry (skipped pairs,
  whose gold value does not fit the variable or that were never extracted, are not compared).
- ``accuracy = correct / compared``; "correct" includes agreeing that a value is not stated.
  A pair whose extraction gave no answer (failed, cancelled, unfinished) counts as wrong.
- multi_category and list: micro ``precision = matched items / predicted items``,
  ``recall = matched items / gold items``, ``f1`` their harmonic mean, summed over compared
  pairs (not stated counts as no items).
- grounding, over compared pairs whose prediction is an extracted value:
  ``grounded_share = grounded values / values with a grounding verdict`` and
  ``grounding_precision = correct grounded values / grounded values`` (how far a found quote
  can be trusted); ``ungrounded_accuracy`` is the same figure for values whose quote was not
  found, for contrast.
- calibration, over compared pairs whose prediction is an extracted value with a confidence:
  per confidence bucket (:data:`CONFIDENCE_BUCKETS`: up to 0.5, 0.7, 0.9, 1.0, each bucket
  holding the figures above the previous bound and up to its own), how many values and how
  many of them correct. Confidence is a review-priority score: a useful one has accuracy
  rising with the buckets, not necessarily equal to them.
- support, over the same values: accuracy of those whose evidence supports the value, does not,
  or could not be checked (runs/support.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quarry.evaluation.compare import CellComparison, Outcome, Prediction, PredictionState

#: The upper bounds of the calibration buckets (the first from 0, the cap of an unsupported
#: value's confidence).
CONFIDENCE_BUCKETS: tuple[float, ...] = (0.5, 0.7, 0.9, 1.0)
SUPPORT_VERDICTS: tuple[str, ...] = ("supported", "unsupported", "unchecked")


def bucket_of(confidence: float) -> int:
    """The calibration bucket (an index into CONFIDENCE_BUCKETS) of a 0..1 confidence."""
    for index, upper in enumerate(CONFIDENCE_BUCKETS):
        if confidence <= upper:
            return index
    return len(CONFIDENCE_BUCKETS) - 1


def ratio(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator`` rounded to 4 places; None when there is nothing to divide."""
    return round(numerator / denominator, 4) if denominator else None


@dataclass
class Tally:
    compared: int = 0
    correct: int = 0
    correct_not_stated: int = 0
    wrong: int = 0
    missed: int = 0
    spurious: int = 0
    no_answer: int = 0
    gold_not_stated: int = 0
    predicted_not_stated: int = 0
    gold_invalid: int = 0
    not_extracted: int = 0
    matched_items: int = 0
    predicted_items: int = 0
    gold_items: int = 0
    grounded_values: int = 0
    grounded_correct: int = 0
    ungrounded_values: int = 0
    ungrounded_correct: int = 0
    #: Per CONFIDENCE_BUCKETS bucket: values, and of them correct.
    bucket_values: list[int] = field(default_factory=lambda: [0] * len(CONFIDENCE_BUCKETS))
    bucket_correct: list[int] = field(default_factory=lambda: [0] * len(CONFIDENCE_BUCKETS))
    #: Per SUPPORT_VERDICTS verdict: values, and of them correct.
    support_values: list[int] = field(default_factory=lambda: [0] * len(SUPPORT_VERDICTS))
    support_correct: list[int] = field(default_factory=lambda: [0] * len(SUPPORT_VERDICTS))

    def add(self, comparison: CellComparison, prediction: Prediction, gold_stated: bool) -> None:
        """Count one pair's verdict."""
        outcome = comparison.outcome
        if outcome is Outcome.GOLD_INVALID:
            self.gold_invalid += 1
            return
        if outcome is Outcome.NOT_EXTRACTED:
            self.not_extracted += 1
            return
        self.compared += 1
        correct = bool(comparison.correct)
        self.correct += correct
        match outcome:
            case Outcome.CORRECT_NOT_STATED:
                self.correct_not_stated += 1
            case Outcome.WRONG:
                self.wrong += 1
            case Outcome.MISSED:
                self.missed += 1
            case Outcome.SPURIOUS:
                self.spurious += 1
            case Outcome.NO_ANSWER:
                self.no_answer += 1
        self.gold_not_stated += not gold_stated
        self.predicted_not_stated += prediction.state is PredictionState.NOT_STATED
        self.matched_items += comparison.matched_items
        self.predicted_items += comparison.predicted_items
        self.gold_items += comparison.gold_items
        if prediction.state is PredictionState.VALUE and prediction.grounded is not None:
            if prediction.grounded:
                self.grounded_values += 1
                self.grounded_correct += correct
            else:
                self.ungrounded_values += 1
                self.ungrounded_correct += correct
        if prediction.state is PredictionState.VALUE and prediction.confidence is not None:
            bucket = bucket_of(prediction.confidence)
            self.bucket_values[bucket] += 1
            self.bucket_correct[bucket] += correct
        if prediction.state is PredictionState.VALUE and prediction.support in SUPPORT_VERDICTS:
            verdict = SUPPORT_VERDICTS.index(prediction.support)
            self.support_values[verdict] += 1
            self.support_correct[verdict] += correct

    def merge(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, list):
                setattr(self, name, [a + b for a, b in zip(mine, theirs, strict=True)])
            else:
                setattr(self, name, mine + theirs)

    @property
    def accuracy(self) -> float | None:
        return ratio(self.correct, self.compared)

    @property
    def precision(self) -> float | None:
        return ratio(self.matched_items, self.predicted_items)

    @property
    def recall(self) -> float | None:
        return ratio(self.matched_items, self.gold_items)

    @property
    def f1(self) -> float | None:
        total = self.predicted_items + self.gold_items
        return ratio(2 * self.matched_items, total)

    @property
    def grounded_share(self) -> float | None:
        return ratio(self.grounded_values, self.grounded_values + self.ungrounded_values)

    @property
    def grounding_precision(self) -> float | None:
        return ratio(self.grounded_correct, self.grounded_values)

    @property
    def ungrounded_accuracy(self) -> float | None:
        return ratio(self.ungrounded_correct, self.ungrounded_values)
