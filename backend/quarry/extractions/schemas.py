from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from quarry.documents.schemas import DocumentOut
from quarry.models import ExtractionStatus, ReviewStatus
from quarry.pagination import Page
from quarry.reflists.schemas import MatchCandidateOut, MatchReviewOut


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: ReviewStatus
    value: Any = Field(
        None,
        description=(
            "The corrected value: required when status is corrected (null: the document "
            "does not state it); ignored otherwise"
        ),
    )
    note: Annotated[str, StringConstraints(max_length=5000)] = ""


class ReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    document_id: uuid.UUID
    variable_id: uuid.UUID
    extraction_id: uuid.UUID | None
    status: ReviewStatus
    value: Any
    note: str
    reviewer_id: uuid.UUID | None
    reviewer_email: str | None = Field(None, description="Who made it (in review histories)")
    kind: Literal["single", "independent", "adjudication"] = Field(
        "single",
        description="single: a review in single-review mode; independent: one of the two "
        "assigned reviewers' verdicts (dual review); adjudication: a conflict's resolution",
    )
    created_at: datetime


class DualReviewOut(BaseModel):
    """A cell's dual-review state, as the caller may see it."""

    assigned: Literal["a", "b"] | None = Field(
        description="Your slot on this document: reviewer A or B (null: not yours)"
    )
    your_review: ReviewOut | None = Field(None, description="Your own current verdict")
    both_reviewed: bool = Field(
        description="Both assigned reviewers have reviewed the cell (until then a reviewer "
        "sees only their own verdict)"
    )
    agree: bool | None = Field(
        description="Once both have reviewed: whether they agree (false: a conflict)"
    )
    adjudicated: bool = Field(description="An adjudication decided the cell's final value")


class EvidenceBox(BaseModel):
    page: int
    x0: float
    y0: float
    x1: float
    y1: float


class SecondAnswerOut(BaseModel):
    """A two-profile run's second profile's answer for the same pair: its own task row,
    with its own status, tokens and cost (at that profile's price)."""

    id: uuid.UUID
    profile: str = Field(description="The second profile's name (or its model)")
    status: ExtractionStatus
    value: Any
    evidence: str | None
    page: int | None
    grounded: bool | None
    support: Literal["supported", "unsupported", "unchecked"] | None
    confidence: float | None
    attempts: int
    tokens_in: int
    tokens_out: int
    cost_usd: float | None = Field(
        None, description="What its calls cost, at the second profile's price"
    )
    latency_ms: int | None
    model: str | None
    error: str | None
    cached: bool
    finished_at: datetime | None


