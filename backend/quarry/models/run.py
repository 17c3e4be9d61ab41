from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class RunStatus(StrEnum):
    PREPARING = "preparing"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Statuses of a run that may still start tasks (see runs/lifecycle.py for the transitions).
ACTIVE_RUN_STATUSES = (RunStatus.PREPARING, RunStatus.QUEUED, RunStatus.RUNNING)
FINAL_RUN_STATUSES = (
    RunStatus.COMPLETED,
    RunStatus.COMPLETED_WITH_ERRORS,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
)


def _counter(big: bool = True) -> Any:
    """A count that starts at 0 (also for rows from before it existed)."""
    if big:
        return mapped_column(BigInteger, default=0, server_default="0")
    return mapped_column(default=0, server_default="0")


class Run(IdMixin, TimestampMixin, Base):
    """A processing job over selected documents × variables, with frozen model settings.

    The run row also carries what its task rows add up to (counts per status, tokens), kept
    by the lifecycle transitions in the same transaction as the task rows they change
    (runs/lifecycle.py), so reading a run's progress is one row whatever its size.
    """

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_status", "status"),)

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    status: Mapped[str] = mapped_column(String(32), default=RunStatus.QUEUED)
    model: Mapped[str] = mapped_column(String(200))
    #: What the run froze at creation (runs/snapshot.py: `RunSnapshot`), as JSON.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    #: Set when the run may start no new task although it is not over (its budget was
    #: reached): its tasks in flight finish, the others end cancelled with this reason.
    stop_reason: Mapped[str | None] = mapped_column(Text, default=None)
    #: The run's budget in USD; a run's one setting a user may change later (on retry).
    budget_usd: Mapped[float | None] = mapped_column(default=None)
    #: Estimated cost of the calls admitted under the budget and not yet stored.
    reserved_usd: Mapped[float] = mapped_column(default=0.0, server_default="0")

    # The plan (run_documents × run_variables) and how much of it has task rows yet.
    #: Run documents by ordinal (0 … document_count − 1; a deleted one leaves a gap).
    document_count: Mapped[int] = _counter(big=False)
    variable_count: Mapped[int] = _counter(big=False)
    #: Run documents (the ordinals below this) whose task rows exist.
    documents_prepared: Mapped[int] = _counter(big=False)
    #: The profiles each pair is asked of: 1, or 2 for a two-profile run (its snapshot's
    #: `second_profile`), which has a task row per pair and profile.
    profile_count: Mapped[int] = mapped_column(default=1, server_default="1")
    #: The tasks of the plan (pairs × profiles), with task rows yet or not.
    task_count: Mapped[int] = _counter()

    # Task rows by status, and the tokens their calls used.
    pending_count: Mapped[int] = _counter()
    running_count: Mapped[int] = _counter()
    succeeded_count: Mapped[int] = _counter()
    not_found_count: Mapped[int] = _counter()
    failed_count: Mapped[int] = _counter()
    cancelled_count: Mapped[int] = _counter()
    tokens_in: Mapped[int] = _counter()
    tokens_out: Mapped[int] = _counter()
    #: Of those, the tokens of a two-profile run's second-profile tasks (priced at that
    #: profile's price: runs/costs.py).
    second_tokens_in: Mapped[int] = _counter()
    second_tokens_out: Mapped[int] = _counter()

    #: Who is creating the run's task rows (a `preparing` run), and until when.
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def unprepared_count(self) -> int:
        """Pairs of the plan whose task rows do not exist yet."""
        created = (
            self.pending_count
            + self.running_count
            + self.succeeded_count
            + self.not_found_count
            + self.failed_count
            + self.cancelled_count
        )
        return max(self.task_count - created, 0)
