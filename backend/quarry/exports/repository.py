"""The queries that feed an export: the project's documents in upload order, and each batch's
latest answers, reviews and reviewer slots, as plain rows (not ORM objects: an export reads every
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
  and whether it is newer than the cell's newest review an index probe of reviews. Every
  review row of the batch comes back (a cell has few): which is the cell's verdict depends on
  the kinds and the document's reviewers (reviewing/verdicts.py), decided by the service.
- reviewer slots (dual review): one query per batch, through
  `uq_review_assignments_document_id_slot`.

Cells are keyed by their ids as text, cast by the database (the same expression for documents,
variables, answers and reviews, so the keys match whatever the dialect's spelling): turning
four ids per cell into uuid.UUID objects, and every cell's finished_at into a datetime, cost
more than everything else the reading did.

On SQLite an export reads from its writer thread instead, through a plain read-only
`sqlite3` connection (SqliteExportReader): rows go from SQLite to the formatter in one
thread, with no hop through aiosqlite's thread and the event loop (three threads passing
the GIL to each other for every row SQLite stepped cost as much as all the rest). It gives
the same DocumentRef / Answer / ReviewRow values (tests/exports/test_repository.py).
"""

from __future__ import annotations

import enum
import functools
import json
import sqlite3
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeAlias

from sqlalchemy import ColumnElement, Result, Select, String, Text, cast, func, select, type_coerce
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.models import (
    Document,
    Extraction,
    ExtractionStatus,
    MatchReview,
    PromptVersion,
    Review,
    ReviewAssignment,
    Variable,
)
from quarry.reviewing.verdicts import Assigned

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
    """The newest answered extraction of a cell (else its newest extraction of any status),
    among the rows that are their pair's answer (slot 0: a two-profile run's second
    profile's answers are compared with the first's, not shown)."""

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
    #: A two-profile run's verdict on the pair (agree, disagree, one_missing), or None.
    agreement: str | None = None
    #: The value's automatic reference-list match (reflists/matches.py), or None.
    match_status: str | None = None
    match_key: str | None = None
    match_score: float | None = None
    #: Mean OCR confidence (0..1) of the quoted words, when the quote is OCR text.
    ocr_confidence: float | None = None


class CurrentReview(NamedTuple):
    """A cell's verdict as an export shows it (reviewing/verdicts.py picks which)."""

    document_key: str
    variable_key: str
    status: str
    value: Any


class ReviewRow(NamedTuple):
    """One review of a cell, as stored (ids as text; the time as the driver gives it, a
    datetime, or on SQLite its ISO text: only compared with the same kind)."""

    document_key: str
    variable_key: str
    status: str
    value: Any
    kind: str
    reviewer_key: str | None
    created_at: Any
    review_key: str


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


async def document_refs(session: AsyncSession, project_id: uuid.UUID) -> list[DocumentRef]:
    """The project's documents in upload order, all at once (ids, keys and names only)."""
    result = await _core(session, documents_in_upload_order(project_id))
    return [DocumentRef(row[0], row[1], row[2]) for row in result.all()]


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


def latest_answers_of(
    document_ids: Sequence[uuid.UUID], *, rank_in_sql: bool = True, value_as_text: bool = True
) -> Rows:
    """The current extraction of each (document, variable) of `document_ids`: Answer's fields
    in order, the value undecoded: cast to its JSON text with `value_as_text` (PostgreSQL:
    asyncpg's codec would decode every row's value, where latest_answers decodes each
    distinct text once per batch), else as SQLite stores it (JSON text or a number; a CAST
    would print a float to 15 digits only).

    Without `rank_in_sql`, every extraction of those cells, each cell's current one first (the
    caller keeps the first of each). SQLite's window function materialises each row it ranks,
    about half the cost of the whole query; sorting the rows instead costs a fifth of that,
    and a cell rarely has more than a few extractions. PostgreSQL ranks in its own process and
    sends one row per cell.
    """
    if not rank_in_sql:
        c = Extraction.__table__.c
        return (
            _answers_from(c, value_as_text)
            .where(c.document_id.in_(document_ids), c.slot == 0)
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
            Extraction.agreement,
            Extraction.match_status,
            Extraction.match_key,
            Extraction.match_score,
            Extraction.ocr_confidence,
            rank.label("rank"),
        )
        .where(Extraction.document_id.in_(document_ids), Extraction.slot == 0)
        .subquery()
    )
    return _answers_from(ranked.c, value_as_text).where(ranked.c.rank == 1)


