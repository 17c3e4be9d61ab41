"""Cases: a project's documents grouped by a key, and each variable combined across them.

The case key is a variable (`projects.case_key`): when the variable is matched to a reference
list, a document's case is the key of its matched row (a reviewer's choice winning; an
ambiguous or unmatched document belongs to no case until someone chooses), else the value
itself, compared as text (case, spacing and end punctuation ignored).

Everything here is computed from what is stored — final values (reviewed values win, as in
exports; in dual review what the reader may see of them, as in their export), matches and
reviews — whenever it is read, so every edit is reflected at once and no
model is asked. The project's cells are read in one pass; that is proportional to the
project's documents × variables, as an export is.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.evaluation.compare import text_key
from quarry.exports.service import final_cell
from quarry.extractions import repository as extractions_repository
from quarry.models import Project, ReferenceList, Variable
from quarry.reflists import repository
from quarry.reflists.settings import CombineRule
from quarry.reviewing.service import cell_views
from quarry.reviewing.verdicts import OPEN_LENS, Lens
from quarry.variables.repository import list_variables
from quarry.variables.types import VariableType

#: Documents whose cells are read per query.
_DOCUMENT_BATCH = 500


@dataclass(frozen=True)
class CellSource:
    """A document's final value of a variable, with where it came from."""

    document_id: uuid.UUID
    filename: str
    value: Any
    evidence: str | None
    page: int | None
    extraction_id: uuid.UUID | None
    reviewed: bool


@dataclass
class ProjectCells:
    documents: list[tuple[uuid.UUID, str]]
    variables: list[Variable]
    #: Cells with a value (not "not stated"), by (document, variable).
    cells: dict[tuple[uuid.UUID, uuid.UUID], CellSource]
    #: For matched variables: each document's matched key (None: ambiguous or unmatched).
    matched_keys: dict[tuple[uuid.UUID, uuid.UUID], str | None]

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)


@dataclass(frozen=True)
class Combined:
    value: Any
    document_ids: list[uuid.UUID]


@dataclass
class Case:
    key: str
    documents: list[tuple[uuid.UUID, str]]
    values: dict[str, Combined] = field(default_factory=dict)
    #: The case's reference row (when the case key is a matched variable): its number and
    #: cells in the list version currently in use.
    reference_row: dict[str, Any] | None = None


async def load_project_cells(
    session: AsyncSession, project: Project, lens: Lens = OPEN_LENS
) -> ProjectCells:
    """Every cell's final value, as `lens`'s viewer may see it (reviewing/verdicts.py): in
    dual review a blinded member's own verdict while the cell is sealed, and in blind review
    nothing of the model's answer (value, quote, match) until they have reviewed it."""
    variables = list(await list_variables(session, project.id))
    documents = await repository.documents_in_upload_order(session, project.id)
    names = dict(documents)
    cells: dict[tuple[uuid.UUID, uuid.UUID], CellSource] = {}
    keys: dict[tuple[uuid.UUID, uuid.UUID], str | None] = {}
    matched = [v.id for v in variables if v.match]
    for start in range(0, len(documents), _DOCUMENT_BATCH):
        ids = [d for d, _ in documents[start : start + _DOCUMENT_BATCH]]
        answers = await extractions_repository.latest_answers(session, ids)
        views = await cell_views(session, project.id, ids, lens)
        hidden = {key for key in answers if views.seen(key).model_hidden} if lens.blind else set()
        match_reviews = await repository.current_match_reviews(session, ids, matched)
        for cell_key in set(answers) | set(views.states):
            extraction, version = (
                (None, None) if cell_key in hidden else answers.get(cell_key, (None, None))
            )
            seen = views.seen(cell_key).review
            review = seen.row if seen is not None else None
            cell = final_cell(extraction, version, review)
            if cell.value is not None:
                cells[cell_key] = CellSource(
                    document_id=cell_key[0],
                    filename=names.get(cell_key[0], ""),
                    value=cell.value,
                    evidence=extraction.evidence if extraction is not None else None,
                    page=extraction.page if extraction is not None else None,
                    extraction_id=extraction.id if extraction is not None else None,
                    reviewed=review is not None,
                )
        for document_id in ids:
            for variable_id in matched:
                cell_key = (document_id, variable_id)
                if lens.blind and views.seen(cell_key).model_hidden:
                    continue  # the match is of the model's value, which blind review withholds
                if cell_key in match_reviews:
                    keys[cell_key] = match_reviews[cell_key].key
                    continue
                extraction, _ = answers.get(cell_key, (None, None))
                if extraction is not None and extraction.match_status == "matched":
                    keys[cell_key] = extraction.match_key
    return ProjectCells(documents, variables, cells, keys)


