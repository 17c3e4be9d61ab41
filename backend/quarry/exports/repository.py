"""The queries that feed an export: the project's documents in upload order, and each batch's
latest answers and current reviews, as plain rows (not ORM objects: an export reads every
cell of the project once, and building an identity-mapped object per row cost more than
everything else the export did).

Plans (checked by tests/exports/test_repository.py on SQLite and PostgreSQL):

- documents: one ordered read of the project's documents through `ix_documents_upload_order`
  (project_id, created_at, filename, id), streamed with a server-side cursor and cut into
  batches: nothing is sorted, and the read holds one batch at a time.
- answers and reviews: one query each per batch, by `document_id IN (…)` through the
  (document_id, variable_id) indexes of extractions and reviews; each cell's current
  extraction is picked among that batch's rows only (a window function on PostgreSQL, a sort
  on SQLite: see latest_answers_of). Each answer's prompt version is a primary-key lookup,
  and whether it is newer than the cell's current review an index probe of reviews.

Cells are keyed by their ids as text, cast by the database (the same expression for documents,
variables, answers and reviews, so the keys match whatever the dialect's spelling): turning
four ids per cell into uuid.UUID objects, and every cell's finished_at into a datetime, cost
more than everything else the reading did.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any, NamedTuple, TypeAlias

from sqlalchemy import ColumnElement, Result, Select, String, Text, cast, func, select, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import Document, Extraction, ExtractionStatus, PromptVersion, Review, Variable

#: Outcomes that count as the current answer of a cell ("not stated" is an answer); the same
#: rule as extractions.repository.latest_answers.
ANSWERED = (ExtractionStatus.SUCCEEDED, ExtractionStatus.NOT_FOUND)

#: (document key, variable key): the ids as text (see the module docstring).
Key = tuple[str, str]
#: A statement whose rows are read by position.
Rows: TypeAlias = Select[*tuple[Any, ...]]

_UNDECODED = object()


class DocumentRef(NamedTuple):
    id: uuid.UUID
    key: str
    filename: str


class Answer(NamedTuple):
    """The newest answered extraction of a cell (else its newest extraction of any status)."""

    document_key: str
    variable_key: str
    status: str
    value: Any
    evidence: str | None
    page: int | None
    confidence: float | None
    grounded: bool | None
    model: str | None
    #: The run's id as text (a batch's thousands of cells share a few runs: the caller
    #: converts each once).
    run_key: str
    error: str | None
    #: Finished after the cell's current review was made (None: no review, or unfinished).
    newer_than_review: bool | None
    prompt_version: int | None
    #: Whether the evidence supports the value (runs/support.py), or None.
    support: str | None = None


class CurrentReview(NamedTuple):
    """The most recent review of a cell."""

    document_key: str
    variable_key: str
    status: str
    value: Any


def _key(column: Any) -> ColumnElement[str]:
    return cast(column, String)


async def _core(session: AsyncSession, statement: Rows) -> Result[*tuple[Any, ...]]:
    # Through the session's connection: plain Core rows, without the ORM's per-row loading
    # (a third of the export's database time went there).
    connection = await session.connection()
    return await connection.execute(statement)


async def variable_keys(session: AsyncSession, project_id: uuid.UUID) -> dict[uuid.UUID, str]:
    """The key of each of the project's variables."""
    result = await _core(
        session, select(Variable.id, _key(Variable.id)).where(Variable.project_id == project_id)
    )
    return {row[0]: row[1] for row in result.all()}


def documents_in_upload_order(project_id: uuid.UUID) -> Rows:
    return (
        select(Document.id, _key(Document.id), Document.filename)
        .where(Document.project_id == project_id)
        .order_by(Document.created_at, Document.filename, Document.id)
    )


async def stream_documents(
    session: AsyncSession, project_id: uuid.UUID, batch_size: int
) -> AsyncGenerator[list[DocumentRef], None]:
    """The project's documents in upload order, `batch_size` at a time, from one cursor.

    The session may run other queries between batches (the cursor stays open in its
    transaction on PostgreSQL; SQLite steps its statement as it is read).
    """
    connection = await session.connection()
    result = await connection.stream(
        documents_in_upload_order(project_id).execution_options(yield_per=batch_size)
    )
    try:
        async for rows in result.partitions(batch_size):
            yield [DocumentRef(row[0], row[1], row[2]) for row in rows]
    finally:
        await result.close()


def _current_first(c: Any) -> tuple[Any, ...]:
    """The order of a cell's extractions, its current one first: answered, then newest."""
    return (
        c.status.in_(ANSWERED).desc(),
        c.finished_at.desc().nulls_last(),
        c.created_at.desc(),
    )


def ranks_in_sql(dialect: Dialect) -> bool:
    """Whether latest_answers_of should pick each cell's current row in SQL (see there)."""
    return dialect.name != "sqlite"


