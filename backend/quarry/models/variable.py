from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class Variable(IdMixin, TimestampMixin, Base):
    """One codebook entry: a spreadsheet column the user wants extracted."""

    __tablename__ = "variables"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(32))
    allowed_values: Mapped[list[Any]] = mapped_column(default=list)
    unit: Mapped[str | None] = mapped_column(String(50), default=None)
    examples: Mapped[list[Any]] = mapped_column(default=list)
    instructions: Mapped[str] = mapped_column(Text, default="")
    required: Mapped[bool] = mapped_column(default=False)
    position: Mapped[int] = mapped_column(default=0)
    #: Matching the value to a reference list: {list, column, key_column, method,
    #: thresholds} (reflists/settings.py); None: not matched. Not part of the prompt.
    match: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    #: How a case combines this variable across its documents: {rule, by} (reflists/cases.py).
    combine: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    #: Consistency checks: {must_agree_within_case, must_agree_with_reference, tolerance}.
    checks: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
