"""Building exports from the database: final values, flags, evidence (DESIGN §6).

Final value of a cell: the reviewed value when its verdict accepted or corrected it (nothing
when it rejected it), else the newest answered extraction ("not stated" included) — of a
two-profile run, the first-named profile's, flagged `models_disagree` when the second
profile answered differently. Its verdict is, in this order, an adjudication, the two dual
reviewers' agreed verdict, the newest single review (reviewing/verdicts.py); an export made
by a reviewer still blinded on a cell holds their own verdict there instead (and in blind
review, until they have reviewed it, not the model's answer either).

An export runs in a worker thread (bridge.py), where `wide_rows` / `long_rows` turn each batch
of documents, with their cells' current answers and reviews, into the writers' rows and the
writer formats them: all the per-cell work, off the loop. The batches are read
(repository.py) on the event loop by `export_batches` (PostgreSQL), or on SQLite by
`export_batches_in_thread` in that same worker thread through a plain read-only sqlite3
connection: there every row crossed two threads and the loop before it was formatted, and
handing the GIL around for that cost as much as the rest of the export.
"""

from __future__ import annotations

import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing, closing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.db import connect_sqlite_reader, sqlite_file
from quarry.documents.parsing.layout import OCR_LOW_CONFIDENCE
from quarry.exports import repository
from quarry.exports.bridge import InThread, run_in_thread, stream_from_thread
from quarry.exports.csv_writer import iter_long_csv, iter_wide_csv
from quarry.exports.json_writer import iter_long_json, iter_wide_json
from quarry.exports.repository import Answer, CurrentReview, DocumentRef, Key, ReviewRow
from quarry.exports.schemas import ExportFormat, ExportLayout
from quarry.exports.table import (
    NO_FLAGS,
    CellFlags,
    EvaluationTable,
    ExportVariable,
    JsonValue,
    LongRow,
    VariableExample,
    WideRow,
)
from quarry.exports.xlsx_writer import write_xlsx
from quarry.models import (
    Agreement,
    Extraction,
    ExtractionStatus,
    Review,
    ReviewKind,
    ReviewStatus,
    Variable,
)
from quarry.reviewing.verdicts import (
    EMPTY,
    OPEN_LENS,
    UNASSIGNED,
    Assigned,
    CellState,
    Lens,
    Verdict,
    seen_by,
    settle,
)
from quarry.variables.repository import list_variables
from quarry.variables.service import current_prompt_versions
from quarry.variables.types import TypeSpec, VariableType

R = TypeVar("R")

LOW_CONFIDENCE = 0.5
#: Cells read per batch, and so per hop to the writer thread: enough that the hops and the
#: per-query costs disappear in the cell work, few enough that a batch stays a few MB.
CELLS_PER_BATCH = 2_000
#: The most documents in one batch's `IN (…)` list, however few the variables.
MAX_DOCUMENTS_PER_BATCH = 1_000

# Plain strings: the status columns come back as str, and a StrEnum member hashes by its name.
_ANSWERED = frozenset({ExtractionStatus.SUCCEEDED.value, ExtractionStatus.NOT_FOUND.value})
_SUCCEEDED = ExtractionStatus.SUCCEEDED.value
_NOT_FOUND = ExtractionStatus.NOT_FOUND.value
_FAILED = ExtractionStatus.FAILED.value
_REJECTED = ReviewStatus.REJECTED.value