class ExtractionOut(BaseModel):
    id: uuid.UUID
    run_id: uuid.UUID
    document_id: uuid.UUID
    variable_id: uuid.UUID
    variable_name: str
    prompt_version: int
    status: ExtractionStatus
    value: Any
    evidence: str | None
    page: int | None
    char_start: int | None
    char_end: int | None
    grounded: bool | None
    grounding_method: str | None = Field(
        None, description="How the quote was found: exact, normalised or fuzzy"
    )
    grounding_score: float | None = Field(
        None, description="Similarity of quote and located span (1.0 unless fuzzy)"
    )
    support: Literal["supported", "unsupported", "unchecked"] | None = Field(
        None,
        description="Whether the evidence supports the value: 'supported' (the value, or a "
        "surface form of it, is in the quote or its sentence), 'unsupported' (it is not: the "
        "value is flagged unsupported_evidence and its confidence capped at 0.5), 'unchecked' "
        "(a boolean or category whose quote lacks the cue words, or a text value only partly "
        "echoed); null unless the extraction succeeded",
    )
    pages_sent: list[int] | None = Field(
        None,
        description="Pages whose text the model was shown (a long document is sent as the "
        "excerpts most relevant to the variable)",
    )
    confidence: float | None = Field(
        description="A review-priority score, 0..1 (lowest first): the model's stated "
        "confidence combined with the token probability of this value's own tokens (when "
        "QUARRY_LLM_LOGPROBS is on), scaled down for an approximate quote and capped at 0.5 "
        "when the quote is not in the document or does not support the value. A ranking for "
        "review, not a calibrated probability."
    )
    boxes: list[EvidenceBox] | None = Field(
        None,
        description="Where the evidence is on its pages: one rectangle per line of the quote, "
        "in page units (PDF points, or an image's pixels; see the pages' width and height in "
        "…/documents/{document_id}/text); null for documents without word geometry (DOCX, "
        "text) or an ungrounded quote",
    )
    ocr_confidence: float | None = Field(
        None,
        description="Mean OCR confidence (0..1) of the quoted words; null unless the quote "
        "is on a page read by OCR",
    )
    ocr_low_confidence: bool = Field(
        False,
        description="The quote lies on OCR text read with low confidence (ocr_confidence "
        "below 0.75): its confidence was lowered; check the value on the page image",
    )
    attempts: int
    tokens_in: int
    tokens_out: int
    cost_usd: float | None = Field(
        None,
        description="What this extraction's calls cost in US dollars, at the run's price "
        "(null when the model's price is unknown)",
    )
    latency_ms: int | None
    model: str | None
    error: str | None
    cached: bool = Field(description="Reused from an earlier run's identical call (no LLM call)")
    created_at: datetime
    finished_at: datetime | None
    review: ReviewOut | None = Field(
        None,
        description="The cell's current verdict (its final one: an adjudication, the two dual "
        "reviewers' agreed verdict, or the newest single review); in dual review, a reviewer "
        "sees their own verdict here until both assigned reviewers have reviewed the cell",
    )
    model_hidden: bool = Field(
        False,
        description="Blind dual review: the model's answer (value, evidence, page, confidence, "
        "flags, second profile, match) is withheld until you have reviewed this cell; its "
        "status then reads succeeded whether or not the model found a value",
    )
    dual_review: DualReviewOut | None = Field(
        None, description="In dual review: the cell's two-reviewer state"
    )
    profile: str | None = Field(
        None,
        description="For a two-profile run, the profile that gave this value (the first-named; "
        "null for a one-profile run)",
    )
    agreement: Literal["agree", "disagree", "one_missing"] | None = Field(
        None,
        description="For a two-profile run, once both profiles' extractions are finished: "
        "'agree' (the same answer, compared type-aware: numbers within a relative 1e-6, dates "
        "as dates, text normalised, categories exactly, sets as sets; both 'not stated' "
        "included), 'disagree' (flagged models_disagree: listed first for review, and in the "
        "exports' flags), 'one_missing' (only one answered: listed next); null otherwise",
    )
    models_disagree: bool = Field(
        False, description="The flag of a disagreement (agreement = 'disagree')"
    )
    second: SecondAnswerOut | None = Field(
        None, description="For a two-profile run, the second profile's answer for the pair"
    )
    match_status: Literal["matched", "ambiguous", "unmatched"] | None = Field(
        None,
        description="For a variable matched to a reference list: whether the value matched "
        "one row (matched), several or only loosely (ambiguous), or none (unmatched); "
        "ambiguous and unmatched are review flags. Null when not matched",
    )
    match_key: str | None = Field(None, description="The matched row's key (key_column)")
    match_score: float | None = Field(None, description="The match's score, 0..100")
    match_candidates: list[MatchCandidateOut] | None = Field(
        None, description="The best rows (key, row number, cell, score), best first"
    )
    match_list_version_id: uuid.UUID | None = Field(
        None, description="The reference list version the value was matched against"
    )
    match_review: MatchReviewOut | None = Field(
        None,
        description="A reviewer's choice of row for this cell (POST …/extractions/{id}/match), "
        "which wins over the automatic match",
    )


# ---------------------------------------------------------------------------------------------
# The results grid (GET …/results, extractions/grid.py)


class GridSort(StrEnum):
    FILENAME = "filename"
    UPLOADED = "uploaded"
    VALUE = "value"
    FLAG = "flag"


class SortOrder(StrEnum):
    ASC = "asc"
    DESC = "desc"


class CellStatus(StrEnum):
    """A cell's status as the grid filters it: its current extraction's, or not_extracted."""

    SUCCEEDED = "succeeded"
    NOT_FOUND = "not_found"
    FAILED = "failed"
    PENDING = "pending"
    RUNNING = "running"
    CANCELLED = "cancelled"
    NOT_EXTRACTED = "not_extracted"


class ReviewState(StrEnum):
    REVIEWED = "reviewed"
    UNREVIEWED = "unreviewed"


