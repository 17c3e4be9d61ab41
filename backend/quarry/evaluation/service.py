"""Evaluating extracted values against gold values: from a CSV, or from people's reviews.

Predictions are, by default, what an export shows: the final value of each cell, a review's
value where the cell was reviewed, else the newest answer (see ``exports.service.final_cell``).
With a ``run_id`` they are that run's extractions (a two-profile run's first profile's: its
values), and for a two-profile run each profile is measured too, with their agreement
against gold: where both agree how often they are right, where they disagree how often each
is. When the reviews are the gold standard the
predictions are the latest extracted values instead, since the final values would be the
reviews themselves.

Dual review (reviewing/verdicts.py): a member blinded on a cell is measured with what they
may see of it — reviewed values are their own verdicts while it is sealed, never another
reviewer's. In blind review a gold-CSV evaluation is refused (403) to whoever the model's
answer of a compared cell is still hidden from; an evaluation against reviews only compares
cells whose verdict the caller sees, and so whose model answer they may see as well.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.errors import BadRequest, Forbidden, NotFound
from quarry.evaluation import repository
from quarry.evaluation.compare import (
    SET_TYPES,
    CellComparison,
    Outcome,
    Prediction,
    PredictionState,
    Tolerance,
    compare_cell,
    parse_gold,
)
from quarry.evaluation.gold_csv import GoldFileError, GoldTable, read_gold_csv
from quarry.evaluation.metrics import Tally, ratio
from quarry.evaluation.schemas import (
    AgreementVsGoldOut,
    CellOut,
    DocumentResultOut,
    EvaluationOut,
    GoldSource,
    MetricsOut,
    PredictionSource,
    ProfileMetricsOut,
    RunAgreementVsGoldOut,
    ToleranceOut,
    VariableAgreementVsGoldOut,
    VariableMetricsOut,
)
from quarry.exports.service import final_cell
from quarry.extractions.repository import latest_answers
from quarry.models import (
    ACTIVE_RUN_STATUSES,
    Agreement,
    Document,
    Extraction,
    ExtractionStatus,
    Project,
    Review,
    ReviewStatus,
    Run,
    Variable,
)
from quarry.reviewing.service import cell_views, final_reviews
from quarry.reviewing.verdicts import OPEN_LENS, Lens
from quarry.runs.repository import get_run
from quarry.runs.snapshot import RunSnapshot
from quarry.variables.repository import list_variables
from quarry.variables.types import JsonValue, TypeSpec, VariableType
from quarry.variables.values import InvalidValue

#: The largest gold CSV accepted (413 beyond): a million cells is far more than any codebook.
MAX_GOLD_BYTES = 10 * 1024 * 1024
_BATCH = 500
_MAX_WARNINGS = 100

Key = tuple[uuid.UUID, uuid.UUID]  # (document id, variable id)
T = TypeVar("T")


@dataclass(frozen=True)
class GoldCell:
    value: JsonValue  # None: not stated
    raw: str | None = None  # the CSV cell as written
    error: str | None = None  # why the gold value cannot be used


@dataclass
class _Warnings:
    items: list[str] = field(default_factory=list)
    dropped: int = 0

    def add(self, message: str) -> None:
        if len(self.items) < _MAX_WARNINGS:
            self.items.append(message)
        else:
            self.dropped += 1

    def extend(self, messages: Iterable[str]) -> None:
        for message in messages:
            self.add(message)

    def listed(self) -> list[str]:
        more = [f"… and {self.dropped} more warnings."] if self.dropped else []
        return [*self.items, *more]


def _spec(variable: Variable) -> TypeSpec:
    return TypeSpec(
        type=VariableType(variable.type),
        allowed_values=tuple(variable.allowed_values),
        unit=variable.unit,
    )


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


# ---------------------------------------------------------------------------------------------
# Predictions


def _from_extraction(extraction: Extraction | None) -> Prediction:
    if extraction is None:
        return Prediction(PredictionState.NOT_EXTRACTED)
    if extraction.status == ExtractionStatus.SUCCEEDED and extraction.value is not None:
        return Prediction(
            PredictionState.VALUE,
            extraction.value,
            extraction.grounded,
            confidence=extraction.confidence,
            support=extraction.support,
        )
    if extraction.status in (ExtractionStatus.SUCCEEDED, ExtractionStatus.NOT_FOUND):
        return Prediction(PredictionState.NOT_STATED)
    error = f" ({extraction.error})" if extraction.error else ""
    return Prediction(
        PredictionState.NO_ANSWER, detail=f"the extraction {extraction.status}{error}"
    )


def _from_final_cell(extraction: Extraction | None, review: Review | None) -> Prediction:
    """The value an export shows; a reviewed value has no quote of its own to be grounded."""
    if review is None:
        return _from_extraction(extraction)
    value = final_cell(extraction, None, review).value
    if value is None:  # corrected to "not stated", or rejected: the export shows a blank
        return Prediction(PredictionState.NOT_STATED)
    from_extraction = (
        extraction is not None
        and extraction.status == ExtractionStatus.SUCCEEDED
        and extraction.value == value
    )
    if not (from_extraction and extraction):
        return Prediction(PredictionState.VALUE, value)
    return Prediction(
        PredictionState.VALUE,
        value,
        extraction.grounded,
        confidence=extraction.confidence,
        support=extraction.support,
    )


async def _run_answers(
    session: AsyncSession, document_ids: Sequence[uuid.UUID], run_id: uuid.UUID, slot: int
) -> dict[Key, Extraction]:
    """A run's extractions by one of its profiles (slot 0: the run's values)."""
    extractions: dict[Key, Extraction] = {}
    for chunk in _chunks(document_ids):
        extractions |= await repository.run_extractions(session, run_id, chunk, slot)
    return extractions


async def _predictions(
    session: AsyncSession,
    project_id: uuid.UUID,
    document_ids: Sequence[uuid.UUID],
    run_id: uuid.UUID | None,
    reviewed_values: bool,
    lens: Lens = OPEN_LENS,
) -> dict[Key, Prediction]:
    if run_id is not None:
        extractions = await _run_answers(session, document_ids, run_id, 0)
        return {key: _from_extraction(e) for key, e in extractions.items()}
    predictions: dict[Key, Prediction] = {}
    for chunk in _chunks(document_ids):
        answers = await latest_answers(session, chunk)
        reviews = await final_reviews(session, project_id, chunk, lens) if reviewed_values else {}
        for key in answers.keys() | reviews.keys():
            extraction = answers[key][0] if key in answers else None
            predictions[key] = _from_final_cell(extraction, reviews.get(key))
    return predictions


async def _checked_run(session: AsyncSession, project: Project, run_id: uuid.UUID) -> Run:
    run = await get_run(session, project.id, run_id)
    if run is None:
        raise NotFound("No such run in this project.")
    return run


def _run_warnings(run: Run | None) -> list[str]:
    if run is not None and run.status in ACTIVE_RUN_STATUSES:
        return ["The run has not finished; its unfinished pairs count as having no answer."]
    return []


# ---------------------------------------------------------------------------------------------
# Two profiles


@dataclass
class _AgreementTally:
    agreed: int = 0
    agreed_correct: int = 0
    disagreed: int = 0
    first_correct: int = 0
    second_correct: int = 0
    neither_correct: int = 0
    one_missing: int = 0

    def add(self, verdict: str | None, first: bool | None, second: bool | None) -> None:
        if verdict == Agreement.ONE_MISSING:
            self.one_missing += 1
        elif verdict == Agreement.AGREE:
            self.agreed += 1
            self.agreed_correct += bool(first)
        elif verdict == Agreement.DISAGREE:
            self.disagreed += 1
            self.first_correct += bool(first)
            self.second_correct += bool(second)
            self.neither_correct += not (first or second)

    def merge(self, other: _AgreementTally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def figures(self) -> dict[str, int | float | None]:
        return {
            "compared": self.agreed + self.disagreed,
            **{name: getattr(self, name) for name in self.__dataclass_fields__},
            "agreed_accuracy": ratio(self.agreed_correct, self.agreed),
            "first_accuracy": ratio(self.first_correct, self.disagreed),
            "second_accuracy": ratio(self.second_correct, self.disagreed),
        }


def _agreement_vs_gold(
    gold: dict[Key, GoldCell],
    documents: Sequence[Document],
    variables: Sequence[Variable],
    first: dict[Key, Extraction],
    second: dict[Key, Extraction],
    tolerance: Tolerance,
) -> RunAgreementVsGoldOut:
    """Per variable and over all: of the pairs with a usable gold value, those the profiles
    agreed on (by the verdict stored with the pair) and how many of them are right, and those
    they disagreed on and which profile is right."""
    tallies = {v.id: _AgreementTally() for v in variables}
    for variable in variables:
        spec = _spec(variable)
        for document in documents:
            key = (document.id, variable.id)
            cell, answer = gold.get(key), first.get(key)
            if cell is None or cell.error is not None or answer is None:
                continue
            right = [
                compare_cell(spec, cell.value, _from_extraction(e), tolerance).correct
                for e in (answer, second.get(key))
            ]
            tallies[variable.id].add(answer.agreement, right[0], right[1])
    overall = _AgreementTally()
    out = []
    for variable in variables:
        tally = tallies[variable.id]
        overall.merge(tally)
        out.append(
            VariableAgreementVsGoldOut(
                variable_id=variable.id, variable=variable.name, **tally.figures()
            )
        )
    return RunAgreementVsGoldOut(overall=AgreementVsGoldOut(**overall.figures()), variables=out)


async def _two_profiles(
    session: AsyncSession,
    run: Run | None,
    gold: dict[Key, GoldCell],
    documents: Sequence[Document],
    variables: Sequence[Variable],
    tolerance: Tolerance,
) -> tuple[list[ProfileMetricsOut] | None, RunAgreementVsGoldOut | None]:
    """A two-profile run's figures per profile, and its agreement against gold."""
    if run is None or run.profile_count < 2:
        return None, None
    snapshot = RunSnapshot.from_row(run.settings, run.model)
    ids = [d.id for d in documents]
    answers = [await _run_answers(session, ids, run.id, slot) for slot in (0, 1)]
    profiles = []
    for slot, extractions in enumerate(answers):
        predictions = {key: _from_extraction(e) for key, e in extractions.items()}
        overall, per_variable, _ = _report(gold, documents, variables, predictions, tolerance)
        frozen = snapshot.for_slot(slot)
        profiles.append(
            ProfileMetricsOut(
                profile=frozen.profile_label,
                model=frozen.model,
                overall=overall,
                variables=per_variable,
            )
        )
    agreement = _agreement_vs_gold(gold, documents, variables, answers[0], answers[1], tolerance)
    return profiles, agreement


