from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class LlmBatch(IdMixin, TimestampMixin, Base):
    """One provider batch a run's calls were submitted as (batches/lifecycle.py holds its
    transitions): the provider's ids, its status and counts as last polled, who polls it and
    when next, and what of it was ingested. The tasks it answers are the run's running tasks
    whose lease owner is `owner` (``batch:<id>``), so a restart finds them again."""

    __tablename__ = "llm_batches"
    __table_args__ = (Index("ix_llm_batches_run_id", "run_id"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    #: submitting, then the provider's: validating, in_progress, finalizing, completed,
    #: failed, expired, cancelling, cancelled.
    status: Mapped[str] = mapped_column(String(16), default="submitting")
    provider_batch_id: Mapped[str | None] = mapped_column(String(200), default=None)
    input_file_id: Mapped[str | None] = mapped_column(String(200), default=None)
    output_file_id: Mapped[str | None] = mapped_column(String(200), default=None)
    error_file_id: Mapped[str | None] = mapped_column(String(200), default=None)
    #: Requests (lines) submitted, and the tasks they answer (more with grouped calls).
    requests: Mapped[int] = mapped_column(default=0)
    tasks: Mapped[int] = mapped_column(default=0)
    #: The provider's request counts at the last poll.
    completed_count: Mapped[int] = mapped_column(default=0)
    failed_count: Mapped[int] = mapped_column(default=0)
    #: Tokens of the batch's answers that were ingested (billed at the batch price).
    tokens_in: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_out: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    #: The process polling it, until when, and when it is polled next (with backoff).
    poll_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    poll_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    next_poll_at: Mapped[datetime | None] = mapped_column(default=None)
    poll_interval: Mapped[float] = mapped_column(default=0.0)
    #: When its tasks' lease ends: the completion window and a margin (then the sweeper
    #: hands them back, should the batch never be heard of again).
    deadline_at: Mapped[datetime]
    #: Set once its answers are stored and its leftovers handed back: nothing more to do.
    ingested_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def owner(self) -> str:
        return batch_owner(self.id)


def batch_owner(batch_id: uuid.UUID) -> str:
    """The lease owner of the tasks a batch answers (fits `extractions.lease_owner`)."""
    return f"batch:{batch_id.hex}"
