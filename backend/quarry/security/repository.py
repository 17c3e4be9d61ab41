from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import AuditEvent, User


async def _page(
    session: AsyncSession, where: list[ColumnElement[bool]], limit: int, offset: int
) -> tuple[Sequence[AuditEvent], int]:
    total = await session.scalar(select(func.count()).select_from(AuditEvent).where(*where))
    result = await session.execute(
        select(AuditEvent)
        .where(*where)
        .order_by(AuditEvent.created_at.desc(), AuditEvent.id)
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all(), total or 0


async def list_audit_events(
    session: AsyncSession, user_id: uuid.UUID, limit: int, offset: int, action: str | None
) -> tuple[Sequence[AuditEvent], int]:
    """A user's own events, newest first."""
    where = [AuditEvent.user_id == user_id]
    if action is not None:
        where.append(AuditEvent.action == action)
    return await _page(session, where, limit, offset)


async def list_project_audit_events(
    session: AsyncSession, project_id: uuid.UUID, limit: int, offset: int, action: str | None
) -> tuple[Sequence[AuditEvent], int]:
    """The events taken in a project, newest first."""
    where = [AuditEvent.project_id == project_id]
    if action is not None:
        where.append(AuditEvent.action == action)
    return await _page(session, where, limit, offset)


async def list_audit_events_of_kinds(
    session: AsyncSession, actions: Sequence[str], limit: int, offset: int
) -> tuple[Sequence[AuditEvent], int]:
    """Everyone's events of the given kinds, newest first (administrators' view)."""
    return await _page(session, [AuditEvent.action.in_(actions)], limit, offset)


async def emails_of(session: AsyncSession, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The emails of those of `user_ids` who still exist (one query for a page of events)."""
    if not user_ids:
        return {}
    result = await session.execute(select(User.id, User.email).where(User.id.in_(user_ids)))
    return {user_id: email for user_id, email in result.all()}
