from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, utcnow


class FindingResolution(IdMixin, Base):
    """A person's resolution of a consistency finding (reflists/findings.py).

    Findings themselves are computed from the stored values whenever they are read, so they
    follow every edit; a resolution is kept against the finding's id (case, variable, kind)
    and the values it saw, and applies while the finding still shows those values.
    """

    __tablename__ = "finding_resolutions"
    __table_args__ = (
        Index("ix_finding_resolutions_project_id_finding_id", "project_id", "finding_id"),
    )

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    finding_id: Mapped[str] = mapped_column(String(64))
    #: What the finding showed when resolved (a digest of its differing values).
    values_digest: Mapped[str] = mapped_column(String(64))
    #: "value" (the right value is `value`) or "both_correct".
    resolution: Mapped[str] = mapped_column(String(16))
    value: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True, default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    reviewer_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