# ---------------------------------------------------------------------------------------------
# Gold values


def _variable_for_column(column: str, variables: Sequence[Variable]) -> Variable | None:
    """A variable named by its name (ignoring case), or failing that by its label."""
    for variable in variables:
        if variable.name == column:
            return variable
    wanted = column.casefold()
    for attribute in ("name", "label"):
        hits = [v for v in variables if str(getattr(v, attribute)).strip().casefold() == wanted]
        if len(hits) == 1:
            return hits[0]
    return None


def _basename(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


def _documents_by_name(
    rows_filenames: Iterable[str], documents: Sequence[Document]
) -> dict[str, list[Document]]:
    """Each gold filename's documents: by exact name, else ignoring case, else without folders."""
    exact: dict[str, list[Document]] = {}
    folded: dict[str, list[Document]] = {}
    for document in documents:
        exact.setdefault(document.filename, []).append(document)
        folded.setdefault(document.filename.casefold(), []).append(document)
    found: dict[str, list[Document]] = {}
    for name in rows_filenames:
        for candidate in (name, _basename(name)):
            hits = exact.get(candidate) or folded.get(candidate.casefold())
            if hits:
                found[name] = hits
                break
    return found


def _gold_from_csv(
    table: GoldTable,
    documents: Sequence[Document],
    variables: Sequence[Variable],
    warnings: _Warnings,
) -> tuple[dict[Key, GoldCell], list[Document], list[Variable]]:
    columns: dict[str, Variable] = {}
    for column in table.columns:
        variable = _variable_for_column(column, variables)
        if variable is None:
            warnings.add(f"Column '{column}' is not a variable of this project; it was ignored.")
        elif variable in columns.values():
            warnings.add(f"Column '{column}' repeats variable '{variable.name}'; it was ignored.")
        else:
            columns[column] = variable
    if not columns:
        names = ", ".join(v.name for v in variables[:20]) or "none yet"
        raise BadRequest(
            "None of the gold CSV's columns names a variable of this project "
            f"(its variables: {names})."
        )
    matches = _documents_by_name((row.filename for row in table.rows), documents)
    gold: dict[Key, GoldCell] = {}
    ordered: list[Document] = []
    seen: set[uuid.UUID] = set()
    for row in table.rows:
        hits = matches.get(row.filename)
        if not hits:
            warnings.add(
                f"'{row.filename}' (line {row.line}) is not a document of this project; "
                "its row was ignored."
            )
            continue
        if len(hits) > 1:
            warnings.add(
                f"'{row.filename}' (line {row.line}) names {len(hits)} documents of this "
                "project; its row was ignored (rename the documents to tell them apart)."
            )
            continue
        document = hits[0]
        if document.id in seen:
            warnings.add(
                f"'{row.filename}' (line {row.line}) repeats an earlier row for the same "
                "document; it was ignored."
            )
            continue
        ordered.append(document)
        seen.add(document.id)
        for column, variable in columns.items():
            raw = row.cells[column]
            try:
                gold[(document.id, variable.id)] = GoldCell(parse_gold(_spec(variable), raw), raw)
            except InvalidValue as exc:
                message = (
                    f"{row.filename} × {variable.name}: the gold value '{raw.strip()[:80]}' "
                    f"does not fit the variable ({exc}); the pair was skipped."
                )
                warnings.add(message)
                gold[(document.id, variable.id)] = GoldCell(None, raw, error=str(exc))
    if not ordered:
        raise BadRequest(
            f"None of the {len(table.rows)} filenames in the gold CSV is a document of this "
            f"project (the first is '{table.rows[0].filename}')."
        )
    evaluated = [v for v in variables if v in columns.values()]
    return gold, ordered, evaluated


def _gold_from_reviews(
    reviews: dict[Key, Review], variables: Sequence[Variable], warnings: _Warnings
) -> dict[Key, GoldCell]:
    by_id = {v.id: v for v in variables}
    gold: dict[Key, GoldCell] = {}
    for key, review in reviews.items():
        variable = by_id.get(key[1])
        if variable is None or review.status not in (
            ReviewStatus.ACCEPTED,
            ReviewStatus.CORRECTED,
        ):
            continue  # a rejection says the value is wrong, not what is right
        try:
            gold[key] = GoldCell(parse_gold(_spec(variable), review.value))
        except InvalidValue as exc:
            warnings.add(
                f"A review of '{variable.name}' no longer fits the variable ({exc}); "
                "the pair was skipped."
            )
            gold[key] = GoldCell(None, error=str(exc))
    return gold


# ---------------------------------------------------------------------------------------------
# Putting it together


def _cell_out(
    variable: Variable, gold: GoldCell, prediction: Prediction, comparison: CellComparison
) -> CellOut:
    return CellOut(
        variable=variable.name,
        gold=gold.value if gold.error is None else None,
        gold_raw=gold.raw,
        predicted=prediction.value,
        prediction=prediction.state,
        correct=comparison.correct,
        outcome=comparison.outcome,
        reason=comparison.reason,
        grounded=prediction.grounded if prediction.state is PredictionState.VALUE else None,
    )


def _report(
    gold: dict[Key, GoldCell],
    documents: Sequence[Document],
    variables: Sequence[Variable],
    predictions: dict[Key, Prediction],
    tolerance: Tolerance,
) -> tuple[MetricsOut, list[VariableMetricsOut], list[DocumentResultOut]]:
    per_variable = {v.id: Tally() for v in variables}
    specs = {v.id: _spec(v) for v in variables}
    per_document: list[DocumentResultOut] = []
    for document in documents:
        tally = Tally()
        cells: list[CellOut] = []
        for variable in variables:
            key = (document.id, variable.id)
            gold_cell = gold.get(key)
            if gold_cell is None:
                continue
            prediction = predictions.get(key, Prediction(PredictionState.NOT_EXTRACTED))
            if gold_cell.error is not None:
                comparison = CellComparison(
                    Outcome.GOLD_INVALID, f"The gold value does not fit: {gold_cell.error}"
                )
            else:
                comparison = compare_cell(
                    specs[variable.id], gold_cell.value, prediction, tolerance
                )
            stated = gold_cell.value is not None
            tally.add(comparison, prediction, stated)
            per_variable[variable.id].add(comparison, prediction, stated)
            cells.append(_cell_out(variable, gold_cell, prediction, comparison))
        if cells:
            per_document.append(
                DocumentResultOut(
                    document_id=document.id,
                    filename=document.filename,
                    compared=tally.compared,
                    correct=tally.correct,
                    accuracy=ratio(tally.correct, tally.compared),
                    cells=cells,
                )
            )
    overall = Tally()
    variable_metrics: list[VariableMetricsOut] = []
    for variable in variables:
        tally = per_variable[variable.id]
        overall.merge(tally)
        metrics = MetricsOut.from_tally(tally, items=specs[variable.id].type in SET_TYPES)
        variable_metrics.append(
            VariableMetricsOut(
                variable_id=variable.id,
                variable=variable.name,
                label=variable.label,
                type=variable.type,
                **metrics.model_dump(),
            )
        )
    has_sets = any(specs[v.id].type in SET_TYPES for v in variables)
    return MetricsOut.from_tally(overall, items=has_sets), variable_metrics, per_document


def _evaluation(
    gold_source: GoldSource,
    predictions_source: PredictionSource,
    run_id: uuid.UUID | None,
    tolerance: Tolerance,
    report: tuple[MetricsOut, list[VariableMetricsOut], list[DocumentResultOut]],
    warnings: _Warnings,
    two_profiles: tuple[list[ProfileMetricsOut] | None, RunAgreementVsGoldOut | None] = (
        None,
        None,
    ),
) -> EvaluationOut:
    overall, variables, documents = report
    return EvaluationOut(
        profiles=two_profiles[0],
        agreement=two_profiles[1],
        gold_source=gold_source,
        predictions=predictions_source,
        run_id=run_id,
        tolerance=ToleranceOut(absolute=tolerance.absolute, relative=tolerance.relative),
        documents=sum(1 for d in documents if d.compared),
        overall=overall,
        variables=variables,
        per_document=documents,
        warnings=warnings.listed(),
    )


async def _check_model_shown(
    session: AsyncSession, project: Project, lens: Lens, keys: Iterable[Key]
) -> None:
    """403 when blind dual review hides the model's answer of any of the cells from `lens`'s
    viewer: an evaluation shows the model's values (and how often they are right), which is
    what blind review keeps from them until they have reviewed each cell. Hiding those cells
    instead would measure the model on a sample the viewer's own progress picked."""
    if not (lens.dual and lens.blind):
        return
    wanted = list(keys)
    views = await cell_views(session, project.id, list({k[0] for k in wanted}), lens)
    hidden = sum(1 for key in wanted if views.seen(key).model_hidden)
    if hidden:
        raise Forbidden(
            "This project uses blind dual review, and the model's answers of "
            f"{hidden} of the cells this evaluation compares are hidden from you until you "
            "have reviewed them (or both their reviewers have). Review them first, or ask an "
            "owner who is not one of their reviewers to run the evaluation."
        )


async def evaluate_gold_csv(
    session: AsyncSession,
    project: Project,
    data: bytes,
    run_id: uuid.UUID | None,
    tolerance: Tolerance,
    lens: Lens = OPEN_LENS,
) -> EvaluationOut:
    """Evaluate against a gold CSV (bytes as uploaded); BadRequest when it is unusable.
    `lens`: who asks (dual review: reviewed values as they may see them; blind review: 403
    while the model's answer of a compared cell is hidden from them)."""
    warnings = _Warnings()
    run = await _checked_run(session, project, run_id) if run_id is not None else None
    warnings.extend(_run_warnings(run))
    try:
        table = read_gold_csv(data)
    except GoldFileError as exc:
        raise BadRequest(str(exc)) from exc
    warnings.extend(table.warnings)
    variables = await list_variables(session, project.id)
    documents = await repository.project_documents(session, project.id)
    gold, documents_in_gold, evaluated = _gold_from_csv(table, documents, variables, warnings)
    await _check_model_shown(session, project, lens, gold)
    predictions = await _predictions(
        session, project.id, [d.id for d in documents_in_gold], run_id, True, lens
    )
    report = _report(gold, documents_in_gold, evaluated, predictions, tolerance)
    source = PredictionSource.RUN if run_id is not None else PredictionSource.FINAL
    two = await _two_profiles(session, run, gold, documents_in_gold, evaluated, tolerance)
    return _evaluation(GoldSource.CSV, source, run_id, tolerance, report, warnings, two)


async def evaluate_reviews(
    session: AsyncSession,
    project: Project,
    run_id: uuid.UUID | None,
    tolerance: Tolerance,
    lens: Lens = OPEN_LENS,
) -> EvaluationOut:
    """Evaluate extracted values against the accepted and corrected reviews: the final
    verdicts, or for a member blinded by dual review the verdicts they may see (their own
    while a cell is sealed). Every such cell's model answer is one they may see too."""
    warnings = _Warnings()
    run = await _checked_run(session, project, run_id) if run_id is not None else None
    warnings.extend(_run_warnings(run))
    variables = await list_variables(session, project.id)
    documents = await repository.project_documents(session, project.id)
    gold: dict[Key, GoldCell] = {}
    for chunk in _chunks([d.id for d in documents]):
        gold |= _gold_from_reviews(
            await final_reviews(session, project.id, chunk, lens), variables, warnings
        )
    if not gold:
        raise BadRequest(
            "There are no accepted or corrected reviews in this project yet; review some "
            "values, or upload a gold CSV instead."
        )
    reviewed_documents = [d for d in documents if any((d.id, v.id) in gold for v in variables)]
    reviewed_variables = [v for v in variables if any((d.id, v.id) in gold for d in documents)]
    predictions = await _predictions(
        session, project.id, [d.id for d in reviewed_documents], run_id, reviewed_values=False
    )
    report = _report(gold, reviewed_documents, reviewed_variables, predictions, tolerance)
    source = PredictionSource.RUN if run_id is not None else PredictionSource.EXTRACTED
    two = await _two_profiles(session, run, gold, reviewed_documents, reviewed_variables, tolerance)
    return _evaluation(GoldSource.REVIEWS, source, run_id, tolerance, report, warnings, two)
