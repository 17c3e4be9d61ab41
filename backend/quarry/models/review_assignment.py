from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, utcnow


class ReviewAssignment(IdMixin, Base):
    """One of a document's two reviewer slots in dual review (slot 1: reviewer A, 2: B).

    A document has at most one reviewer per slot, and a reviewer at most one slot of a
    document, so its two reviewers are always two people. Reassigning a slot replaces its
    row; the reviews already made stay in the reviews' history.
    """

    __tablename__ = "review_assignments"
    __table_args__ = (
        UniqueConstraint("document_id", "slot"),
        UniqueConstraint("document_id", "reviewer_id"),
        # A reviewer's queue.
        Index("ix_review_assignments_project_id_reviewer_id", "project_id", "reviewer_id"),
    )

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    slot: Mapped[int] = mapped_column(SmallInteger)
    reviewer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: manual (by an owner), auto (split evenly), claim (taken by the reviewer from the pool).
    method: Mapped[str] = mapped_column(String(8), default="manual")
    assigned_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