# Every combination of flags, built once, indexed by their bits: low_confidence 1,
# ungrounded 2, review_disagrees 4, not_found 8, failed 16, unsupported_evidence 32 (the
# quote is in the document but does not contain the value), models_disagree 64 (a
# two-profile run's profiles answered differently), ocr_low_confidence 128 (the quoted
# words were read by OCR with low confidence), match_ambiguous 256 and match_unmatched 512
# (the value's reference-list match needs a reviewer).
_FLAG_BITS: dict[int, str] = {
    1: "low_confidence",
    2: "ungrounded",
    4: "review_disagrees",
    8: "not_found",
    16: "failed",
    32: "unsupported_evidence",
    64: "models_disagree",
    128: "ocr_low_confidence",
    256: "match_ambiguous",
    512: "match_unmatched",
}
_FLAG_SETS: tuple[CellFlags, ...] = (
    NO_FLAGS,
    *(
        CellFlags(**{name: bool(bits & bit) for bit, name in _FLAG_BITS.items()})
        for bits in range(1, 1024)
    ),
)
_LOW_CONFIDENCE, _UNGROUNDED, _DISAGREES, _NOT_STATED, _FAILED_BIT = 1, 2, 4, 8, 16
_UNSUPPORTED, _MODELS_DISAGREE, _OCR_LOW_CONFIDENCE = 32, 64, 128
MATCH_AMBIGUOUS, MATCH_UNMATCHED = 256, 512
_MATCH_BITS = {"ambiguous": MATCH_AMBIGUOUS, "unmatched": MATCH_UNMATCHED}
#: A reviewer's choice of row, by cell: the chosen key, or None for "no row".
MatchReviews = Mapping[Key, str | None]
_UNSUPPORTED_VALUE = "unsupported"
_DISAGREE_VALUE = Agreement.DISAGREE.value


class AnswerLike(Protocol):
    """What the final value needs of an extraction: an ORM Extraction or a repository Answer."""

    @property
    def status(self) -> str: ...
    @property
    def value(self) -> Any: ...
    @property
    def confidence(self) -> float | None: ...
    @property
    def grounded(self) -> bool | None: ...
    @property
    def support(self) -> str | None: ...
    @property
    def agreement(self) -> str | None: ...
    @property
    def match_status(self) -> str | None: ...
    @property
    def ocr_confidence(self) -> float | None: ...


