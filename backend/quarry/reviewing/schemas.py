from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from quarry.models import ReviewStatus
from quarry.projects.roles import Role

Slot = Literal["a", "b"]


class SlotReviewer(BaseModel):
    user_id: uuid.UUID
    email: str
    reviewed: int = Field(
        description="How many of the document's variables this reviewer has given a verdict on"
    )


class DocumentAssignmentOut(BaseModel):
    document_id: uuid.UUID
    filename: str
    reviewer_a: SlotReviewer | None = Field(description="The document's first reviewer (slot A)")
    reviewer_b: SlotReviewer | None = Field(description="Its second reviewer (slot B)")
    variables: int = Field(description="Variables of the codebook: the cells each reviewer has")


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=1000)]
    reviewer_a: uuid.UUID | None = Field(
        None, description="Reviewer A of these documents (null: slot A is free)"
    )
    reviewer_b: uuid.UUID | None = Field(
        None, description="Reviewer B (null: free); never the same person as A"
    )


class AutoAssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviewer_ids: Annotated[list[uuid.UUID], Field(max_length=200)] | None = Field(
        None,
        description="Whom to split the documents between (at least two people who may "
        "review); default: every member in the reviewer role",
    )
    replace: bool = Field(
        False,
        description="Start over: clear every document's slots first (default: only free "
        "slots are filled, and assignments made so far stay)",
    )


class ReviewerLoad(BaseModel):
    user_id: uuid.UUID
    email: str
    documents: int = Field(description="Documents this reviewer is assigned to now")


class AutoAssignOut(BaseModel):
    documents: int = Field(description="Documents that were given a reviewer")
    slots_filled: int
    reviewers: list[ReviewerLoad]


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: Annotated[int, Field(ge=1, le=500)] = Field(
        10, description="How many documents to take from the unassigned pool (upload order)"
    )


class ReviewerOut(BaseModel):
    user_id: uuid.UUID
    email: str
    role: Role
    adjudicator: bool = Field(description="May resolve conflicts (the owner, or the adjudicator)")
    assigned_documents: int
    reviewed_cells: int = Field(description="Cells they have given an independent verdict on")


class VerdictOut(BaseModel):
    """One reviewer's current verdict in a conflict."""

    reviewer_id: uuid.UUID | None
    email: str | None
    status: ReviewStatus
    value: Any
    note: str
    created_at: datetime


class ModelAnswerOut(BaseModel):
    status: str = Field(description="The extraction's status (succeeded, not_found, failed …)")
    value: Any


class ResolutionOut(BaseModel):
    status: ReviewStatus
    value: Any
    note: str
    adjudicator_id: uuid.UUID | None
    email: str | None
    created_at: datetime


class ConflictOut(BaseModel):
    document_id: uuid.UUID
    filename: str
    variable_id: uuid.UUID
    variable: str = Field(description="The variable's name")
    status: Literal["open", "resolved"]
    reviewer_a: VerdictOut
    reviewer_b: VerdictOut
    model: ModelAnswerOut | None = Field(None, description="The model's current answer")
    resolution: ResolutionOut | None = Field(
        None, description="The adjudication: the cell's final value in exports"
    )


class ResolutionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    choose: Slot | None = Field(
        None, description="Take reviewer A's or B's verdict as the final one"
    )
    value: Any = Field(
        None,
        description="Or the final value itself (null: the document does not state it); "
        "exactly one of choose and value",
    )
    note: Annotated[str, StringConstraints(max_length=5000)] = ""


class AgreementFigure(BaseModel):
    comparison: str = Field(
        description="reviewers (reviewer A vs B), model_vs_a, model_vs_b, model_vs_final, or "
        "model_vs_reviewer (one person: reviewer_id)"
    )
    label: str = Field(description="The comparison in words, as the Agreement sheet shows it")
    reviewer_id: uuid.UUID | None = None
    compared: int = Field(description="Cells both sides have a verdict on")
    agreed: int
    agreement: float | None = Field(
        description="Share of compared cells where both sides agree (0..1; null: none compared)"
    )
    kappa: float | None = Field(
        description="Cohen's kappa (boolean and category variables; overall the pooled kappa "
        "of those); null otherwise, or when undefined"
    )


class VariableAgreementOut(BaseModel):
    variable_id: uuid.UUID
    name: str
    type: str
    measure: Literal["kappa", "within_tolerance", "exact"] = Field(
        description="kappa: percent agreement and Cohen's kappa; within_tolerance: numbers "
        "within the tolerance, dates at the precision of the less precise; exact: the same "
        "text, set or list after normalising"
    )
    figures: list[AgreementFigure]


class ToleranceOut(BaseModel):
    absolute: float
    relative: float


class AgreementOut(BaseModel):
    tolerance: ToleranceOut
    double_reviewed: int = Field(description="Cells both assigned reviewers have reviewed")
    conflicts: int = Field(description="Of those, the cells where they disagree")
    resolved: int = Field(description="Conflicts adjudicated")
    variables: list[VariableAgreementOut]
    overall: list[AgreementFigure]
