"""The results grid (GET …/results): one page of documents, each with its cells' current
state, sorted and filtered on the server, with counts per filter value.

A cell's state is the exports' (exports/service.py), not a second account of it: its current
answer and verdict come from the export's own reading (`over_cells`: the same queries, on
SQLite in a worker thread), settled by reviewing/verdicts.py for the caller as an export made
by them is (the final verdict: adjudication > the two reviewers' agreed verdict > single
review > the model's answer), its final value and flags from `final_value`, and its one `flag`
is the first of them by table.FLAG_PRECEDENCE (the order of the xlsx fills). A cell in an
open consistency finding carries `finding` besides (reflists/casework.py).

Dual review's blindness is GET …/extractions': a reviewer still blinded on a cell sees their
own verdict as its review and nobody else's (`dual_review` says no more than that endpoint's),
and in blind review, until they have reviewed it, not the model's answer either
(`model_hidden`: no value, flags or finding; an answer reads `succeeded`, "not stated"
included). Filters, counts and sorts see only what the caller sees. The `review` filter
follows what the cell shows: a document's assigned reviewer's own verdict, anyone else's the
final one (a conflict is unreviewed until adjudicated).

Filters, counts and sort run over every document of the project in that worker thread: what
decides them (final values, flags, review states) is computed there and nowhere in SQL. For
1,000 × 30 cells that is about half a second on the benchmark's 2-core machine, more under load
(benchmarks/RESULTS.md), so a later page of a query, asked for without its counts in upload or
name order with no cell filter, reads only its own cells (`pages_documents_only`).

- document_id: only these documents (the Cases view's links).
- name: the filename contains it (case-folded); value: a final value of a cell in scope, as
  the CSV export writes it (booleans also as yes/no), contains it.
- status / review / flag: the row has a cell in scope with that status (`not_extracted` for
  none), review state (a finished extraction without a review is unreviewed) or flag. The
  scope is the `variable_id` column, else every column.
- counts: for each value of each of those three, the rows (and cells) choosing it would
  give under every other filter in force — a faceted search's counts.
- sort: filename (natural: "copy 2" before "copy 10"), uploaded (the exports' order), value
  (of `sort_variable_id`, typed; cells without a value last in both directions), flag (most
  serious first: a column's flag, or a row's most serious one and then how many it has;
  rows without flags last). Ties keep upload order.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.documents.parsing.layout import OCR_LOW_CONFIDENCE
from quarry.documents.repository import documents_by_ids
from quarry.documents.schemas import DocumentOut
from quarry.errors import BadRequest
from quarry.exports.cells import format_text_value
from quarry.exports.repository import Answer, CurrentReview, DocumentRef, document_refs
from quarry.exports.service import (
    Codebook,
    ExportBatch,
    batch_of,
    export_codebook,
    final_value,
    over_cells,
)
from quarry.exports.table import FLAG_PRECEDENCE
from quarry.extractions import repository
from quarry.extractions.schemas import (
    CellStatus,
    GridCellOut,
    GridCount,
    GridCounts,
    GridDualReviewOut,
    GridExtractionOut,
    GridFlag,
    GridPage,
    GridReviewOut,
    GridRowOut,
    GridSort,
    ReviewState,
    SortOrder,
)
from quarry.models import ExtractionStatus, Project
from quarry.reflists import casework
from quarry.reviewing.verdicts import (
    EMPTY,
    OPEN_LENS,
    UNASSIGNED,
    DualView,
    Lens,
    dual_view,
)
from quarry.variables.types import VariableType

# Plain strings: the status columns come back as str (a StrEnum member hashes by its name).
_FINISHED = frozenset(
    {
        ExtractionStatus.SUCCEEDED.value,
        ExtractionStatus.NOT_FOUND.value,
        ExtractionStatus.FAILED.value,
    }
)
_PENDING = ExtractionStatus.PENDING.value
_ANSWERED = frozenset({ExtractionStatus.SUCCEEDED.value, ExtractionStatus.NOT_FOUND.value})
_SUCCEEDED = ExtractionStatus.SUCCEEDED.value
_CANCELLED = ExtractionStatus.CANCELLED.value
_NOT_EXTRACTED = CellStatus.NOT_EXTRACTED.value
_REVIEWED, _UNREVIEWED = ReviewState.REVIEWED.value, ReviewState.UNREVIEWED.value
_FINDING = GridFlag.FINDING.value
#: A flag's place in the precedence (0 most serious); a plain value after every flag, and a
#: cell with nothing at all after that.
_RANK = {name: i for i, name in enumerate(FLAG_PRECEDENCE)}
_VALUE_RANK, _EMPTY_RANK = len(FLAG_PRECEDENCE), len(FLAG_PRECEDENCE) + 1
_DIGITS = re.compile(r"(\d+)", re.ASCII)


@dataclass(frozen=True)
class GridQuery:
    limit: int
    offset: int
    sort: GridSort = GridSort.UPLOADED
    order: SortOrder = SortOrder.ASC
    sort_variable_id: uuid.UUID | None = None
    #: The column the status, review, flag and value filters look at (None: every column).
    variable_id: uuid.UUID | None = None
    status: CellStatus | None = None
    review: ReviewState | None = None
    flag: GridFlag | None = None
    name: str | None = None
    value: str | None = None
    #: Only these documents (None: every one).
    document_ids: frozenset[uuid.UUID] | None = None
    #: Whether to count the rows per filter value (a later page of the same query has the
    #: same counts).
    counts: bool = True

    @property
    def pages_documents_only(self) -> bool:
        """Whether the page follows from the documents alone: no counts, no filter on cells,
        in upload or name order. Then only the page's cells are read."""
        return (
            not self.counts
            and self.status is None
            and self.review is None
            and self.flag is None
            and self.value is None
            and self.sort in (GridSort.UPLOADED, GridSort.FILENAME)
        )