def _answers_from(c: Any, value_as_text: bool) -> Rows:
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
        # Decoded by latest_answers, which knows values repeat.
        cast(c.value, Text) if value_as_text else type_coerce(c.value, Text),
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
        c.agreement,
        c.match_status,
        c.match_key,
        c.match_score,
        c.ocr_confidence,
    ).outerjoin(PromptVersion, PromptVersion.id == c.prompt_version_id)


async def latest_answers(
    session: AsyncSession, document_ids: Sequence[uuid.UUID]
) -> dict[Key, Answer]:
    """Each cell's current answer for a batch of documents."""
    if not document_ids:
        return {}
    connection = await session.connection()
    in_sql = ranks_in_sql(connection.dialect)
    statement = latest_answers_of(document_ids, rank_in_sql=in_sql, value_as_text=in_sql)
    result = await connection.execute(statement)
    rows = result.all()
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


async def match_review_keys(session: AsyncSession, project_id: uuid.UUID) -> dict[Key, str | None]:
    """The newest match review's key of each reviewed cell of the project (reviews of
    matches are one per cell a person looked at: read once per export)."""
    result = await _core(
        session,
        select(_key(MatchReview.document_id), _key(MatchReview.variable_id), MatchReview.key)
        .join(Variable, Variable.id == MatchReview.variable_id)
        .where(Variable.project_id == project_id)
        .order_by(MatchReview.created_at, MatchReview.id),
    )
    return {(row[0], row[1]): row[2] for row in result.all()}


def review_rows_of(document_ids: Sequence[uuid.UUID]) -> Rows:
    """Every review row (all kinds) of the cells of `document_ids`: which one is a cell's is
    decided in Python (reviewing/verdicts.py; a cell has few)."""
    return select(
        _key(Review.document_id),
        _key(Review.variable_id),
        Review.status,
        Review.value,
        Review.kind,
        _key(Review.reviewer_id),
        Review.created_at,
        _key(Review.id),
    ).where(Review.document_id.in_(document_ids))


async def review_rows(session: AsyncSession, document_ids: Sequence[uuid.UUID]) -> list[ReviewRow]:
    """Every review of a batch of documents' cells."""
    if not document_ids:
        return []
    result = await _core(session, review_rows_of(document_ids))
    return [ReviewRow(*row) for row in result.all()]


def assignments_of(document_ids: Sequence[uuid.UUID]) -> Rows:
    """The reviewer slots of `document_ids` (dual review)."""
    return select(
        _key(ReviewAssignment.document_id),
        ReviewAssignment.slot,
        _key(ReviewAssignment.reviewer_id),
    ).where(ReviewAssignment.document_id.in_(document_ids))


def _assigned(rows: Iterable[Any]) -> dict[str, Assigned]:
    slots: dict[str, list[uuid.UUID | None]] = {}
    for document_key, slot, reviewer_key in rows:
        slots.setdefault(document_key, [None, None])[slot - 1] = uuid.UUID(reviewer_key)
    return {key: (pair[0], pair[1]) for key, pair in slots.items()}


async def assignments(
    session: AsyncSession, document_ids: Sequence[uuid.UUID]
) -> dict[str, Assigned]:
    """Each assigned document's (reviewer A, reviewer B), by document key."""
    if not document_ids:
        return {}
    result = await _core(session, assignments_of(document_ids))
    return _assigned(result.all())


# ---------------------------------------------------------------------------------------------
# SQLite, from the writer thread


_SQLITE_DIALECT = sqlite.dialect()


