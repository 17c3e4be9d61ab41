from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

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


class CaseDocumentOut(BaseModel):
    id: uuid.UUID
    filename: str


class CombinedValueOut(BaseModel):
    value: Any = Field(description="The variable combined across the case by its rule")
    document_ids: list[uuid.UUID] = Field(description="The documents the value came from")


class ReferenceRowRef(BaseModel):
    row_number: int
    values: dict[str, Any]


class CaseOut(BaseModel):
    key: str = Field(description="The case key: the matched row's key, or the value")
    documents: list[CaseDocumentOut]
    values: dict[str, CombinedValueOut]
    reference_row: ReferenceRowRef | None = Field(
        None, description="The case's row of the reference list (a matched case key)"
    )
    open_findings: int


class FindingSourceOut(BaseModel):
    document_id: uuid.UUID
    filename: str
    evidence: str | None = Field(description="The quote the value came from")
    page: int | None
    extraction_id: uuid.UUID | None
    reviewed: bool = Field(description="The value is a reviewer's")


class FindingValueOut(BaseModel):
    value: Any
    agrees_with_reference: bool | None = None
    documents: list[FindingSourceOut]


class FindingResolutionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    resolution: Literal["value", "both_correct"]
    value: Any
    note: str
    reviewer_id: uuid.UUID | None
    created_at: datetime


class FindingOut(BaseModel):
    id: str = Field(description="Stable for the case, variable and kind")
    kind: Literal["within_case", "reference"]
    status: Literal["open", "resolved"]
    case_key: str
    variable: str
    variable_id: uuid.UUID
    values: list[FindingValueOut] = Field(description="Every value the case's documents give")
    reference_column: str | None = None
    reference_value: Any = None
    reference_row_number: int | None = None
    resolution: FindingResolutionOut | None = None


class FindingResolutionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: Literal["value", "both_correct"] = Field(
        description="value: `value` is the right one (it becomes the case's value); "
        "both_correct: the values differ and both are right"
    )
    value: Any = Field(None, description="The right value (resolution 'value')")
    note: str = Field("", max_length=5000)
