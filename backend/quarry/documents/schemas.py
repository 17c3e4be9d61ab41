from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from quarry.models import DocumentStatus


class DocumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    status: DocumentStatus
    error: str | None
    page_count: int | None
    char_count: int | None
    created_at: datetime
    updated_at: datetime


class UploadOut(BaseModel):
    items: list[DocumentOut]


class PageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    text: str
    char_start: int
    char_end: int


class DocumentTextOut(BaseModel):
    document_id: uuid.UUID
    status: DocumentStatus
    page_count: int
    pages: list[PageOut]
