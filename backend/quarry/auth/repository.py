from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import User


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == email))
    return result.scalar_one_or_none()


async def get_user_by_password_token(session: AsyncSession, token_hash: str) -> User | None:
    """The user whose outstanding set-password link hashes to `token_hash` (unique)."""
    result = await session.execute(select(User).where(User.password_token_hash == token_hash))
    return result.scalar_one_or_none()


async def count_active_admins(session: AsyncSession) -> int:
    total = await session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.is_admin.is_(True), User.is_active.is_(True))
    )
    return total or 0
