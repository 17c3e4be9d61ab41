from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from quarry.models import RunStatus


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_ids: Annotated[list[uuid.UUID], Field(max_length=100_000)] | None = Field(
        None, description="Documents to process; default: every ready document"
    )
    variable_ids: Annotated[list[uuid.UUID], Field(max_length=1000)] | None = Field(
        None, description="Variables to extract; default: the whole codebook"
    )


class RunCounts(BaseModel):
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    not_found: int = 0
    failed: int = 0
    cancelled: int = 0


class RunOut(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    status: RunStatus
    model: str
    settings: dict[str, Any]
    total: int = Field(description="Number of (document, variable) tasks")
    done: int = Field(description="Tasks that reached a final status")
    progress: float = Field(description="done / total, from 0 to 1")
    counts: RunCounts
    tokens_in: int
    tokens_out: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    level: str
    event: str
    message: str
    document_id: uuid.UUID | None
    variable_id: uuid.UUID | None