class _Cell(NamedTuple):
    #: As a user reads it (a never-started task of a stopped run is cancelled), or
    #: not_extracted.
    status: str
    value: Any  # the final value
    #: The cell's flags by name in precedence order, `finding` last (the filter's values).
    flags: tuple[str, ...]
    #: reviewed, unreviewed (a finished extraction without a review) or None (neither).
    review_state: str | None
    finding: bool
    answer: Answer | None
    review: CurrentReview | None
    match_reviewed: bool
    #: Blind review withholds the answer from the caller (`answer` is only its status).
    hidden: bool = False
    #: In dual review: the cell's state as the caller may see it.
    dual: DualView[CurrentReview] | None = None


@dataclass(slots=True)
class _Row:
    index: int  # in upload order
    document: DocumentRef
    cells: tuple[_Cell, ...]


@dataclass
class _Selection:
    """What the worker thread hands back: the page's rows, and the figures around them."""

    page: list[_Row]
    total: int
    documents_total: int
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    cell_counts: dict[str, Counter[str]] = field(default_factory=dict)


class _Columns(NamedTuple):
    keys: tuple[str, ...]  # the codebook's variable keys (exports/repository.py), in order
    ids: tuple[uuid.UUID, ...]
    matched: tuple[bool, ...]


def _columns(codebook: Codebook) -> _Columns:
    shown = [
        (key, v)
        for key, v in zip(codebook.variable_keys, codebook.variables, strict=True)
        if v.match_of is None  # the exports' `<name>_match` column is not a grid column
    ]
    return _Columns(
        tuple(key for key, _ in shown),
        tuple(uuid.UUID(key) for key, _ in shown),
        tuple(key in codebook.matched_keys for key, _ in shown),
    )


async def results_grid(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    project: Project,
    query: GridQuery,
    lens: Lens = OPEN_LENS,
) -> GridPage:
    """One page of the project's results grid as `lens`'s viewer may see it (see the module
    docstring)."""
    codebook = await export_codebook(session, project.id)
    columns = _columns(codebook)
    scope = _column_of(columns, query.variable_id, "variable_id")
    sort_column = _column_of(columns, query.sort_variable_id, "sort_variable_id")
    if query.sort is GridSort.VALUE and sort_column is None:
        raise BadRequest("Sorting by value needs the variable to sort by: send sort_variable_id.")
    stopped = await repository.stopped_run_ids(session, project.id)
    findings = await _finding_cells(session, project)

    def select_rows(batches: Iterable[ExportBatch]) -> _Selection:
        rows = _rows(codebook, columns, batches, stopped, findings, lens)
        return _select(rows, query, scope, sort_column)

    if query.pages_documents_only:
        selection = await _page_of_documents(
            session, project, codebook, columns, query, stopped, findings, lens
        )
    else:
        selection = await over_cells(sessionmaker, project.id, codebook, select_rows, lens)
    documents = await documents_by_ids(session, project.id, [r.document.id for r in selection.page])
    return GridPage(
        items=[
            GridRowOut(
                document=DocumentOut.of(documents[row.document.id]),
                cells=[_cell_out(v, cell) for v, cell in zip(columns.ids, row.cells, strict=True)],
            )
            for row in selection.page
            if row.document.id in documents  # deleted while the page was read
        ],
        total=selection.total,
        limit=query.limit,
        offset=query.offset,
        documents_total=selection.documents_total,
        counts=(
            GridCounts(
                status=_counts(selection, "status", [s.value for s in CellStatus]),
                review=_counts(selection, "review", [s.value for s in ReviewState]),
                flag=_counts(selection, "flag", [f.value for f in GridFlag]),
            )
            if query.counts
            else None
        ),
    )


