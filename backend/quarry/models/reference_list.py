from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin, utcnow


class ReferenceList(IdMixin, TimestampMixin, Base):
    """A named table a project's values are matched to (clients, patients, studies).

    Its content lives in versions: replacing a list uploads a new version and keeps the old
    ones, so an extraction matched against version 1 can still show the row it matched.
    """

    __tablename__ = "reference_lists"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    #: The version in use (the newest upload).
    current_version_id: Mapped[uuid.UUID | None] = mapped_column(default=None)


class ReferenceListVersion(IdMixin, Base):
    """One upload of a reference list: its columns in file order and how many rows it has."""

    __tablename__ = "reference_list_versions"
    __table_args__ = (UniqueConstraint("list_id", "version"),)

    list_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("reference_lists.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    columns: Mapped[list[Any]] = mapped_column(JSON, default=list)
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReferenceRow(Base):
    """One row of a reference list version: its cells as text, by column header.

    `row_number` is the row's line in the uploaded sheet (the header is row 1), so what a
    user sees in a match points at the row in their own file.
    """

    __tablename__ = "reference_rows"

    version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("reference_list_versions.id", ondelete="CASCADE"), primary_key=True
    )
    row_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
