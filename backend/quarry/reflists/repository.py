"""The queries of reference lists, their rows, and the match columns of extractions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import (
    Document,
    Extraction,
    ExtractionStatus,
    FindingResolution,
    MatchReview,
    ReferenceList,
    ReferenceListVersion,
    ReferenceRow,
    Variable,
)

#: Rows inserted per statement (SQLite allows 32,766 bound parameters; three per row).
_INSERT_CHUNK = 5_000
_TASKS = cast(Table, Extraction.__table__)


async def list_lists(session: AsyncSession, project_id: uuid.UUID) -> Sequence[ReferenceList]:
    result = await session.execute(
        select(ReferenceList)
        .where(ReferenceList.project_id == project_id)
        .order_by(ReferenceList.name)
    )
    return result.scalars().all()


async def get_list(
    session: AsyncSession, project_id: uuid.UUID, list_id: uuid.UUID
) -> ReferenceList | None:
    result = await session.execute(
        select(ReferenceList).where(
            ReferenceList.id == list_id, ReferenceList.project_id == project_id
        )
    )
    return result.scalar_one_or_none()


async def get_list_by_name(
    session: AsyncSession, project_id: uuid.UUID, name: str
) -> ReferenceList | None:
    result = await session.execute(
        select(ReferenceList).where(
            ReferenceList.name == name, ReferenceList.project_id == project_id
        )
    )
    return result.scalar_one_or_none()


async def versions_of(
    session: AsyncSession, list_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[ReferenceListVersion]]:
    """Each list's versions, newest first."""
    out: dict[uuid.UUID, list[ReferenceListVersion]] = {i: [] for i in list_ids}
    if not list_ids:
        return out
    result = await session.execute(
        select(ReferenceListVersion)
        .where(ReferenceListVersion.list_id.in_(list_ids))
        .order_by(ReferenceListVersion.version.desc())
    )
    for version in result.scalars():
        out[version.list_id].append(version)
    return out


async def get_version(session: AsyncSession, version_id: uuid.UUID) -> ReferenceListVersion | None:
    return await session.get(ReferenceListVersion, version_id)


async def next_version_number(session: AsyncSession, list_id: uuid.UUID) -> int:
    result = await session.execute(
        select(func.max(ReferenceListVersion.version)).where(
            ReferenceListVersion.list_id == list_id
        )
    )
    return int(result.scalar() or 0) + 1


async def insert_rows(
    session: AsyncSession, version_id: uuid.UUID, rows: Sequence[tuple[int, dict[str, str]]]
) -> None:
    # Core, not the ORM's bulk insert: no per-row object bookkeeping for 100,000 rows.
    statement = insert(cast(Table, ReferenceRow.__table__))
    connection = await session.connection()
    for start in range(0, len(rows), _INSERT_CHUNK):
        await connection.execute(
            statement,
            [
                {"version_id": version_id, "row_number": number, "values": values}
                for number, values in rows[start : start + _INSERT_CHUNK]
            ],
        )


async def page_of_rows(
    session: AsyncSession, version_id: uuid.UUID, limit: int, offset: int
) -> Sequence[ReferenceRow]:
    result = await session.execute(
        select(ReferenceRow)
        .where(ReferenceRow.version_id == version_id)
        .order_by(ReferenceRow.row_number)
        .limit(limit)
        .offset(offset)
    )
    return result.scalars().all()


async def column_rows(
    session: AsyncSession, version_id: uuid.UUID, column: str, key_column: str
) -> list[tuple[int, str | None, str | None]]:
    """(row number, the column's cell, the key column's cell) of every row of a version:
    only the two cells are read out of each row's JSON, by the database."""
    connection = await session.connection()
    result = await connection.execute(
        select(
            ReferenceRow.row_number,
            ReferenceRow.values[column].as_string(),
            ReferenceRow.values[key_column].as_string(),
        )
        .where(ReferenceRow.version_id == version_id)
        .order_by(ReferenceRow.row_number)
    )
    return [(row[0], row[1], row[2]) for row in result.all()]


