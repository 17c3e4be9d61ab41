from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class DocumentStatus(StrEnum):
    UPLOADED = "uploaded"
    PARSING = "parsing"
    READY = "ready"
    FAILED = "failed"


class Document(IdMixin, TimestampMixin, Base):
    __tablename__ = "documents"
    # The same bytes uploaded twice to one project are one document.
    __table_args__ = (
        UniqueConstraint("project_id", "sha256"),
        # The parse work list: documents waiting for, or in, parsing (documents/lifecycle.py).
        Index(
            "ix_documents_unparsed",
            "created_at",
            sqlite_where=text("status IN ('uploaded', 'parsing')"),
            postgresql_where=text("status IN ('uploaded', 'parsing')"),
        ),
        # A project's documents in upload order: the documents list and the exports walk it.
        Index("ix_documents_upload_order", "project_id", "created_at", "filename", "id"),
    )

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.UPLOADED)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    page_count: Mapped[int | None] = mapped_column(default=None)
    char_count: Mapped[int | None] = mapped_column(default=None)
    #: Who is parsing the document, and until when (a lease, renewed while the parse runs).
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    #: How many times a parse of it was started: one that keeps killing its parser stops.
    parse_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
