"""What a run is over: its documents and variables, in order (the run's plan).

A run's task rows are the cross product of these two, created from them with set-based SQL
(runs/lifecycle.py), the pair (document ordinal d, variable ordinal v) getting the sequence
number d × variable_count + v: document-major, in upload and codebook order.
"""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base


class RunDocument(Base):
    __tablename__ = "run_documents"
    __table_args__ = (Index("ix_run_documents_document_id", "document_id"),)

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    ordinal: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))


class RunVariable(Base):
    __tablename__ = "run_variables"
    __table_args__ = (Index("ix_run_variables_variable_id", "variable_id"),)

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    ordinal: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    variable_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("variables.id", ondelete="CASCADE"))
    #: The prompt version the run froze for the variable.
    prompt_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("prompt_versions.id", ondelete="CASCADE")
    )
