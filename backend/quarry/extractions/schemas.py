from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

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
    pages_sent: list[int] | None = Field(
        None,
        description="Pages whose text the model was shown (a long document is sent as the "
        "excerpts most relevant to the variable)",
    )
    confidence: float | None
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
