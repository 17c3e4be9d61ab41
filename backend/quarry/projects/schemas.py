from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from quarry.projects.roles import ROLE_PERMISSIONS, Permission, Role

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Model = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Temperature = Annotated[float, Field(ge=0, le=2)]
GroupSize = Annotated[int, Field(ge=1, le=20)]


class CaseKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variable: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)
    ] = Field(
        description="The variable whose value groups documents into cases; when it is matched "
        "to a reference list, its matched row's key (a reviewer's choice winning) is the case"
    )


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Annotated[str, Field(max_length=10_000)] = ""
    llm_model: Model | None = Field(
        None, description="Default model for runs; server default if null"
    )
    llm_temperature: Temperature | None = None
    group_size: GroupSize = Field(1, description="Variables per LLM call (1 = one call each)")


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Annotated[str, Field(max_length=10_000)] | None = None
    llm_model: Model | None = None
    llm_temperature: Temperature | None = None
    group_size: GroupSize | None = None
    case_key: CaseKey | None = Field(
        None, description="What groups documents into cases; null: no cases"
    )
    review_mode: Literal["single", "dual"] | None = Field(
        None,
        description="Review settings (an owner changes them): single, one person's review is "
        "a cell's; dual, two assigned reviewers review each document independently and "
        "conflicts are adjudicated",
    )
    review_blind: bool | None = Field(
        None,
        description="Dual review: reviewers see the model's value of a cell only once they "
        "have reviewed it",
    )
    adjudicator_id: uuid.UUID | None = Field(
        None,
        description="Who besides the owner resolves conflicts: a member who may review "
        "(null: only owners)",
    )


#: The review settings: changing them needs the manage permission (an owner).
REVIEW_SETTINGS = frozenset({"review_mode", "review_blind", "adjudicator_id"})


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    llm_model: str | None
    llm_temperature: float | None
    group_size: int
    case_key: CaseKey | None = None
    review_mode: Literal["single", "dual"] = "single"
    review_blind: bool = False
    adjudicator_id: uuid.UUID | None = None
    role: Role = Field(
        Role.OWNER, description="Your role in this project (owner, editor, reviewer, viewer)"
    )
    permissions: list[Permission] = Field(
        default_factory=lambda: list(Permission),
        description="What your role allows here (read, review, edit, manage): a client shows "
        "only the controls these allow",
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, project: object, role: str) -> ProjectOut:
        out = cls.model_validate(project)
        out.role = Role(role)
        out.permissions = [p for p in Permission if p in ROLE_PERMISSIONS[out.role]]
        return out
