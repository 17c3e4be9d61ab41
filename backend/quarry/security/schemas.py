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
        description="auth.sign_in, auth.sign_in_failed, project.deleted, variable.deleted, "
        "document.deleted, project.exported, review.recorded, review.adjudicated, "
        "review.assigned, project.review_settings_changed …"
    )
    target_type: str | None = Field(description="user, project, variable, document or review")
    target_id: uuid.UUID | None
    ip: str | None = Field(description="The client's IP address")
    request_id: str | None = Field(description="The X-Request-ID of the request, as in the logs")
    detail: dict[str, Any]
