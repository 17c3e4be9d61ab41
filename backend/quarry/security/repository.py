from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import AuditEvent


async def list_audit_events(
    session: AsyncSession, user_id: uuid.UUID, limit: int, offset: int, action: str | None
) -> tuple[Sequence[AuditEvent], int]:
    """A user's own events, newest first."""
    where = [AuditEvent.user_id == user_id]
    if action is not None:
        where.append(AuditEvent.action == action)
    total = await session.scalar(select(func.count()).select_from(AuditEvent).where(*where))
    result = await session.execute(
        select(AuditEvent)
        .where(*where)
        .order_by(AuditEvent.created_at.desc(), AuditEvent.id)
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all(), total or 0