def latest_answers_of(document_ids: Sequence[uuid.UUID], *, rank_in_sql: bool = True) -> Rows:
    """The current extraction of each (document, variable) of `document_ids`: Answer's fields
    in order, the value as the driver gives it (SQLite: JSON text or a number; asyncpg:
    decoded).

    Without `rank_in_sql`, every extraction of those cells, each cell's current one first (the
    caller keeps the first of each). SQLite's window function materialises each row it ranks,
    about half the cost of the whole query; sorting the rows instead costs a fifth of that,
    and a cell rarely has more than a few extractions. PostgreSQL ranks in its own process and
    sends one row per cell.
    """
    if not rank_in_sql:
        c = Extraction.__table__.c
        return (
            _answers_from(c)
            .where(c.document_id.in_(document_ids))
            .order_by(c.document_id, c.variable_id, *_current_first(c))
        )
    rank = func.row_number().over(
        partition_by=(Extraction.document_id, Extraction.variable_id),
        order_by=_current_first(Extraction),
    )
    ranked = (
        select(
            Extraction.document_id,
            Extraction.variable_id,
            Extraction.status,
            Extraction.value,
            Extraction.evidence,
            Extraction.page,
            Extraction.confidence,
            Extraction.grounded,
            Extraction.model,
            Extraction.run_id,
            Extraction.error,
            Extraction.finished_at,
            Extraction.prompt_version_id,
            Extraction.support,
            rank.label("rank"),
        )
        .where(Extraction.document_id.in_(document_ids))
        .subquery()
    )
    return _answers_from(ranked.c).where(ranked.c.rank == 1)


def _answers_from(c: Any) -> Rows:
    """Answer's columns from `c`, the columns of extractions or of a subquery of them."""
    # The current review is the newest, so "newer than it" is "newer than the newest".
    newest_review = (
        select(func.max(Review.created_at))
        .where(Review.document_id == c.document_id)
        .where(Review.variable_id == c.variable_id)
        .scalar_subquery()
    )
    return select(
        _key(c.document_id),
        _key(c.variable_id),
        c.status,
        # As the driver gives it: decoded by latest_answers, which knows values repeat.
        type_coerce(c.value, Text),
        c.evidence,
        c.page,
        c.confidence,
        c.grounded,
        c.model,
        _key(c.run_id),
        c.error,
        (c.finished_at > newest_review).label("newer_than_review"),
        PromptVersion.version,
        c.support,
    ).outerjoin(PromptVersion, PromptVersion.id == c.prompt_version_id)


async def latest_answers(
    session: AsyncSession, document_ids: Sequence[uuid.UUID]
) -> dict[Key, Answer]:
    """Each cell's current answer for a batch of documents."""
    if not document_ids:
        return {}
    connection = await session.connection()
    statement = latest_answers_of(document_ids, rank_in_sql=ranks_in_sql(connection.dialect))
    result = await connection.execute(statement)
    rows = result.all()
    if connection.dialect.supports_native_json_deserialization:
        # asyncpg decodes JSON itself (SQLAlchemy installs the codec).
        return {(row[0], row[1]): Answer(*row) for row in rows}
    # The driver hands over the JSON text. Most values repeat (categories, yes/no, small
    # numbers, dates), so each distinct text is decoded once per batch; cells with equal
    # values share one (never mutated) object.
    decoded: dict[str, Any] = {}
    answers: dict[Key, Answer] = {}
    for row in rows:
        key = (row[0], row[1])
        if key in answers:
            continue  # a cell's earlier extraction (rows come current first)
        value = row[3]
        if value.__class__ is str:
            text = value
            value = decoded.get(text, _UNDECODED)
            if value is _UNDECODED:
                value = decoded[text] = json.loads(text)
        # else None, or a number: SQLite gives a JSON column numeric affinity.
        answers[key] = Answer(row[0], row[1], row[2], value, *row[4:])
    return answers


def current_reviews_of(document_ids: Sequence[uuid.UUID]) -> Rows:
    newest = func.row_number().over(
        partition_by=(Review.document_id, Review.variable_id),
        order_by=(Review.created_at.desc(), Review.id.desc()),
    )
    ranked = (
        select(
            Review.document_id,
            Review.variable_id,
            Review.status,
            Review.value,
            newest.label("rank"),
        )
        .where(Review.document_id.in_(document_ids))
        .subquery()
    )
    return select(
        _key(ranked.c.document_id), _key(ranked.c.variable_id), ranked.c.status, ranked.c.value
    ).where(ranked.c.rank == 1)


async def current_reviews(
    session: AsyncSession, document_ids: Sequence[uuid.UUID]
) -> dict[Key, CurrentReview]:
    """Each reviewed cell's most recent review for a batch of documents."""
    if not document_ids:
        return {}
    result = await _core(session, current_reviews_of(document_ids))
    return {(row[0], row[1]): CurrentReview(*row) for row in result.all()}
