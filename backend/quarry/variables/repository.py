from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import PromptVersion, Run, RunVariable, Variable


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


async def prompt_version_with_hash(
    session: AsyncSession, variable_id: uuid.UUID, digest: str
) -> PromptVersion | None:
    """The variable's earliest prompt version rendered from fields with this spec hash."""
    result = await session.execute(
        select(PromptVersion)
        .where(PromptVersion.variable_id == variable_id, PromptVersion.spec_hash == digest)
        .order_by(PromptVersion.version)
        .limit(1)
    )
    return result.scalar_one_or_none()


async def prompt_versions(
    session: AsyncSession, variable_ids: Sequence[uuid.UUID]
) -> Sequence[PromptVersion]:
    """Every prompt version of these variables, oldest first per variable."""
    if not variable_ids:
        return []
    result = await session.execute(
        select(PromptVersion)
        .where(PromptVersion.variable_id.in_(variable_ids))
        .order_by(PromptVersion.variable_id, PromptVersion.version)
    )
    return result.scalars().all()


async def runs_using_prompt_versions(
    session: AsyncSession, version_ids: Sequence[uuid.UUID]
) -> Sequence[Any]:
    """(prompt_version_id, id, status, created_at) of each run that froze one of these
    versions, newest run first."""
    if not version_ids:
        return []
    result = await session.execute(
        select(RunVariable.prompt_version_id, Run.id, Run.status, Run.created_at)
        .join(Run, Run.id == RunVariable.run_id)
        .where(RunVariable.prompt_version_id.in_(version_ids))
        .order_by(Run.created_at.desc(), Run.id)
    )
    return result.all()