async def rows_by_key(
    session: AsyncSession, version_id: uuid.UUID, key_column: str, keys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The first row of each key among `keys` (its cells and its row number)."""
    if not keys:
        return {}
    key_cell = ReferenceRow.values[key_column].as_string()
    result = await session.execute(
        select(ReferenceRow.row_number, ReferenceRow.values, key_cell)
        .where(ReferenceRow.version_id == version_id, key_cell.in_(list(keys)))
        .order_by(ReferenceRow.row_number)
    )
    out: dict[str, dict[str, Any]] = {}
    for number, values, key in result.all():
        out.setdefault(key, {"row_number": number, "values": values})
    return out


async def matched_variables(
    session: AsyncSession, variable_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    """Of `variable_ids`, those with a match setting, with it."""
    if not variable_ids:
        return {}
    result = await session.execute(
        select(Variable.id, Variable.match).where(
            Variable.id.in_(list(variable_ids)), Variable.match.is_not(None)
        )
    )
    return {row[0]: row[1] for row in result.all() if row[1]}


async def variables_matching_list(
    session: AsyncSession, project_id: uuid.UUID, list_id: uuid.UUID
) -> list[Variable]:
    result = await session.execute(
        select(Variable).where(Variable.project_id == project_id, Variable.match.is_not(None))
    )
    return [v for v in result.scalars() if v.match and v.match.get("list_id") == str(list_id)]


async def answered_values(
    session: AsyncSession, variable_id: uuid.UUID, batch: int
) -> AsyncIterator[list[tuple[uuid.UUID, Any]]]:
    """(extraction id, value) of the variable's succeeded extractions, `batch` at a time,
    by id (keyset pagination: each batch is an index range, however many there are)."""
    after: uuid.UUID | None = None
    while True:
        query = (
            select(Extraction.id, Extraction.value)
            .where(
                Extraction.variable_id == variable_id,
                Extraction.status == ExtractionStatus.SUCCEEDED,
            )
            .order_by(Extraction.id)
            .limit(batch)
        )
        if after is not None:
            query = query.where(Extraction.id > after)
        rows = (await session.execute(query)).all()
        if not rows:
            return
        yield [(row[0], row[1]) for row in rows]
        after = rows[-1][0]


_SET_MATCH = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("e_id"))
    .values(
        match_status=bindparam("m_status"),
        match_key=bindparam("m_key"),
        match_score=bindparam("m_score"),
        match_candidates=bindparam("m_candidates", type_=_TASKS.c.match_candidates.type),
        match_list_version_id=bindparam("m_version", type_=_TASKS.c.match_list_version_id.type),
    )
)


async def store_matches(session: AsyncSession, matches: Sequence[dict[str, Any]]) -> None:
    """Write match columns: dicts with e_id, m_status, m_key, m_score, m_candidates,
    m_version (executemany: one statement for the batch)."""
    if matches:
        connection = await session.connection()
        await connection.execute(_SET_MATCH, list(matches))


async def clear_matches(session: AsyncSession, variable_id: uuid.UUID) -> None:
    """Drop the variable's matches (its match setting was removed)."""
    await session.execute(
        update(Extraction)
        .where(Extraction.variable_id == variable_id, Extraction.match_status.is_not(None))
        .values(
            match_status=None,
            match_key=None,
            match_score=None,
            match_candidates=None,
            match_list_version_id=None,
        )
    )


async def delete_list(session: AsyncSession, reference_list: ReferenceList) -> None:
    # Rows go with their versions and versions with their list (ON DELETE CASCADE).
    await session.execute(delete(ReferenceList).where(ReferenceList.id == reference_list.id))


async def current_match_reviews(
    session: AsyncSession,
    document_ids: Sequence[uuid.UUID] | None,
    project_variable_ids: Sequence[uuid.UUID],
) -> dict[tuple[uuid.UUID, uuid.UUID], MatchReview]:
    """The newest match review of each (document, variable) among the given variables (and
    documents, when given)."""
    if not project_variable_ids:
        return {}
    query = select(MatchReview).where(MatchReview.variable_id.in_(list(project_variable_ids)))
    if document_ids is not None:
        query = query.where(MatchReview.document_id.in_(list(document_ids)))
    result = await session.execute(query.order_by(MatchReview.created_at, MatchReview.id))
    out: dict[tuple[uuid.UUID, uuid.UUID], MatchReview] = {}
    for review in result.scalars():
        out[(review.document_id, review.variable_id)] = review  # later ones overwrite
    return out


async def get_extraction(
    session: AsyncSession, project_variable_ids: Sequence[uuid.UUID], extraction_id: uuid.UUID
) -> Extraction | None:
    result = await session.execute(
        select(Extraction).where(
            Extraction.id == extraction_id, Extraction.variable_id.in_(list(project_variable_ids))
        )
    )
    return result.scalar_one_or_none()


async def documents_in_upload_order(
    session: AsyncSession, project_id: uuid.UUID
) -> list[tuple[uuid.UUID, str]]:
    result = await session.execute(
        select(Document.id, Document.filename)
        .where(Document.project_id == project_id)
        .order_by(Document.created_at, Document.filename, Document.id)
    )
    return [(row[0], row[1]) for row in result.all()]


async def latest_resolutions(
    session: AsyncSession, project_id: uuid.UUID
) -> dict[str, FindingResolution]:
    """The newest resolution of each finding of the project."""
    result = await session.execute(
        select(FindingResolution)
        .where(FindingResolution.project_id == project_id)
        .order_by(FindingResolution.created_at, FindingResolution.id)
    )
    out: dict[str, FindingResolution] = {}
    for resolution in result.scalars():
        out[resolution.finding_id] = resolution
    return out