async def _page_of_documents(
    session: AsyncSession,
    project: Project,
    codebook: Codebook,
    columns: _Columns,
    query: GridQuery,
    stopped: set[uuid.UUID],
    findings: frozenset[tuple[uuid.UUID, uuid.UUID]],
    lens: Lens,
) -> _Selection:
    """The page of a query that needs no cell but the page's (`pages_documents_only`): the
    documents in order, and the page's cells read as one export batch is."""
    documents = await document_refs(session, project.id)
    chosen = [d for d in documents if _document_chosen(d, query)]
    ordered = _ordered_documents(chosen, query)
    page = ordered[query.offset : query.offset + query.limit]
    batch = await batch_of(session, page, codebook, lens)
    return _Selection(
        page=_rows(codebook, columns, [batch], stopped, findings, lens),
        total=len(ordered),
        documents_total=len(documents),
    )


def _document_chosen(document: DocumentRef, query: GridQuery) -> bool:
    """Whether the document filters (document_id, name) let the document through."""
    if query.document_ids is not None and document.id not in query.document_ids:
        return False
    return query.name is None or query.name.casefold() in document.filename.casefold()


def _column_of(columns: _Columns, variable_id: uuid.UUID | None, parameter: str) -> int | None:
    if variable_id is None:
        return None
    try:
        return columns.ids.index(variable_id)
    except ValueError:
        raise BadRequest(f"{parameter}: no such variable in this project.") from None


async def _finding_cells(
    session: AsyncSession, project: Project
) -> frozenset[tuple[uuid.UUID, uuid.UUID]]:
    """(document, variable) of every cell in an open finding (none without a case key)."""
    if not project.case_key:
        return frozenset()
    work = await casework.casework(session, project)
    return frozenset(
        (source.document_id, finding.variable.id)
        for finding in work.findings
        if finding.status == "open"
        for group in finding.values
        for source in group.sources
    )


# ---------------------------------------------------------------------------------------------
# In the worker thread


def _rows(
    codebook: Codebook,
    columns: _Columns,
    batches: Iterable[ExportBatch],
    stopped: set[uuid.UUID],
    findings: frozenset[tuple[uuid.UUID, uuid.UUID]],
    lens: Lens = OPEN_LENS,
) -> list[_Row]:
    """Every document in upload order with its cells' state, as the wide export made by
    `lens`'s viewer has them.

    The loop runs once per cell of the project on every request: it keeps to dict lookups,
    final_value and one tuple (and in dual review one dual_view).
    """
    match_reviews = codebook.match_reviews
    stopped_keys: dict[str, bool] = {}  # run key → stopped (a few runs, thousands of cells)
    shown = tuple(zip(columns.keys, columns.ids, columns.matched, strict=True))
    dual = lens.dual
    rows: list[_Row] = []
    for batch in batches:
        answers, reviews = batch.answers, batch.reviews
        withheld, states = batch.withheld, batch.states
        for document in batch.documents:
            pair = batch.assigned.get(document.key, UNASSIGNED) if dual else UNASSIGNED
            cells: list[_Cell] = []
            for variable_key, variable_id, matched in shown:
                key = (document.key, variable_key)
                answer = answers.get(key)
                hidden = False
                if answer is None and withheld:
                    answer = withheld.get(key)
                    hidden = answer is not None
                review = reviews.get(key) if reviews else None
                match_reviewed = matched and key in match_reviews
                if answer is None or hidden:
                    # A withheld answer counts as none: its value and flags are the model's.
                    value, flags = final_value(None, review, None)
                    status = _NOT_EXTRACTED
                else:
                    value, flags = final_value(
                        answer, review, answer.newer_than_review, match_reviewed
                    )
                if answer is not None:
                    status = answer.status
                    if status == _PENDING:
                        run_stopped = stopped_keys.get(answer.run_key)
                        if run_stopped is None:
                            run_stopped = uuid.UUID(answer.run_key) in stopped
                            stopped_keys[answer.run_key] = run_stopped
                        if run_stopped:
                            status = _CANCELLED
                    elif hidden and status in _ANSWERED:
                        status = _SUCCEEDED  # not even whether the document states it
                view = dual_view(lens, states.get(key, EMPTY), pair) if dual else None
                # What the cell shows as its review: a document's reviewer their own verdict.
                shown_review = (
                    (view.own.row if view.own else None)
                    if view is not None and view.slot
                    else review
                )
                if shown_review is not None:
                    review_state: str | None = _REVIEWED
                elif status in _FINISHED:
                    review_state = _UNREVIEWED
                else:
                    review_state = None
                names = flags.ranked
                finding = not hidden and bool(findings) and (document.id, variable_id) in findings
                if finding:
                    names = (*names, _FINDING)
                cells.append(
                    _Cell(
                        status,
                        value,
                        names,
                        review_state,
                        finding,
                        answer,
                        review,
                        match_reviewed,
                        hidden,
                        view,
                    )
                )
            rows.append(_Row(len(rows), document, tuple(cells)))
    return rows


