"""The audit log: who signed in (or tried to), deleted, exported or reviewed what, who changed who
may do what (users, project members and their roles), from where.

An event recorded while serving a request about a project (a route under
/projects/{project_id}, whose access check leaves the project's id on the request) belongs
to that project: its owner reads it at GET /projects/{project_id}/audit-events. Events
about users (`user.*`) are read by administrators at GET /users/audit-events.

Events are written in the request's own session, so they commit together with the action
and vanish with it on a rollback — an export or deletion that failed left nothing to audit.
The exception is a failed sign-in: the request fails by design, so it is written in a
session of its own. Passwords are never recorded; the submitted user name is recorded only
when it looks like an email address (someone may have typed their password into it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep, session_scope
from quarry.models import AuditEvent, User
from quarry.security import repository
from quarry.security.ratelimit import client_ip

log = structlog.get_logger(__name__)

_MAX_RECORDED_EMAIL = 320


class AuditAction(StrEnum):
    SIGN_IN = "auth.sign_in"
    SIGN_IN_FAILED = "auth.sign_in_failed"
    PROJECT_DELETED = "project.deleted"
    VARIABLE_DELETED = "variable.deleted"
    DOCUMENT_DELETED = "document.deleted"
    PROFILE_DELETED = "profile.deleted"
    WEBHOOK_DELETED = "webhook.deleted"
    REFERENCE_LIST_DELETED = "reference_list.deleted"
    EXPORTED = "project.exported"
    REVIEW_RECORDED = "review.recorded"
    CONFLICT_RESOLVED = "review.adjudicated"
    REVIEWERS_ASSIGNED = "review.assigned"
    REVIEW_SETTINGS_CHANGED = "project.review_settings_changed"
    # A project's members (target: the member's user; detail: their email and role).
    MEMBER_ADDED = "member.added"
    MEMBER_ROLE_CHANGED = "member.role_changed"
    MEMBER_REMOVED = "member.removed"
    # User administration (target: the user; detail: their email).
    USER_CREATED = "user.created"
    USER_DEACTIVATED = "user.deactivated"
    USER_REACTIVATED = "user.reactivated"
    USER_ADMIN_GRANTED = "user.admin_granted"
    USER_ADMIN_REVOKED = "user.admin_revoked"
    # Names of events, not passwords (S105).
    USER_PASSWORD_RESET = "user.password_reset"  # noqa: S105 - by an administrator
    USER_PASSWORD_CHANGED = "user.password_changed"  # noqa: S105 - by the user
    USER_PASSWORD_SET = "user.password_set"  # noqa: S105 - by the user, with a link


#: The events administrators read: those about users.
USER_ACTIONS = frozenset(a for a in AuditAction if a.value.startswith("user."))


def _request_id(request: Request) -> str | None:
    request_id = getattr(request.state, "request_id", None)
    return str(request_id) if request_id else None


def build_event(
    request: Request,
    action: AuditAction,
    *,
    user_id: uuid.UUID | None,
    target_type: str | None = None,
    target_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    project_id = getattr(request.state, "project_id", None)
    return AuditEvent(
        user_id=user_id,
        action=action.value,
        target_type=target_type,
        target_id=target_id,
        project_id=project_id if isinstance(project_id, uuid.UUID) else None,
        ip=client_ip(request)[:64],
        request_id=_request_id(request),
        detail=detail or {},
    )


async def record(
    session: AsyncSession,
    request: Request,
    action: AuditAction,
    *,
    user_id: uuid.UUID | None,
    target_type: str | None = None,
    target_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an event to the request's transaction: it commits (or not) with the action."""
    event = build_event(
        request,
        action,
        user_id=user_id,
        target_type=target_type,
        target_id=target_id,
        detail=detail,
    )
    session.add(event)
    await session.flush()
    log.info(
        "audit.event",
        action=event.action,
        user_id=str(user_id) if user_id else None,
        target_type=target_type,
        target_id=str(target_id) if target_id else None,
    )


async def list_events(
    session: AsyncSession,
    user_id: uuid.UUID,
    limit: int,
    offset: int,
    action: AuditAction | None = None,
) -> tuple[Sequence[AuditEvent], int]:
    """One page of a user's own events (of one kind, if given), newest first, and the total."""
    return await repository.list_audit_events(
        session, user_id, limit, offset, action.value if action else None
    )


async def list_project_events(
    session: AsyncSession,
    project_id: uuid.UUID,
    limit: int,
    offset: int,
    action: AuditAction | None = None,
) -> tuple[Sequence[AuditEvent], int]:
    """One page of the events taken in a project (by anyone), newest first, and the total."""
    return await repository.list_project_audit_events(
        session, project_id, limit, offset, action.value if action else None
    )


async def list_user_events(
    session: AsyncSession, limit: int, offset: int, action: AuditAction | None = None
) -> tuple[Sequence[AuditEvent], int]:
    """One page of the user-administration events (`user.*`), newest first, and the total."""
    if action is not None and action not in USER_ACTIONS:
        return [], 0
    actions = [action.value] if action else sorted(a.value for a in USER_ACTIONS)
    return await repository.list_audit_events_of_kinds(session, actions, limit, offset)


async def emails_of(session: AsyncSession, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Who the acting users of a page of events are, by id."""
    return await repository.emails_of(session, user_ids)


def submitted_email(username: str) -> str:
    """What a failed sign-in records of the user name: the address, never anything else."""
    text = username.strip().lower()
    if "@" in text and " " not in text and len(text) <= _MAX_RECORDED_EMAIL:
        return text
    return "(not an email address)"


async def record_failed_sign_in(
    request: Request, username: str, user_id: uuid.UUID | None, reason: str
) -> None:
    """Write a failed sign-in in its own transaction: the request itself will roll back."""
    try:
        async with session_scope(request.app.state.sessionmaker) as session:
            await record(
                session,
                request,
                AuditAction.SIGN_IN_FAILED,
                user_id=user_id,
                target_type="user" if user_id else None,
                target_id=user_id,
                detail={"email": submitted_email(username), "reason": reason},
            )
    except Exception:
        # Losing one audit row must not turn a 401 into a 500; the log line still exists.
        log.exception("audit.write_failed", action=AuditAction.SIGN_IN_FAILED.value)


@dataclass(frozen=True)
class Auditor:
    """`record` bound to the request, its session and the signed-in user (see `AuditDep`)."""

    session: AsyncSession
    request: Request
    user: User

    async def record(
        self,
        action: AuditAction,
        target_type: str,
        target_id: uuid.UUID,
        **detail: Any,
    ) -> None:
        await record(
            self.session,
            self.request,
            action,
            user_id=self.user.id,
            target_type=target_type,
            target_id=target_id,
            detail=detail,
        )


def _auditor(session: SessionDep, request: Request, user: CurrentUser) -> Auditor:
    return Auditor(session=session, request=request, user=user)


AuditDep = Annotated[Auditor, Depends(_auditor)]
"""For routers: `audit: AuditDep`, then `await audit.record(AuditAction.X, "thing", id, …)`."""
