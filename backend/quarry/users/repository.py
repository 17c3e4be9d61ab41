from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import User


async def list_users(session: AsyncSession, limit: int, offset: int) -> tuple[Sequence[User], int]:
    """Every user, by email."""
    total = await session.scalar(select(func.count()).select_from(User))
    result = await session.execute(
        select(User).order_by(User.email, User.id).limit(limit).offset(offset)
    )
    return result.scalars().all(), total or 0


async def lock_active_admins(session: AsyncSession) -> None:
    """Lock every active administrator's row until the transaction ends (PostgreSQL;
    SQLite has one writer at a time anyway), so that changes that could leave no
    administrator are made one after the other, each seeing the one before."""
    await session.execute(
        select(User.id).where(User.is_admin.is_(True), User.is_active.is_(True)).with_for_update()
    )
