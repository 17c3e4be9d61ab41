from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import Project, ProjectMember


async def get_project_role(
    session: AsyncSession, project_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[Project, str] | None:
    """The project and the user's role in it (`owner` for its creator), or None if none.

    One query: every request under a project makes it."""
    found = (
        await session.execute(
            select(Project, ProjectMember.role)
            .outerjoin(
                ProjectMember,
                and_(ProjectMember.project_id == Project.id, ProjectMember.user_id == user_id),
            )
            .where(Project.id == project_id)
        )
    ).first()
    if found is None:
        return None
    project, role = found
    if project.owner_id == user_id:
        return project, "owner"
    return (project, role) if role is not None else None


def _visible_to(user_id: uuid.UUID) -> ColumnElement[bool]:
    member = select(ProjectMember.project_id).where(ProjectMember.user_id == user_id)
    return or_(Project.owner_id == user_id, Project.id.in_(member))


async def list_projects(
    session: AsyncSession, user_id: uuid.UUID, limit: int, offset: int
) -> tuple[Sequence[tuple[Project, str]], int]:
    """The projects a user created or is a member of, newest first, with their role in each."""
    total = await session.scalar(
        select(func.count()).select_from(Project).where(_visible_to(user_id))
    )
    member_role = (
        select(ProjectMember.role)
        .where(ProjectMember.project_id == Project.id, ProjectMember.user_id == user_id)
        .scalar_subquery()
    )
    result = await session.execute(
        select(Project, member_role)
        .where(_visible_to(user_id))
        .order_by(Project.created_at.desc(), Project.id)
        .limit(limit)
        .offset(offset)
    )
    rows = [
        (project, "owner" if project.owner_id == user_id else str(member_role))
        for project, member_role in result.all()
    ]
    return rows, total or 0
