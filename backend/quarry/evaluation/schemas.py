"""What an evaluation answers: figures per variable and overall, and every pair's verdict."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from quarry.evaluation.compare import Outcome, PredictionState
from quarry.evaluation.metrics import CONFIDENCE_BUCKETS, SUPPORT_VERDICTS, Tally, ratio


class GoldSource(StrEnum):
    CSV = "csv"
    REVIEWS = "reviews"


class PredictionSource(StrEnum):
    FINAL = "final"
    EXTRACTED = "extracted"
    RUN = "run"


class EvaluationFormat(StrEnum):
    JSON = "json"
    XLSX = "xlsx"


class ToleranceOut(BaseModel):
    absolute: float = Field(description="Numbers within this absolute difference are equal")
    relative: float = Field(
        description="…or within this fraction of the larger magnitude, whichever is larger"
    )


class GroundingOut(BaseModel):
    """How the evidence quotes relate to correctness, over compared extracted values."""

    grounded_values: int = Field(description="Predicted values whose quote was found")
    grounded_correct: int = Field(description="…of which correct")
    ungrounded_values: int = Field(description="Predicted values whose quote was not found")
    ungrounded_correct: int = Field(description="…of which correct")
    grounded_share: float | None = Field(
        description="grounded_values / (grounded_values + ungrounded_values): how many "
        "predicted values have their quote in the document"
    )
    grounding_precision: float | None = Field(
        description="grounded_correct / grounded_values: of the values whose quote was found, "
        "the share that is correct"
    )
    ungrounded_accuracy: float | None = Field(
        description="ungrounded_correct / ungrounded_values, for contrast"
    )


class ConfidenceBucketOut(BaseModel):
    """Calibration: the compared extracted values whose confidence is in (lower, upper]."""

    lower: float = Field(description="The bucket holds confidences above this (0 included)")
    upper: float = Field(description="…and up to this")
    values: int = Field(description="Compared extracted values with a confidence in the bucket")
    correct: int = Field(description="…of which correct")
    accuracy: float | None = Field(description="correct / values (null when empty)")


class SupportVerdictOut(BaseModel):
    """Accuracy of the compared extracted values with one evidence-support verdict."""

    support: str = Field(description="supported, unsupported or unchecked")
    values: int
    correct: int
    accuracy: float | None = Field(description="correct / values (null when none)")


class MetricsOut(BaseModel):
    """Figures over a set of (document, variable) pairs."""

    compared: int = Field(
        description="Pairs compared: a usable gold value and an extraction (see skipped_*)"
    )
    correct: int = Field(description="Pairs judged correct, agreeing 'not stated' included")
    accuracy: float | None = Field(description="correct / compared (null when none compared)")
    correct_not_stated: int = Field(description="Correct pairs where both say 'not stated'")
    wrong: int = Field(description="Both have a value, and they differ")
    missed: int = Field(description="The gold has a value; the prediction says 'not stated'")
    spurious: int = Field(description="The gold says 'not stated'; the prediction has a value")
    no_answer: int = Field(
        description="The extraction gave no answer (failed, cancelled, unfinished): counted wrong"
    )
    gold_not_stated: int = Field(description="Compared pairs whose gold value is 'not stated'")
    predicted_not_stated: int = Field(description="Compared pairs predicted 'not stated'")
    skipped_gold_invalid: int = Field(
        description="Pairs skipped because the gold value does not fit the variable's type"
    )
    skipped_not_extracted: int = Field(
        description="Pairs skipped because nothing was extracted for them"
    )
    precision: float | None = Field(
        None,
        description="multi_category/list: matched items / predicted items, summed over pairs",
    )
    recall: float | None = Field(
        None, description="multi_category/list: matched items / gold items, summed over pairs"
    )
    f1: float | None = Field(None, description="Harmonic mean of precision and recall")
    grounding: GroundingOut
    calibration: list[ConfidenceBucketOut] = Field(
        default_factory=list,
        description="Accuracy per confidence bucket (confidence is a review-priority score: "
        "a useful one has accuracy rising with it)",
    )
    support: list[SupportVerdictOut] = Field(
        default_factory=list,
        description="Accuracy per evidence-support verdict of the extracted values",
    )

    @classmethod
    def from_tally(cls, tally: Tally, items: bool) -> MetricsOut:
        return cls(
            compared=tally.compared,
            correct=tally.correct,
            accuracy=tally.accuracy,
            correct_not_stated=tally.correct_not_stated,
            wrong=tally.wrong,
            missed=tally.missed,
            spurious=tally.spurious,
            no_answer=tally.no_answer,
            gold_not_stated=tally.gold_not_stated,
            predicted_not_stated=tally.predicted_not_stated,
            skipped_gold_invalid=tally.gold_invalid,
            skipped_not_extracted=tally.not_extracted,
            precision=tally.precision if items else None,
            recall=tally.recall if items else None,
            f1=tally.f1 if items else None,
            grounding=GroundingOut(
                grounded_values=tally.grounded_values,
                grounded_correct=tally.grounded_correct,
                ungrounded_values=tally.ungrounded_values,
                ungrounded_correct=tally.ungrounded_correct,
                grounded_share=tally.grounded_share,
                grounding_precision=tally.grounding_precision,
                ungrounded_accuracy=tally.ungrounded_accuracy,
            ),
            calibration=[
                ConfidenceBucketOut(
                    lower=lower,
                    upper=upper,
                    values=values,
                    correct=correct,
                    accuracy=ratio(correct, values),
                )
                for lower, upper, values, correct in zip(
                    (0.0, *CONFIDENCE_BUCKETS[:-1]),
                    CONFIDENCE_BUCKETS,
                    tally.bucket_values,
                    tally.bucket_correct,
                    strict=True,
                )
            ],
            support=[
                SupportVerdictOut(
                    support=verdict, values=values, correct=correct, accuracy=ratio(correct, values)
                )
                for verdict, values, correct in zip(
                    SUPPORT_VERDICTS, tally.support_values, tally.support_correct, strict=True
                )
            ],
        )


class VariableMetricsOut(MetricsOut):
    variable_id: uuid.UUID
    variable: str = Field(description="The variable's name (its export column)")
    label: str
    type: str


class CellOut(BaseModel):
    """One (document, variable) pair: the gold value, the prediction, and the verdict."""

    variable: str
    gold: Any = Field(description="The gold value as normalised for the type; null = not stated")
    gold_raw: str | None = Field(description="The gold cell as written in the CSV")
    predicted: Any = Field(description="The predicted value; null = not stated or no answer")
    prediction: PredictionState
    correct: bool | None = Field(description="null when the pair is skipped")
    outcome: Outcome
    reason: str = Field(description="Why, in a sentence")
    grounded: bool | None = Field(
        description="Whether the predicted value's quote was found (null: not an extraction)"
    )


class DocumentResultOut(BaseModel):
    document_id: uuid.UUID
    filename: str
    compared: int
    correct: int
    accuracy: float | None
    cells: list[CellOut]


class ProfileMetricsOut(BaseModel):
    """One profile of a two-profile run, measured on its own answers."""

    profile: str = Field(description="The profile's name (or its model)")
    model: str
    overall: MetricsOut
    variables: list[VariableMetricsOut]


class AgreementVsGoldOut(BaseModel):
    """A two-profile run's agreement against gold: is a pair both profiles agree on right,
    and when they disagree, which one is? Over the pairs with a usable gold value."""

    compared: int = Field(description="Pairs both profiles answered (agreed + disagreed)")
    agreed: int = Field(description="Pairs both profiles answered alike")
    agreed_correct: int = Field(description="Of them, pairs whose shared answer is right")
    agreed_accuracy: float | None = Field(
        description="agreed_correct / agreed: how often the two are right when they agree"
    )
    disagreed: int = Field(description="Pairs the profiles answered differently")
    first_correct: int = Field(description="Of them, pairs the first profile got right")
    second_correct: int = Field(description="Of them, pairs the second profile got right")
    neither_correct: int = Field(description="Of them, pairs neither got right")
    first_accuracy: float | None = Field(description="first_correct / disagreed")
    second_accuracy: float | None = Field(description="second_correct / disagreed")
    one_missing: int = Field(description="Pairs only one profile answered (not compared)")


class VariableAgreementVsGoldOut(AgreementVsGoldOut):
    variable_id: uuid.UUID
    variable: str


class RunAgreementVsGoldOut(BaseModel):
    overall: AgreementVsGoldOut
    variables: list[VariableAgreementVsGoldOut]


class EvaluationOut(BaseModel):
    """Predicted values measured against gold values.

    Gold: an uploaded CSV (`gold_source=csv`) or the accepted and corrected reviews
    (`reviews`). Predictions: a run's extractions when `run_id` is given (`run`); otherwise the
    project's final values, reviewed where reviewed (`final`, CSV gold), or its latest
    extracted values (`extracted`, review gold, where the reviews are the answer key).
    """

    gold_source: GoldSource
    predictions: PredictionSource
    run_id: uuid.UUID | None
    tolerance: ToleranceOut
    documents: int = Field(description="Documents with at least one compared pair")
    overall: MetricsOut = Field(description="Every compared pair of every variable")
    variables: list[VariableMetricsOut]
    per_document: list[DocumentResultOut]
    warnings: list[str] = Field(
        description="What was ignored: unknown filenames or columns, unusable gold values, …"
    )
    profiles: list[ProfileMetricsOut] | None = Field(
        None,
        description="With the `run_id` of a two-profile run: each profile measured on its own "
        "answers, first first (the figures above are the first's: the run's values)",
    )
    agreement: RunAgreementVsGoldOut | None = Field(
        None,
        description="With the `run_id` of a two-profile run: where both profiles agree, how "
        "often they are right; where they disagree, how often each is",
    )