class GridFlag(StrEnum):
    """A cell's flags (exports' CellFlags, by name; in table.FLAG_PRECEDENCE order) and
    `finding`: the cell is in an open consistency finding."""

    FAILED = "failed"
    REVIEW_DISAGREES = "review_disagrees"
    MODELS_DISAGREE = "models_disagree"
    NOT_FOUND = "not_found"
    UNGROUNDED = "ungrounded"
    UNSUPPORTED_EVIDENCE = "unsupported_evidence"
    MATCH_UNMATCHED = "match_unmatched"
    MATCH_AMBIGUOUS = "match_ambiguous"
    OCR_LOW_CONFIDENCE = "ocr_low_confidence"
    LOW_CONFIDENCE = "low_confidence"
    FINDING = "finding"


class GridExtractionOut(BaseModel):
    """What the grid shows of a cell's current extraction (the newest answered one, else the
    newest of any status; the panel reads the rest from GET …/extractions)."""

    status: ExtractionStatus = Field(
        description="As a user reads it: a never-started task of a stopped run is cancelled"
    )
    value: Any = Field(description="The extracted value (null: not stated, or no answer)")
    confidence: float | None
    grounded: bool | None
    support: Literal["supported", "unsupported", "unchecked"] | None
    ocr_low_confidence: bool
    models_disagree: bool
    match_status: Literal["matched", "ambiguous", "unmatched"] | None = Field(
        description="The automatic reference-list match (a reviewer's choice of row is "
        "`match_reviewed`)"
    )
    match_reviewed: bool = Field(description="A reviewer has chosen the reference row")
    error: str | None


class GridReviewOut(BaseModel):
    status: ReviewStatus
    value: Any


class GridDualReviewOut(BaseModel):
    """A cell's dual-review state, as the caller may see it (DualReviewOut's, with the
    caller's own verdict as the grid shows reviews)."""

    assigned: Literal["a", "b"] | None = Field(
        description="Your slot on this document: reviewer A or B (null: not yours)"
    )
    your_review: GridReviewOut | None = Field(description="Your own current verdict")
    both_reviewed: bool = Field(
        description="Both assigned reviewers have reviewed the cell (until then a reviewer "
        "sees only their own verdict)"
    )
    agree: bool | None = Field(
        description="Once both have reviewed: whether they agree (false: a conflict)"
    )
    adjudicated: bool = Field(description="An adjudication decided the cell's final value")


class GridCellOut(BaseModel):
    variable_id: uuid.UUID
    extraction: GridExtractionOut | None = Field(description="Null: never extracted")
    review: GridReviewOut | None = Field(
        description="The cell's final verdict (reviewing/verdicts.py), if any; for a reviewer "
        "still blinded on it in dual review, their own verdict"
    )
    value: Any = Field(
        description="The final value, as the exports hold it: the reviewed value where "
        "reviewed (null when rejected), else the extracted one"
    )
    flags: list[GridFlag] = Field(
        description="Why a reviewer should look, as the exports' flags (a reviewed cell keeps "
        "only review_disagrees and its match's), and `finding`"
    )
    flag: GridFlag | None = Field(
        description="The one flag that decides how the cell looks: the first of `flags` in "
        "the order failed > review_disagrees > models_disagree > not_found > ungrounded > "
        "unsupported_evidence > match_unmatched > match_ambiguous > ocr_low_confidence > "
        "low_confidence (the xlsx fills' order); null without flags"
    )
    finding: bool = Field(description="The cell is in an open consistency finding")
    model_hidden: bool = Field(
        False,
        description="Blind dual review: the model's answer is withheld until you have "
        "reviewed this cell (`extraction` keeps only its status, an answer reading succeeded; "
        "no value, flags or finding)",
    )
    dual_review: GridDualReviewOut | None = Field(
        None, description="In dual review: the cell's two-reviewer state"
    )


class GridRowOut(BaseModel):
    document: DocumentOut
    cells: list[GridCellOut] = Field(description="One per variable, in codebook order")


class GridCount(BaseModel):
    value: str
    documents: int = Field(description="Rows with such a cell, under the other filters")
    cells: int = Field(description="Such cells in those rows (in the filtered column, if any)")


class GridCounts(BaseModel):
    """Per filter value, what choosing it would give, under every other filter in force."""

    status: list[GridCount]
    review: list[GridCount]
    flag: list[GridCount]


class GridPage(Page[GridRowOut]):
    documents_total: int = Field(description="Documents in the project, unfiltered")
    counts: GridCounts | None = Field(description="Null when asked for with counts=false")