def document_cases(project: Project, data: ProjectCells) -> dict[str, list[tuple[uuid.UUID, str]]]:
    """The case key of each document that has one, as case key → documents (upload order)."""
    setting = project.case_key or {}
    variable = data.variable(str(setting.get("variable", "")))
    cases: dict[str, list[tuple[uuid.UUID, str]]] = {}
    if variable is None:
        return cases
    shown: dict[str, str] = {}
    for document_id, filename in data.documents:
        if variable.match:
            key = data.matched_keys.get((document_id, variable.id))
        else:
            cell = data.cells.get((document_id, variable.id))
            key = None
            if cell is not None:
                written = _as_text(cell.value)
                key = shown.setdefault(text_key(written), written) if written else None
        if key:
            cases.setdefault(key, []).append((document_id, filename))
    return dict(sorted(cases.items()))


def _as_text(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value).strip()


def value_key(value: Any) -> str:
    """Equal for values a person would call the same (text ignoring case and spacing)."""
    if isinstance(value, str):
        return text_key(value)
    if isinstance(value, list):
        return json.dumps(sorted(value_key(v) for v in value))
    return json.dumps(value)


def combine(
    variable: Variable,
    sources: Sequence[CellSource],
    dates: dict[uuid.UUID, str],
) -> Combined:
    """The variable's value over a case's documents (`sources`, in upload order), by its
    `combine` rule (default first); `dates` are the documents' values of the `by` variable."""
    if not sources:
        return Combined(None, [])
    rule = CombineRule((variable.combine or {}).get("rule", CombineRule.FIRST))
    if rule is CombineRule.FIRST:
        return Combined(sources[0].value, [sources[0].document_id])
    if rule is CombineRule.LATEST:
        dated = [s for s in sources if s.document_id in dates]
        if not dated:
            return Combined(sources[0].value, [sources[0].document_id])
        # Partial dates sort before the full dates of the same period (ISO text order).
        latest = max(enumerate(dated), key=lambda item: (dates[item[1].document_id], item[0]))[1]
        return Combined(latest.value, [latest.document_id])
    if rule is CombineRule.MOST_COMMON:
        counts = Counter(value_key(s.value) for s in sources)
        best = max(counts.values())
        winner = next(s for s in sources if counts[value_key(s.value)] == best)
        key = value_key(winner.value)
        return Combined(winner.value, [s.document_id for s in sources if value_key(s.value) == key])
    if rule is CombineRule.ALL:
        seen: dict[str, Any] = {}
        for source in sources:
            items = source.value if isinstance(source.value, list) else [source.value]
            for item in items:
                seen.setdefault(value_key(item), item)
        return Combined(list(seen.values()), [s.document_id for s in sources])
    numbers = [
        s for s in sources if isinstance(s.value, int | float) and not isinstance(s.value, bool)
    ]
    if not numbers:
        return Combined(None, [])
    if rule is CombineRule.SUM:
        return Combined(sum(s.value for s in numbers), [s.document_id for s in numbers])
    top = max(numbers, key=lambda s: s.value)
    return Combined(top.value, [top.document_id])


async def reference_rows(
    session: AsyncSession, project: Project, data: ProjectCells, keys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The reference row of each case key, when the case key is a matched variable."""
    variable = data.variable(str((project.case_key or {}).get("variable", "")))
    if variable is None or not variable.match:
        return {}
    reference_list = await session.get(ReferenceList, uuid.UUID(variable.match["list_id"]))
    if reference_list is None or reference_list.current_version_id is None:
        return {}
    return await repository.rows_by_key(
        session, reference_list.current_version_id, variable.match["key_column"], list(keys)
    )


async def build_cases(session: AsyncSession, project: Project, data: ProjectCells) -> list[Case]:
    grouped = document_cases(project, data)
    rows = await reference_rows(session, project, data, list(grouped))
    cases: list[Case] = []
    for key, documents in grouped.items():
        case = Case(key=key, documents=documents, reference_row=rows.get(key))
        for variable in data.variables:
            sources = [c for d, _ in documents if (c := data.cells.get((d, variable.id)))]
            dates: dict[uuid.UUID, str] = {}
            by = data.variable(str((variable.combine or {}).get("by", "")))
            if by is not None and by.type == VariableType.DATE:
                for document_id, _ in documents:
                    dated = data.cells.get((document_id, by.id))
                    if dated is not None and isinstance(dated.value, str):
                        dates[document_id] = dated.value
            case.values[variable.name] = combine(variable, sources, dates)
        cases.append(case)
    return cases
