from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import ACTIVE_RUN_STATUSES, LlmUsage, ModelProfileRow, Run


async def list_profiles(session: AsyncSession, project_id: uuid.UUID) -> Sequence[ModelProfileRow]:
    result = await session.execute(
        select(ModelProfileRow)
        .where(ModelProfileRow.project_id == project_id)
        .order_by(ModelProfileRow.name)
    )
    return result.scalars().all()


async def get_profile(
    session: AsyncSession, project_id: uuid.UUID, profile_id: uuid.UUID
) -> ModelProfileRow | None:
    result = await session.execute(
        select(ModelProfileRow).where(
            ModelProfileRow.id == profile_id, ModelProfileRow.project_id == project_id
        )
    )
    return result.scalar_one_or_none()


async def get_profile_by_name(
    session: AsyncSession, project_id: uuid.UUID, name: str
) -> ModelProfileRow | None:
    result = await session.execute(
        select(ModelProfileRow).where(
            ModelProfileRow.name == name, ModelProfileRow.project_id == project_id
        )
    )
    return result.scalar_one_or_none()


async def active_run_settings(
    session: AsyncSession, project_id: uuid.UUID
) -> Sequence[dict[str, object] | None]:
    """The frozen settings of the project's runs that are not over (few at a time)."""
    result = await session.execute(
        select(Run.settings).where(
            Run.project_id == project_id, Run.status.in_([s.value for s in ACTIVE_RUN_STATUSES])
        )
    )
    return result.scalars().all()


async def set_learned_mode(session: AsyncSession, profile_id: uuid.UUID, mode: str) -> None:
    await session.execute(
        update(ModelProfileRow).where(ModelProfileRow.id == profile_id).values(learned_mode=mode)
    )


async def add_usage(session: AsyncSession, usage: Iterable[tuple[str, int, int, int, int]]) -> None:
    """Add (key, prompt characters, messages, prompt tokens, calls) to the usage table."""
    rows = [
        {"key": k, "prompt_chars": c, "prompt_messages": m, "prompt_tokens": t, "calls": n}
        for k, c, m, t, n in usage
        if n
    ]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    for row in rows:
        statement = insert(LlmUsage).values(**row)
        excluded = statement.excluded
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[LlmUsage.key],
                set_={
                    "prompt_chars": LlmUsage.prompt_chars + excluded.prompt_chars,
                    "prompt_messages": LlmUsage.prompt_messages + excluded.prompt_messages,
                    "prompt_tokens": LlmUsage.prompt_tokens + excluded.prompt_tokens,
                    "calls": LlmUsage.calls + excluded.calls,
                    "updated_at": excluded.updated_at,
                },
            )
        )


async def usage_of(session: AsyncSession, key: str) -> LlmUsage | None:
    return await session.get(LlmUsage, key)
