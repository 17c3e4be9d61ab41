from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, utcnow


class LlmUsage(Base):
    """Prompt sizes and the tokens the provider counted for them, summed per profile (`key`:
    `profile:<id>`, or `env:<model>` for the environment's profile): the observed tokens per
    character that token estimates are calibrated with (runs/estimate.py)."""

    __tablename__ = "llm_usage"

    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    prompt_chars: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_messages: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
