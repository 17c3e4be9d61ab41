from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class Project(IdMixin, TimestampMixin, Base):
    """A user's extraction project; holds default LLM settings, never API keys."""

    __tablename__ = "projects"

    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # None means "use the server default" (QUARRY_LLM_MODEL / QUARRY_LLM_TEMPERATURE).
    llm_model: Mapped[str | None] = mapped_column(String(200), default=None)
    llm_temperature: Mapped[float | None] = mapped_column(default=None)
    group_size: Mapped[int] = mapped_column(default=1)
    #: What groups documents into cases: {"variable": name} (its matched key when it is
    #: matched to a reference list, else its value); None: no cases.
    case_key: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)
    #: single: one person's review is a cell's; dual: two assigned reviewers review each
    #: document independently and an adjudicator resolves their conflicts (quarry.reviewing).
    review_mode: Mapped[str] = mapped_column(String(8), default="single", server_default="single")
    #: Dual review: reviewers see the model's value of a cell only once they have reviewed it.
    review_blind: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: Who besides the owner resolves dual-review conflicts (a member who may review).
    adjudicator_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
