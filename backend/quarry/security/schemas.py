from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    created_at: datetime
    action: str = Field(
        description="What happened: auth.sign_in, auth.sign_in_failed, project.deleted, "
        "variable.deleted, document.deleted, profile.deleted, webhook.deleted, "
        "reference_list.deleted, project.exported; review.recorded, review.adjudicated, "
        "review.assigned, project.review_settings_changed; member.added, member.role_changed, "
        "member.removed; user.created, user.deactivated, user.reactivated, "
        "user.admin_granted, user.admin_revoked, user.password_reset, user.password_changed, "
        "user.password_set"
    )
    user_id: uuid.UUID | None = Field(
        description="Who did it (for a failed sign-in: the account aimed at, if it exists)"
    )
    target_type: str | None = Field(
        description="What it was done to: user, project, variable, document, …"
    )
    target_id: uuid.UUID | None
    user_email: str | None = Field(
        None, description="The acting user's email (none if that user no longer exists)"
    )
    project_id: uuid.UUID | None = Field(description="The project it was done in, if any")
    ip: str | None = Field(description="The client's IP address")
    request_id: str | None = Field(description="The X-Request-ID of the request, as in the logs")
    detail: dict[str, Any]

    @classmethod
    def of(cls, event: Any, user_email: str | None) -> AuditEventOut:
        out = cls.model_validate(event)
        out.user_email = user_email
        return out
