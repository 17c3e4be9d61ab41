from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from quarry.models import ExtractionStatus, ReviewStatus


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: ReviewStatus
    value: Any = Field(None, description="The corrected value (required when status is corrected)")
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
    created_at: datetime


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
    review: ReviewOut | None = Field(None, description="The current review of this cell, if any")