def _search_text(value: Any) -> str:
    """A final value as the value search reads it: the CSV's text, booleans also as yes/no."""
    if value is True:
        return "true yes"
    if value is False:
        return "false no"
    return format_text_value(VariableType.TEXT, value).casefold()


_FACETS = ("status", "review", "flag")


def _facet_values(cells: Sequence[_Cell]) -> tuple[list[str], list[str], list[str]]:
    """Each filter's values among the cells (one per cell; a cell's flags each)."""
    review = [c.review_state for c in cells if c.review_state is not None]
    flags = [name for c in cells if c.flags for name in c.flags]
    return [c.status for c in cells], review, flags


def _select(
    rows: list[_Row], query: GridQuery, scope: int | None, sort_column: int | None
) -> _Selection:
    needle = query.value.casefold() if query.value else None
    wanted = (
        query.status.value if query.status else None,
        query.review.value if query.review else None,
        query.flag.value if query.flag else None,
    )
    row_counts: tuple[Counter[str], ...] = (Counter(), Counter(), Counter())
    cell_counts: tuple[Counter[str], ...] = (Counter(), Counter(), Counter())
    chosen: list[_Row] = []
    for row in rows:
        if not _document_chosen(row.document, query):
            continue
        cells = row.cells if scope is None else (row.cells[scope],)
        if needle is not None and not any(
            c.value is not None and needle in _search_text(c.value) for c in cells
        ):
            continue
        values = _facet_values(cells)
        present = [set(v) for v in values]
        # A row is reviewed when nothing in it is left to review.
        if _UNREVIEWED in present[1]:
            present[1].discard(_REVIEWED)
        passes = [w is None or w in p for w, p in zip(wanted, present, strict=True)]
        failing = passes.count(False)
        if failing > 1:
            continue
        for facet in range(3):
            # Counted when every other filter lets the row through (a faceted count).
            if failing == 0 or not passes[facet]:
                row_counts[facet].update(present[facet])
                cell_counts[facet].update(values[facet])
        if failing == 0:
            chosen.append(row)
    ordered = _sorted(chosen, query, sort_column)
    return _Selection(
        page=ordered[query.offset : query.offset + query.limit],
        total=len(ordered),
        documents_total=len(rows),
        counts=dict(zip(_FACETS, row_counts, strict=True)),
        cell_counts=dict(zip(_FACETS, cell_counts, strict=True)),
    )


def _natural(text: str) -> tuple[tuple[int, int, str], ...]:
    """A sort key reading digit runs as numbers ("copy 2" before "copy 10"), case-folded."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in _DIGITS.split(text.casefold())
        if part
    )


def _value_key(value: Any) -> tuple[Any, ...]:
    """A typed order for final values: booleans, then numbers, then text (dates are ISO text,
    so they sort as dates), then lists."""
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, _natural(value))
    return (3, _natural(format_text_value(VariableType.TEXT, value)))


def _flag_rank(cell: _Cell) -> int:
    """The place of the cell's first flag in the precedence (`finding` is none of them)."""
    first = cell.flags[0] if cell.flags else None
    if first is not None and first != _FINDING:
        return _RANK[first]
    return _VALUE_RANK if cell.answer is not None or cell.review is not None else _EMPTY_RANK


