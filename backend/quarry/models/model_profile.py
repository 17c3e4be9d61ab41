from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class ModelProfileRow(IdMixin, TimestampMixin, Base):
    """A named model profile of a project (profiles/): where calls go and how they are made.

    Holds the *name* of the environment variable with the API key, never the key."""

    __tablename__ = "model_profiles"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    provider: Mapped[str] = mapped_column(String(32), default="openai")
    base_url: Mapped[str | None] = mapped_column(String(500), default=None)
    model: Mapped[str] = mapped_column(String(200))
    api_key_env: Mapped[str | None] = mapped_column(String(200), default=None)
    temperature: Mapped[float] = mapped_column(default=0.0)
    context_window: Mapped[int] = mapped_column(default=128_000)
    max_output_tokens: Mapped[int] = mapped_column(default=4096)
    concurrency: Mapped[int] = mapped_column(default=4)
    rpm: Mapped[int | None] = mapped_column(default=None)
    tpm: Mapped[int | None] = mapped_column(default=None)
    price_input: Mapped[float | None] = mapped_column(default=None)
    price_output: Mapped[float | None] = mapped_column(default=None)
    output_mode: Mapped[str] = mapped_column(String(16), default="auto")
    #: The structured-output mode `auto` found to work with this server (None: not yet).
    learned_mode: Mapped[str | None] = mapped_column(String(16), default=None)
    timeout_seconds: Mapped[float] = mapped_column(default=120.0)
    #: Submit a run's calls through the provider's batch API (files + batches endpoints).
    batch: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: The share of the price a batch's calls are not billed (0.5: half price).
    batch_discount: Mapped[float] = mapped_column(default=0.5, server_default="0.5")
