from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin


class DocumentPage(IdMixin, Base):
    """A page's text and where it sits in the document's full text (for evidence spans)."""

    __tablename__ = "document_pages"
    __table_args__ = (UniqueConstraint("document_id", "number"),)

    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    number: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    char_start: Mapped[int]
    char_end: Mapped[int]
    #: `text_layer` or `ocr` (documents/parsing/layout.py); null for DOCX and text.
    text_source: Mapped[str | None] = mapped_column(String(16), default=None)
    #: Mean OCR confidence of the page's words, 0..100 (OCR pages only).
    ocr_confidence: Mapped[float | None] = mapped_column(default=None)
    #: The page's size in page units (PDF points, or an image's pixels).
    width: Mapped[float | None] = mapped_column(default=None)
    height: Mapped[float | None] = mapped_column(default=None)
    #: Every word's box: rows of [start, end, x0, y0, x1, y1, confidence], offsets in `text`.
    #: Deferred: only a run's tasks need it (for evidence boxes), with `undefer`; the text
    #: view and the estimate read pages without it.
    words: Mapped[Any] = mapped_column(
        JSON(none_as_null=True),
        nullable=True,
        default=None,
        deferred=True,
        deferred_raiseload=True,
    )
    #: Why the page could not be read (its OCR timed out or failed), for the user.
    note: Mapped[str | None] = mapped_column(Text, default=None)