class _SqliteStatement(NamedTuple):
    """A statement over a batch of documents compiled for sqlite3: its SQL and, for each `?`,
    the index of the batch's document whose key goes there, or a constant."""

    sql: str
    slots: tuple[int | None, ...]
    constants: tuple[Any, ...]

    def parameters(self, keys: Sequence[str]) -> list[Any]:
        return [
            keys[slot] if slot is not None else constant
            for slot, constant in zip(self.slots, self.constants, strict=True)
        ]


@functools.cache
def _sqlite_statement(build: Callable[[Sequence[uuid.UUID]], Rows], size: int) -> _SqliteStatement:
    """`build(document_ids)` for a batch of `size` documents, compiled once per size.

    Stand-in ids mark where the batch's document ids go. A stored SQLite UUID is its 32 hex
    digits, the same text as the document's key, so the keys are bound there as they are.
    """
    stand_ins = {uuid.UUID(int=i + 1): i for i in range(size)}
    compiled = build(list(stand_ins)).compile(
        dialect=_SQLITE_DIALECT, compile_kwargs={"render_postcompile": True}
    )
    values = [compiled.params[name] for name in compiled.positiontup or ()]
    slots: list[int | None] = []
    constants: list[Any] = []
    for value in values:
        if isinstance(value, uuid.UUID):
            slots.append(stand_ins[value])  # KeyError: an id that is not the batch's
            constants.append(None)
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        if not isinstance(value, int | float | str):
            raise TypeError(f"no plain sqlite3 binding for {value!r}")
        slots.append(None)
        constants.append(value)
    return _SqliteStatement(compiled.string, tuple(slots), tuple(constants))


def _sqlite_json(value: Any) -> Any:
    # JSON text, or a number (a JSON column has numeric affinity), or NULL.
    return json.loads(value) if value.__class__ is str else value


def sqlite_extractions_of(document_ids: Sequence[uuid.UUID]) -> Rows:
    """Every extraction of the cells of `document_ids`, unordered, as stored (ids as their
    hex text, times as their ISO text): what SqliteExportReader picks answers from."""
    c = Extraction.__table__.c
    return select(
        c.document_id,
        c.variable_id,
        c.status,
        c.value,
        c.evidence,
        c.page,
        c.confidence,
        c.grounded,
        c.model,
        c.run_id,
        c.error,
        c.prompt_version_id,
        c.finished_at,
        c.created_at,
        c.support,
        c.agreement,
        c.match_status,
        c.match_key,
        c.match_score,
        c.ocr_confidence,
    ).where(c.document_id.in_(document_ids), c.slot == 0)


def sqlite_reviews_of(document_ids: Sequence[uuid.UUID]) -> Rows:
    """Every review of the cells of `document_ids`, unordered, as stored: ReviewRow's fields."""
    c = Review.__table__.c
    return select(
        c.document_id,
        c.variable_id,
        c.status,
        c.value,
        c.kind,
        c.reviewer_id,
        c.created_at,
        c.id,
    ).where(c.document_id.in_(document_ids))


def sqlite_assignments_of(document_ids: Sequence[uuid.UUID]) -> Rows:
    c = ReviewAssignment.__table__.c
    return select(c.document_id, c.slot, c.reviewer_id).where(c.document_id.in_(document_ids))


def sqlite_prompt_versions_of(project_id: uuid.UUID) -> Rows:
    return (
        select(PromptVersion.id, PromptVersion.version)
        .join(Variable, Variable.id == PromptVersion.variable_id)
        .where(Variable.project_id == project_id)
    )


_ANSWERED_STATUSES = frozenset(status.value for status in ANSWERED)


def _sqlite_rank(row: Any) -> tuple[bool, bool, str, str]:
    """The order of _current_first, largest first, from a row of sqlite_extractions_of."""
    return (row[2] in _ANSWERED_STATUSES, row[12] is not None, row[12] or "", row[13])


