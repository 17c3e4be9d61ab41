from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from quarry.documents.parsing import DocumentKind, reading_notes
from quarry.models import Document, DocumentStatus


# Built with `DocumentOut.of` (its notes are derived, not a column); a comment, not a
# docstring, since a docstring would become the schema's description in the OpenAPI.
class DocumentOut(BaseModel):
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
    notes: list[str] = Field(
        description="What the user should know about how the document was read, as "
        "sentences: e.g. a file named .docx whose content is plain text is read as text, "
        "and says so here. Empty for most documents.",
    )

    @classmethod
    def of(cls, document: Document) -> DocumentOut:
        """The representation of `document`, with its notes (derived, not a column)."""
        columns = {name: getattr(document, name) for name in cls.model_fields if name != "notes"}
        return cls(**columns, notes=reading_notes(DocumentKind(document.kind), document.filename))


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
