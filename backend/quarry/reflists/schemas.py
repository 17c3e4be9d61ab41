from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ReferenceListVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    version: int
    filename: str
    columns: list[str]
    row_count: int
    created_at: datetime


class ReferenceListOut(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    description: str
    version: int = Field(description="The current version (the newest upload)")
    columns: list[str] = Field(description="The current version's columns, in file order")
    row_count: int
    filename: str
    versions: list[ReferenceListVersionOut] = Field(
        description="Every upload, newest first; old ones are kept so old matches stay explainable"
    )
    rematched: int | None = Field(
        None,
        description="After a replacement: how many stored values were matched again to the "
        "new version (no LLM call)",
    )
    created_at: datetime
    updated_at: datetime


class ReferenceRowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    row_number: int = Field(description="The row's number in the uploaded sheet (header: 1)")
    values: dict[str, Any]


class MatchCandidateOut(BaseModel):
    key: str
    row_number: int
    value: str
    score: float


class MatchReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(
        description="The chosen row's key (a candidate's, or any key of the list), or null: "
        "no row of the list is this one"
    )
    note: str = Field("", max_length=5000)


class MatchReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    document_id: uuid.UUID
    variable_id: uuid.UUID
    extraction_id: uuid.UUID | None
    list_version_id: uuid.UUID | None
    key: str | None
    note: str
    reviewer_id: uuid.UUID | None
    created_at: datetime
