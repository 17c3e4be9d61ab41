from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import PromptVersion, Variable


async def list_variables(session: AsyncSession, project_id: uuid.UUID) -> Sequence[Variable]:
    """The codebook in its order (position, then creation)."""
    result = await session.execute(
        select(Variable)
        .where(Variable.project_id == project_id)
        .order_by(Variable.position, Variable.created_at, Variable.id)
    )
    return result.scalars().all()


async def get_variable(
    session: AsyncSession, project_id: uuid.UUID, variable_id: uuid.UUID
) -> Variable | None:
    result = await session.execute(
        select(Variable).where(Variable.id == variable_id, Variable.project_id == project_id)
    )
    return result.scalar_one_or_none()


async def next_position(session: AsyncSession, project_id: uuid.UUID) -> int:
    highest = await session.scalar(
        select(func.max(Variable.position)).where(Variable.project_id == project_id)
    )
    return 0 if highest is None else highest + 1


async def latest_prompt_version(
    session: AsyncSession, variable_id: uuid.UUID
) -> PromptVersion | None:
    result = await session.execute(
        select(PromptVersion)
        .where(PromptVersion.variable_id == variable_id)
        .order_by(PromptVersion.version.desc())
        .limit(1)
    )
    return result.scalar_one_or_none()


async def latest_prompt_versions(
    session: AsyncSession, variable_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, PromptVersion]:
    """The current prompt version of each variable, in one query."""
    if not variable_ids:
        return {}
    newest = (
        select(PromptVersion.variable_id, func.max(PromptVersion.version).label("version"))
        .where(PromptVersion.variable_id.in_(variable_ids))
        .group_by(PromptVersion.variable_id)
        .subquery()
    )
    result = await session.execute(
        select(PromptVersion).join(
            newest,
            (PromptVersion.variable_id == newest.c.variable_id)
            & (PromptVersion.version == newest.c.version),
        )
    )
    return {pv.variable_id: pv for pv in result.scalars()}
