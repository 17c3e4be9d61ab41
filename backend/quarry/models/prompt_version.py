from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, utcnow


class PromptVersion(IdMixin, Base):
    """An immutable rendering of a variable's prompt; every extraction records the one it used."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("variable_id", "version"),)

    variable_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("variables.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int]
    # The extraction-relevant fields the prompt was rendered from, and their hash.
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
