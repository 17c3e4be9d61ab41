from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text, true
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, TimestampMixin


class Webhook(IdMixin, TimestampMixin, Base):
    """Where a project's events are sent (webhooks/): an HTTPS/HTTP endpoint signed with
    `secret`, or (channel `email`) the project owner's mailbox. `events` lists the event
    names it receives. The secret is only ever shown in full when it is created."""

    __tablename__ = "webhooks"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    #: `webhook` (an HTTP endpoint) or `email` (the project owner, through QUARRY_SMTP_URL).
    channel: Mapped[str] = mapped_column(String(16), default="webhook", server_default="webhook")
    url: Mapped[str | None] = mapped_column(String(2000), default=None)
    secret: Mapped[str | None] = mapped_column(String(200), default=None)
    events: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True, server_default=true())


class Delivery(IdMixin, Base):
    """One event to send to one webhook: the outbox row, written in the transaction of the
    event itself, and its delivery log (webhooks/lifecycle.py holds its transitions)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_webhook_id_created_at", "webhook_id", "created_at"),
        # The senders' work list: only rows still to send are in it.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(64))
    #: The JSON body sent (ids and counts, never document text).
    payload: Mapped[dict[str, Any]] = mapped_column()
    #: pending (to send, now or at next_attempt_at), delivered, failed (gave up).
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Retries stop after this (then the delivery is failed); set by the first attempt.
    give_up_at: Mapped[datetime | None] = mapped_column(default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The last attempt: HTTP status (None: no answer), what went wrong, when.
    response_status: Mapped[int | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime]