class SqliteExportReader:
    """The export's reads on a read-only sqlite3 connection (db.connect_sqlite_reader), for
    the writer thread: the same DocumentRef / Answer / ReviewRow values as the async
    functions above, with less of the work left to SQLite.

    Each query reads a batch's rows by index and nothing more; what the async statements
    ask of the database is done here on rows already in hand, where it is cheaper than in
    SQLite (a sort or a probe materialises every row; together they were half of SQLite's
    time): a cell's current answer is picked in Python by the same order as
    _current_first; "newer than the review" compares the stored
    times as SQLite itself compares them, as text; prompt versions are a dict, read once.
    The ids and times stay the text SQLite stores, which is what the CASTs give elsewhere.
    """

    def __init__(self, connection: sqlite3.Connection, project_id: uuid.UUID) -> None:
        self._connection = connection
        self._project_id = project_id
        statement = sqlite_prompt_versions_of(project_id).compile(dialect=_SQLITE_DIALECT)
        self._versions: dict[str, int] = dict(
            connection.execute(statement.string, (project_id.hex,)).fetchall()
        )

    def documents(self, batch_size: int) -> Iterator[list[DocumentRef]]:
        """The project's documents in upload order, `batch_size` at a time, from one cursor."""
        compiled = documents_in_upload_order(self._project_id).compile(dialect=_SQLITE_DIALECT)
        cursor = self._connection.execute(compiled.string, (self._project_id.hex,))
        try:
            while rows := cursor.fetchmany(batch_size):
                yield [DocumentRef(uuid.UUID(row[1]), row[1], row[2]) for row in rows]
        finally:
            cursor.close()

    def _rows(
        self, build: Callable[[Sequence[uuid.UUID]], Rows], documents: Sequence[DocumentRef]
    ) -> list[Any]:
        statement = _sqlite_statement(build, len(documents))
        keys = [d.key for d in documents]
        return self._connection.execute(statement.sql, statement.parameters(keys)).fetchall()

    def cells(
        self, documents: Sequence[DocumentRef]
    ) -> tuple[dict[Key, Answer], list[ReviewRow], dict[str, Assigned]]:
        """Each cell's current answer, every review, and the documents' reviewer slots, for
        a batch of documents (the service picks each cell's verdict)."""
        if not documents:
            return {}, [], {}
        reviews = [
            ReviewRow(row[0], row[1], row[2], _sqlite_json(row[3]), *row[4:8])
            for row in self._rows(sqlite_reviews_of, documents)
        ]
        reviewed_at: dict[Key, str] = {}
        for review in reviews:
            key = (review.document_key, review.variable_key)
            other = reviewed_at.get(key)
            if other is None or review.created_at > other:
                reviewed_at[key] = review.created_at
        assigned = _assigned(self._rows(sqlite_assignments_of, documents))

        current: dict[Key, Any] = {}
        for row in self._rows(sqlite_extractions_of, documents):
            key = (row[0], row[1])
            other = current.setdefault(key, row)
            if other is not row and _sqlite_rank(row) > _sqlite_rank(other):
                current[key] = row
        return self._answers(current, reviewed_at), reviews, assigned

    def _answers(self, current: dict[Key, Any], reviewed_at: dict[Key, str]) -> dict[Key, Answer]:
        versions = self._versions
        decoded: dict[str, Any] = {}
        answers: dict[Key, Answer] = {}
        for key, row in current.items():
            value = row[3]
            if value.__class__ is str:  # JSON text; else None or a number (numeric affinity)
                text = value
                value = decoded.get(text, _UNDECODED)
                if value is _UNDECODED:
                    value = decoded[text] = json.loads(text)
            grounded, finished_at = row[7], row[12]
            review_time = reviewed_at.get(key) if reviewed_at else None
            answers[key] = Answer(
                *key,
                row[2],
                value,
                row[4],
                row[5],
                row[6],
                None if grounded is None else grounded == 1,
                row[8],
                row[9],
                row[10],
                None if review_time is None or finished_at is None else finished_at > review_time,
                versions.get(row[11]) if row[11] is not None else None,
                row[14],
                row[15],
                row[16],
                row[17],
                row[18],
                row[19],
            )
        return answers
