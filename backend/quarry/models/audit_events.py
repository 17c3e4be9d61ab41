from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from quarry.models.base import Base, IdMixin, utcnow


class AuditEvent(IdMixin, Base):
    """One security-relevant action: a sign-in (or a failed one), a deletion, an export, a
    change of who may do what (users, members, roles).

    Rows are only ever inserted. `user_id`, `target_id` and `project_id` carry no foreign
    keys on purpose: the record of who deleted what must outlive the user and the object it
    names.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        # A user reads their own events, newest first.
        Index("ix_audit_events_user_id_created_at", "user_id", "created_at"),
        # A project's owner reads the project's events, newest first.
        Index("ix_audit_events_project_id_created_at", "project_id", "created_at"),
        # Administrators read the user-administration events (a few kinds), newest first.
        Index("ix_audit_events_action_created_at", "action", "created_at"),
    )

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The acting user; for a failed sign-in, the account it was aimed at (None if unknown).
    user_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32), default=None)
    target_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    #: The project the action was taken in (None outside any project, e.g. a sign-in).
    project_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