class ReviewLike(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def value(self) -> Any: ...


@dataclass(frozen=True)
class Cell:
    value: Any
    flags: CellFlags
    extraction: Extraction | None
    prompt_version: int | None
    review: Review | None


def final_value(
    answer: AnswerLike | None,
    review: ReviewLike | None,
    answer_is_newer: bool | None,
    match_reviewed: bool = False,
) -> tuple[Any, CellFlags]:
    """A cell's final value and why a reviewer should look at it (see the module docstring).

    `answer_is_newer`: the answer finished after the review was made. A reviewed cell carries
    no extraction flags (a person has looked at it), only the warning that a newer extraction
    disagrees with what they decided — and, until someone chose its reference row
    (`match_reviewed`), its match's.
    """
    if answer is None:
        if review is None or review.status == _REJECTED:
            return None, NO_FLAGS
        return review.value, NO_FLAGS
    status = answer.status
    answered = status in _ANSWERED
    match_bits = 0 if match_reviewed else _MATCH_BITS.get(answer.match_status or "", 0)
    if review is not None:
        if review.status == _REJECTED:
            return None, NO_FLAGS
        disagrees = answered and answer_is_newer and answer.value != review.value
        return review.value, _FLAG_SETS[(_DISAGREES if disagrees else 0) | match_bits]
    if not answered:
        return None, _FLAG_SETS[_FAILED_BIT] if status == _FAILED else NO_FLAGS
    if status == _SUCCEEDED:
        confidence = answer.confidence
        bits = _LOW_CONFIDENCE if confidence is not None and confidence < LOW_CONFIDENCE else 0
        if answer.grounded is False:
            bits |= _UNGROUNDED
        if answer.support == _UNSUPPORTED_VALUE:
            bits |= _UNSUPPORTED
        ocr = answer.ocr_confidence
        if ocr is not None and ocr < OCR_LOW_CONFIDENCE:
            bits |= _OCR_LOW_CONFIDENCE
    else:
        # "Not stated" has no value to doubt: its (capped) confidence is no flag, as in the
        # review grid (a not-found cell read "low confidence" in the workbook).
        bits = _NOT_STATED
    if answer.agreement == _DISAGREE_VALUE:
        bits |= _MODELS_DISAGREE
    return answer.value, _FLAG_SETS[bits | match_bits]


def final_match(
    answer: Answer | None, match_review: str | None, match_reviewed: bool
) -> tuple[str | None, str | None, float | None]:
    """A matched cell's (status, key, score): a reviewer's choice of row wins."""
    if match_reviewed:
        return ("matched" if match_review is not None else "unmatched"), match_review, None
    if answer is None:
        return None, None, None
    return answer.match_status, answer.match_key, answer.match_score


def final_cell(extraction: Extraction | None, version: int | None, review: Review | None) -> Cell:
    newer = bool(
        extraction is not None
        and review is not None
        and extraction.finished_at is not None
        and extraction.finished_at > review.created_at
    )
    value, flags = final_value(extraction, review, newer)
    return Cell(value, flags, extraction, version, review)


# ---------------------------------------------------------------------------------------------
# Reading (on the event loop)


@dataclass(frozen=True, slots=True)
class Codebook:
    """The export's variables in codebook order, and their keys (to find their cells).

    A variable matched to a reference list is followed by a column of its own, `<name>_match`
    (an ExportVariable with `match_of` set), holding the matched row's key; it shares its
    variable's key. `match_reviews` holds the reviewers' choices of row (few: one per cell a
    person looked at), read once for the export.
    """

    variables: tuple[ExportVariable, ...]
    variable_keys: tuple[str, ...]
    matched_keys: frozenset[str] = frozenset()
    match_reviews: MatchReviews = field(default_factory=lambda: MappingProxyType({}))
    #: Each variable's type, by key: two dual reviewers' verdicts agree type-aware.
    specs: Mapping[str, TypeSpec] = field(default_factory=lambda: MappingProxyType({}))


async def export_codebook(session: AsyncSession, project_id: uuid.UUID) -> Codebook:
    variables = list(await list_variables(session, project_id))
    versions = await current_prompt_versions(session, variables)
    keys = await repository.variable_keys(session, project_id)
    names = {v.name for v in variables}
    exported: list[ExportVariable] = []
    exported_keys: list[str] = []
    matched: set[str] = set()
    for v in variables:
        exported.append(_export_variable(v, versions[v.id].version if v.id in versions else None))
        exported_keys.append(keys[v.id])
        if v.match:
            matched.add(keys[v.id])
            exported.append(_match_column(v, names))
            exported_keys.append(keys[v.id])
    return Codebook(
        variables=tuple(exported),
        variable_keys=tuple(exported_keys),
        specs=MappingProxyType(
            {
                keys[v.id]: TypeSpec(
                    type=VariableType(v.type),
                    allowed_values=tuple(v.allowed_values),
                    unit=v.unit,
                )
                for v in variables
            }
        ),
        matched_keys=frozenset(matched),
        match_reviews=(
            MappingProxyType(await repository.match_review_keys(session, project_id))
            if matched
            else MappingProxyType({})
        ),
    )


_NOTHING: Mapping[Any, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ExportBatch:
    """Consecutive documents in upload order, with the current answer and verdict of each of
    their cells (absent key: none, or none the export's reader may see).

    The writers read only those; the results grid (extractions/grid.py) also shows a cell's
    dual-review state and that blind review hides its answer, from the rest."""

    documents: Sequence[DocumentRef]
    answers: Mapping[Key, Answer]
    reviews: Mapping[Key, CurrentReview]
    #: The verdicts of the cells with more than one review row (or any, in dual review),
    #: sorted out; a cell absent has verdicts.EMPTY or its one single review.
    states: Mapping[Key, CellState[CurrentReview]] = field(default_factory=lambda: _NOTHING)
    #: The documents' reviewer slots, by document key (absent: none).
    assigned: Mapping[str, Assigned] = field(default_factory=lambda: _NOTHING)
    #: The answers blind review withholds from the reader (absent from `answers`).
    withheld: Mapping[Key, Answer] = field(default_factory=lambda: _NOTHING)


_SINGLE_KIND = ReviewKind.SINGLE.value


def settle_batch(
    answers: Mapping[Key, Answer],
    rows: Sequence[ReviewRow],
    assigned: Mapping[str, Assigned],
    codebook: Codebook,
    lens: Lens,
) -> tuple[Mapping[Key, Answer], dict[Key, CurrentReview]]:
    """Each cell's verdict among its review rows, as `lens`'s reader may see it (verdicts.py),
    and without the answers blind review withholds from them."""
    batch = settled_batch((), answers, rows, assigned, codebook, lens)
    return batch.answers, dict(batch.reviews)


def settled_batch(
    documents: Sequence[DocumentRef],
    answers: Mapping[Key, Answer],
    rows: Sequence[ReviewRow],
    assigned: Mapping[str, Assigned],
    codebook: Codebook,
    lens: Lens,
) -> ExportBatch:
    """The documents' batch: `settle_batch`, keeping what the results grid shows besides."""
    by_cell: dict[Key, list[Verdict[CurrentReview]]] = {}
    for row in rows:
        key = (row.document_key, row.variable_key)
        reviewer = uuid.UUID(row.reviewer_key) if row.reviewer_key else None
        current = CurrentReview(key[0], key[1], row.status, row.value)
        verdict = Verdict(
            row.kind, reviewer, row.status, row.value, (row.created_at, row.review_key), current
        )
        by_cell.setdefault(key, []).append(verdict)
    reviews: dict[Key, CurrentReview] = {}
    states: dict[Key, CellState[CurrentReview]] = {}
    specs = codebook.specs
    for key, verdicts in by_cell.items():
        if not lens.dual and len(verdicts) == 1 and verdicts[0].kind == _SINGLE_KIND:
            reviews[key] = verdicts[0].row  # today's single review: it is the cell's
            continue
        pair = assigned.get(key[0], UNASSIGNED)
        state = states[key] = settle(verdicts, pair, specs.get(key[1]))
        shown = seen_by(lens, state, pair).review
        if shown is not None:
            reviews[key] = shown.row
    withheld: Mapping[Key, Answer] = _NOTHING
    if lens.dual and lens.blind:
        withheld = {
            key: answer
            for key, answer in answers.items()
            if seen_by(lens, states.get(key, EMPTY), assigned.get(key[0], UNASSIGNED)).model_hidden
        }
        if withheld:
            answers = {key: a for key, a in answers.items() if key not in withheld}
    return ExportBatch(documents, answers, reviews, states, assigned, withheld)


def _match_column(variable: Variable, taken: set[str]) -> ExportVariable:
    setting = variable.match or {}
    name = f"{variable.name}_match"
    if name in taken:  # a codebook variable of that name: the column must not collide
        name = f"{variable.name}__match"
    return ExportVariable(
        name=name,
        label=f"{variable.label}: matched {setting.get('key_column')}",
        type=VariableType.TEXT,
        description=(
            f"The {setting.get('key_column')} of the row of reference list "
            f"'{setting.get('list')}' that {variable.name} was matched to (a reviewer's "
            "choice wins); blank when ambiguous or unmatched"
        ),
        position=variable.position,
        match_of=variable.name,
    )


def _export_variable(variable: Variable, version: int | None) -> ExportVariable:
    return ExportVariable(
        name=variable.name,
        label=variable.label,
        type=VariableType(variable.type),
        description=variable.description,
        allowed_values=tuple(variable.allowed_values),
        unit=variable.unit,
        examples=tuple(
            VariableExample(value=e.get("value"), snippet=e.get("snippet"))
            for e in variable.examples
        ),
        instructions=variable.instructions,
        required=variable.required,
        position=variable.position,
        prompt_version=version,
    )


def documents_per_batch(variable_count: int) -> int:
    return max(1, min(MAX_DOCUMENTS_PER_BATCH, CELLS_PER_BATCH // max(1, variable_count)))


async def export_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    project_id: uuid.UUID,
    codebook: Codebook,
    lens: Lens = OPEN_LENS,
) -> AsyncGenerator[ExportBatch, None]:
    """The project's documents in upload order, a batch at a time, with their cells.

    One session (one snapshot) for the whole export, released when the iterator is closed.
    """
    size = documents_per_batch(len(codebook.variable_keys))
    async with (
        sessionmaker() as session,
        aclosing(repository.stream_documents(session, project_id, size)) as pages,
    ):
        async for documents in pages:
            ids = [d.id for d in documents]
            answers = await repository.latest_answers(session, ids)
            rows = await repository.review_rows(session, ids)
            assigned = await repository.assignments(session, ids)
            yield settled_batch(documents, answers, rows, assigned, codebook, lens)


def export_batches_in_thread(
    database: Path, project_id: uuid.UUID, codebook: Codebook, lens: Lens = OPEN_LENS
) -> Iterator[ExportBatch]:
    """`export_batches` on a SQLite file, read in the calling (writer) thread, which must also
    close it: one read-only connection and one snapshot for the whole export."""
    size = documents_per_batch(len(codebook.variable_keys))
    with closing(connect_sqlite_reader(database)) as connection:
        reader = repository.SqliteExportReader(connection, project_id)
        for documents in reader.documents(size):
            answers, rows, assigned = reader.cells(documents)
            yield settled_batch(documents, answers, rows, assigned, codebook, lens)


def _batch_source(
    sessionmaker: async_sessionmaker[AsyncSession],
    project_id: uuid.UUID,
    codebook: Codebook,
    lens: Lens = OPEN_LENS,
) -> AsyncIterator[ExportBatch] | InThread[ExportBatch]:
    """Where an export's batches come from: read in the writer thread from a SQLite file,
    else on the event loop."""
    database = sqlite_file(sessionmaker)
    if database is not None:
        return InThread(lambda: export_batches_in_thread(database, project_id, codebook, lens))
    return export_batches(sessionmaker, project_id, codebook, lens)


async def batch_of(
    session: AsyncSession,
    documents: Sequence[DocumentRef],
    codebook: Codebook,
    lens: Lens = OPEN_LENS,
) -> ExportBatch:
    """One batch of documents with their cells, read and settled for `lens` as
    export_batches reads each of its batches (the results grid's reading of a single page)."""
    ids = [d.id for d in documents]
    answers = await repository.latest_answers(session, ids)
    rows = await repository.review_rows(session, ids)
    assigned = await repository.assignments(session, ids)
    return settled_batch(documents, answers, rows, assigned, codebook, lens)


async def over_cells(
    sessionmaker: async_sessionmaker[AsyncSession],
    project_id: uuid.UUID,
    codebook: Codebook,
    work: Callable[[Iterable[ExportBatch]], R],
    lens: Lens = OPEN_LENS,
) -> R:
    """`work(batches)` in a worker thread, over the project's documents in upload order with
    their cells' current answers and verdicts as `lens`'s reader may see them, read as an
    export reads them (on SQLite in that thread, else on the loop): the results grid's
    reading (extractions/grid.py)."""
    return await run_in_thread(work, _batch_source(sessionmaker, project_id, codebook, lens))


# ---------------------------------------------------------------------------------------------
# Rows (in the writer thread)


def wide_rows(codebook: Codebook, batches: Iterable[ExportBatch]) -> Iterator[WideRow]:
    """One row per document: each variable's final value, and flags for the flagged cells."""
    matched, match_reviews = codebook.matched_keys, codebook.match_reviews
    columns = tuple(
        (key, v.name, v.match_of is not None, key in matched)
        for key, v in zip(codebook.variable_keys, codebook.variables, strict=True)
    )
    for batch in batches:
        answers, reviews, withheld = batch.answers, batch.reviews, batch.withheld
        for document in batch.documents:
            values: dict[str, JsonValue] = {}
            flags: dict[str, CellFlags] = {}
            for variable_key, name, is_match_column, is_matched in columns:
                key = (document.key, variable_key)
                answer = answers.get(key)
                # A choice of row made on a value blind review withholds is withheld with it.
                reviewed = is_matched and key in match_reviews and key not in withheld
                if is_match_column:
                    status, match_key, _ = final_match(answer, match_reviews.get(key), reviewed)
                    values[name] = match_key if status == "matched" else None
                    continue
                review = reviews.get(key) if reviews else None
                newer = answer.newer_than_review if answer is not None else None
                value, cell_flags = final_value(answer, review, newer, reviewed)
                values[name] = value
                if cell_flags is not NO_FLAGS:
                    flags[name] = cell_flags
            yield WideRow(str(document.id), document.filename, values, flags)


def long_rows(codebook: Codebook, batches: Iterable[ExportBatch]) -> Iterator[LongRow]:
    """One row per (document, variable), in codebook order, with the answer's provenance
    (and, for a matched variable, its match)."""
    matched, match_reviews = codebook.matched_keys, codebook.match_reviews
    # Per column, once: what every cell of it needs (attribute reads per cell add up).
    columns = tuple(
        (key, v.name, v.type, key in matched)
        for key, v in zip(codebook.variable_keys, codebook.variables, strict=True)
        if v.match_of is None
    )
    no_match = (None, None, None)
    run_ids: dict[str, str] = {}
    for batch in batches:
        answers, reviews, withheld = batch.answers, batch.reviews, batch.withheld
        for document in batch.documents:
            document_id = str(document.id)
            filename = document.filename
            for variable_key, name, var_type, is_matched in columns:
                key = (document.key, variable_key)
                answer = answers.get(key)
                review = reviews.get(key) if reviews else None
                if is_matched:
                    reviewed = key in match_reviews and key not in withheld
                    match = final_match(answer, match_reviews.get(key), reviewed)
                else:
                    reviewed, match = False, no_match
                if answer is None:
                    value, flags = final_value(None, review, None)
                    yield LongRow(
                        document_id,
                        filename,
                        name,
                        var_type,
                        value,
                        review_status=review.status if review is not None else "",
                        flags=flags,
                        match_status=match[0],
                        match_key=match[1],
                    )
                    continue
                value, flags = final_value(answer, review, answer.newer_than_review, reviewed)
                run_id = run_ids.get(answer.run_key)
                if run_id is None:
                    run_id = run_ids[answer.run_key] = str(uuid.UUID(answer.run_key))
                yield LongRow(
                    document_id,
                    filename,
                    name,
                    var_type,
                    value,
                    answer.status,
                    answer.evidence,
                    answer.page,
                    answer.confidence,
                    answer.grounded,
                    review.status if review is not None else "",
                    answer.value if review is not None else None,
                    answer.model,
                    answer.prompt_version,
                    run_id,
                    answer.error,
                    flags,
                    answer.support,
                    *match,
                )


# ---------------------------------------------------------------------------------------------
# Exports


def stream_table(
    sessionmaker: async_sessionmaker[AsyncSession],
    project_id: uuid.UUID,
    codebook: Codebook,
    format: ExportFormat,
    layout: ExportLayout,
    flags: bool = False,
    lens: Lens = OPEN_LENS,
) -> AsyncIterator[bytes]:
    """The CSV or JSON export, wide or long, as UTF-8 chunks; nothing is read until iterated.
    `flags`: the wide layout gains a `<name>__flag` column per variable (the long one always
    has its `flags` column). `lens`: who it is for (dual review's blindness)."""

    def produce(batches: Iterable[ExportBatch]) -> Iterator[str]:
        if layout is ExportLayout.WIDE:
            wide = wide_rows(codebook, batches)
            if format is ExportFormat.CSV:
                return iter_wide_csv(codebook.variables, wide, flags)
            return iter_wide_json(codebook.variables, wide, flags)
        long = long_rows(codebook, batches)
        return iter_long_csv(long) if format is ExportFormat.CSV else iter_long_json(long)

    return stream_from_thread(produce, _batch_source(sessionmaker, project_id, codebook, lens))


async def write_workbook(
    sessionmaker: async_sessionmaker[AsyncSession],
    project_id: uuid.UUID,
    codebook: Codebook,
    path: Path,
    extra_sheets: Sequence[EvaluationTable] = (),
    lens: Lens = OPEN_LENS,
) -> None:
    """The Excel export (both layouts and the codebook, and `extra_sheets`) written to `path`."""

    def write(wide: Iterable[ExportBatch], long: Iterable[ExportBatch]) -> None:
        write_xlsx(
            path,
            codebook.variables,
            wide_rows(codebook, wide),
            long_rows(codebook, long),
            extra_sheets=extra_sheets,
        )

    await run_in_thread(
        write,
        _batch_source(sessionmaker, project_id, codebook, lens),
        _batch_source(sessionmaker, project_id, codebook, lens),
    )
