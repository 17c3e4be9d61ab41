from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from quarry.projects.roles import Role

Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=320)]


class MemberOut(BaseModel):
    """Someone with a role in the project; its creator is listed too, as owner."""

    user_id: uuid.UUID
    email: str
    role: Role
    is_creator: bool = Field(
        description="The project's creator: always an owner, never removed nor demoted"
    )
    is_active: bool = Field(description="false: the account is deactivated")
    added_at: datetime = Field(description="When they were added (the creator: created)")


class MemberAdd(BaseModel):
    email: Email = Field(description="The email of an existing user")
    role: Role


class MemberUpdate(BaseModel):
    role: Role
