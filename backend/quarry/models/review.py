from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, utcnow


class ReviewStatus(StrEnum):
    ACCEPTED = "accepted"
    CORRECTED = "corrected"
    REJECTED = "rejected"


class ReviewKind(StrEnum):
    """What a verdict is (see quarry.reviewing.verdicts for which one a cell's value takes)."""

    SINGLE = "single"  # a review in single-review mode: the newest is the cell's
    INDEPENDENT = "independent"  # one of the two assigned reviewers' verdicts in dual review
    ADJUDICATION = "adjudication"  # an owner's or adjudicator's resolution of a conflict


class Review(IdMixin, Base):
    """A person's verdict on (document, variable); rows are never updated, so history is kept."""

    __tablename__ = "reviews"
    __table_args__ = (
        Index("ix_reviews_document_id_variable_id", "document_id", "variable_id"),
        # Deleting extractions (a project, a document) looks up the reviews pointing at them.
        Index("ix_reviews_extraction_id", "extraction_id"),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    variable_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("variables.id", ondelete="CASCADE"))
    extraction_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("extractions.id", ondelete="SET NULL"), default=None
    )
    status: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(
        String(16), default=ReviewKind.SINGLE, server_default=ReviewKind.SINGLE.value
    )
    value: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True, default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    reviewer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
