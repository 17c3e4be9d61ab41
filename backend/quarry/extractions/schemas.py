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
    confidence: float | None
    attempts: int
    tokens_in: int
    tokens_out: int
    latency_ms: int | None
    model: str | None
    error: str | None
    cached: bool
    created_at: datetime
    finished_at: datetime | None
    review: ReviewOut | None = Field(None, description="The current review of this cell, if any")
