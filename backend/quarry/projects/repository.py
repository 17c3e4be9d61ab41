from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import Project


async def get_owned_project(
    session: AsyncSession, project_id: uuid.UUID, owner_id: uuid.UUID
) -> Project | None:
    result = await session.execute(
        select(Project).where(Project.id == project_id, Project.owner_id == owner_id)
    )
    return result.scalar_one_or_none()


async def list_projects(
    session: AsyncSession, owner_id: uuid.UUID, limit: int, offset: int
) -> tuple[Sequence[Project], int]:
    total = await session.scalar(
        select(func.count()).select_from(Project).where(Project.owner_id == owner_id)
    )
    result = await session.execute(
        select(Project)
        .where(Project.owner_id == owner_id)
        .order_by(Project.created_at.desc(), Project.id)
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all(), total or 0
