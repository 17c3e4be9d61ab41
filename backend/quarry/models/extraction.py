from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class ExtractionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    NOT_FOUND = "not_found"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_EXTRACTION_STATUSES = (
    ExtractionStatus.SUCCEEDED,
    ExtractionStatus.NOT_FOUND,
    ExtractionStatus.FAILED,
    ExtractionStatus.CANCELLED,
)


class Extraction(IdMixin, TimestampMixin, Base):
    """One (run, document, variable) task and its result; the row is the source of truth."""

    __tablename__ = "extractions"
    __table_args__ = (
        UniqueConstraint("run_id", "document_id", "variable_id"),
        Index("ix_extractions_run_id_status", "run_id", "status"),
        Index("ix_extractions_document_id_variable_id", "document_id", "variable_id"),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    variable_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("variables.id", ondelete="CASCADE"))
    prompt_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("prompt_versions.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(16), default=ExtractionStatus.PENDING)
    # JSON(none_as_null) so "not stated" is SQL NULL rather than the JSON literal null.
    value: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True, default=None)
    raw_output: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True, default=None)
    evidence: Mapped[str | None] = mapped_column(Text, default=None)
    page: Mapped[int | None] = mapped_column(default=None)
    char_start: Mapped[int | None] = mapped_column(default=None)
    char_end: Mapped[int | None] = mapped_column(default=None)
    grounded: Mapped[bool | None] = mapped_column(default=None)
    #: How the quote was found: exact, normalised or fuzzy (runs/grounding.py), and the
    #: similarity of quote and span (1.0 unless fuzzy).
    grounding_method: Mapped[str | None] = mapped_column(String(16), default=None)
    grounding_score: Mapped[float | None] = mapped_column(default=None)
    confidence: Mapped[float | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    tokens_in: Mapped[int] = mapped_column(default=0)
    tokens_out: Mapped[int] = mapped_column(default=0)
    latency_ms: Mapped[int | None] = mapped_column(default=None)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    cached: Mapped[bool] = mapped_column(default=False)
    #: What determines the answer (document content, rendered prompt, model settings), hashed:
    #: a later task with the same key may reuse this row's answer (runs/cache.py).
    cache_key: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    #: Page numbers whose text the model was shown.
    pages_sent: Mapped[list[int] | None] = mapped_column(JSON, default=None)
    # The lease: who is working on the task and until when (at-least-once delivery).
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
