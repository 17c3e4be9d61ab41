from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, utcnow


class MatchReview(IdMixin, Base):
    """A person's choice of the reference row a cell's value refers to (or of none).

    Like value reviews, rows are never updated: the newest is the cell's match, earlier ones
    are its history, and a later run or rematch does not overrule it.
    """

    __tablename__ = "match_reviews"
    __table_args__ = (
        Index("ix_match_reviews_document_id_variable_id", "document_id", "variable_id"),
    )

    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    variable_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("variables.id", ondelete="CASCADE"))
    extraction_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    list_version_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    #: The chosen row's key (its key_column), or None: "no row of the list is this one".
    key: Mapped[str | None] = mapped_column(String(500), default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    reviewer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
