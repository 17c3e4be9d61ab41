from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

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


class UploadItemOut(DocumentOut):
    uploaded_filename: str = Field(
        description="The name this file was sent under (cleaned like `filename`). For a "
        "duplicate it can differ from `filename`, the name the document was first uploaded "
        "under, which it keeps."
    )
    duplicate_of: uuid.UUID | None = Field(
        description="When the project already held these bytes (uploaded before, or earlier "
        "in this same upload): the id of that document, which is the one shown, and nothing "
        "new was stored for this file. Null when this file became a new document."
    )

    @classmethod
    def of_upload(
        cls, document: Document, uploaded_filename: str, duplicate: bool
    ) -> UploadItemOut:
        shown = DocumentOut.of(document)
        return cls(
            **dict(shown),
            uploaded_filename=uploaded_filename,
            duplicate_of=shown.id if duplicate else None,
        )


class UploadOut(BaseModel):
    items: list[UploadItemOut] = Field(description="One per file sent, in the order sent.")
    created: int = Field(
        description="How many new documents this upload stored; 0 when every file was "
        "already in the project (the answer is then 200, not 201)."
    )


class PageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    text: str
    char_start: int
    char_end: int
    text_source: Literal["text_layer", "ocr"] | None = Field(
        None,
        description="How the page's text was read: from the PDF's text layer, or by OCR (a "
        "scanned page or an image); null for DOCX and text documents",
    )
    ocr_confidence: float | None = Field(
        None, description="Mean OCR confidence of the page's words, 0..100 (OCR pages only)"
    )
    width: float | None = Field(
        None, description="The page's width in page units (PDF points, or image pixels)"
    )
    height: float | None = Field(None, description="The page's height in page units")
    note: str | None = Field(
        None, description="Why the page could not be read (e.g. its OCR timed out), if so"
    )


class DocumentTextOut(BaseModel):
    document_id: uuid.UUID
    status: DocumentStatus
    page_count: int
    pages: list[PageOut]
