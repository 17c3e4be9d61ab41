from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, Text, UniqueConstraint
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