def _ordered_documents(documents: list[DocumentRef], query: GridQuery) -> list[DocumentRef]:
    """Documents (in upload order) in the order of an upload or filename sort."""
    descending = query.order is SortOrder.DESC
    if query.sort is GridSort.FILENAME:
        return sorted(documents, key=lambda d: _natural(d.filename), reverse=descending)
    return documents[::-1] if descending else documents


def _sorted(rows: list[_Row], query: GridQuery, column: int | None) -> list[_Row]:
    descending = query.order is SortOrder.DESC
    if query.sort in (GridSort.UPLOADED, GridSort.FILENAME):
        order = _ordered_documents([r.document for r in rows], query)
        by_document = {r.document.id: r for r in rows}
        return [by_document[d.id] for d in order]
    if query.sort is GridSort.VALUE:
        assert column is not None  # checked before reading
        valued = [r for r in rows if _has_value(r.cells[column].value)]
        valued.sort(key=lambda r: _value_key(r.cells[column].value), reverse=descending)
        return valued + [r for r in rows if not _has_value(r.cells[column].value)]
    # By flag: most serious first (asc), rows without any flag last in both directions.
    if column is not None:
        ranked = [(_flag_rank(r.cells[column]), r) for r in rows]
        flagged = [(rank, r) for rank, r in ranked if rank < _VALUE_RANK]
        flagged.sort(key=lambda item: item[0], reverse=descending)
        rest = [(rank, r) for rank, r in ranked if rank >= _VALUE_RANK]
        rest.sort(key=lambda item: item[0])
        return [r for _, r in flagged] + [r for _, r in rest]
    keyed = []
    for row in rows:
        ranks = [_flag_rank(c) for c in row.cells]
        flagged_count = sum(1 for rank in ranks if rank < _VALUE_RANK)
        keyed.append(((min(ranks, default=_EMPTY_RANK), -flagged_count), flagged_count, row))
    with_flags = [item for item in keyed if item[1]]
    with_flags.sort(key=lambda item: item[0], reverse=descending)
    return [row for *_, row in with_flags] + [row for _, count, row in keyed if not count]


def _has_value(value: Any) -> bool:
    return value is not None and value != []


def _counts(selection: _Selection, facet: str, values: Sequence[str]) -> list[GridCount]:
    rows, cells = selection.counts[facet], selection.cell_counts[facet]
    return [GridCount(value=v, documents=rows[v], cells=cells[v]) for v in values]


# ---------------------------------------------------------------------------------------------
# Out


def _cell_out(variable_id: uuid.UUID, cell: _Cell) -> GridCellOut:
    answer, review = cell.answer, cell.review
    extraction = None
    if answer is not None and cell.hidden:
        extraction = GridExtractionOut(
            status=ExtractionStatus(cell.status),
            value=None,
            confidence=None,
            grounded=None,
            support=None,
            ocr_low_confidence=False,
            models_disagree=False,
            match_status=None,
            match_reviewed=False,
            error=answer.error,
        )
    elif answer is not None:
        ocr = answer.ocr_confidence
        extraction = GridExtractionOut(
            status=ExtractionStatus(cell.status),
            value=answer.value,
            confidence=answer.confidence,
            grounded=answer.grounded,
            support=answer.support,
            ocr_low_confidence=ocr is not None and ocr < OCR_LOW_CONFIDENCE,
            models_disagree=answer.agreement == "disagree",
            match_status=answer.match_status,
            match_reviewed=cell.match_reviewed,
            error=answer.error,
        )
    return GridCellOut(
        variable_id=variable_id,
        extraction=extraction,
        review=(
            GridReviewOut(status=review.status, value=review.value) if review is not None else None
        ),
        value=cell.value,
        flags=[GridFlag(f) for f in cell.flags],
        flag=GridFlag(cell.flags[0]) if cell.flags else None,
        finding=cell.finding,
        model_hidden=cell.hidden,
        dual_review=_dual_out(cell.dual) if cell.dual is not None else None,
    )


def _dual_out(view: DualView[CurrentReview]) -> GridDualReviewOut:
    own = view.own.row if view.own is not None else None
    return GridDualReviewOut(
        assigned=view.slot,
        your_review=GridReviewOut(status=own.status, value=own.value) if own else None,
        both_reviewed=view.both_reviewed,
        agree=view.agree,
        adjudicated=view.adjudicated,
    )
