"""An evaluation as an Excel workbook: Summary, Per document, and Notes.

Plain cells: counts and ratios are numbers, values are text as the CSV export writes them, and
text that a spreadsheet would run as a formula stays text (the same rules as the exports).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from quarry.evaluation.compare import Outcome
from quarry.evaluation.schemas import EvaluationOut, MetricsOut
from quarry.exports.cells import clean_xlsx_text, format_text_value, looks_like_formula
from quarry.variables.types import VariableType

Cell = str | int | float | bool | date | None

SUMMARY_COLUMNS: tuple[str, ...] = (
    "variable",
    "label",
    "type",
    "compared",
    "correct",
    "accuracy",
    "wrong",
    "missed",
    "spurious",
    "no_answer",
    "gold_not_stated",
    "predicted_not_stated",
    "skipped_gold_invalid",
    "skipped_not_extracted",
    "precision",
    "recall",
    "f1",
    "grounded_values",
    "grounded_share",
    "grounding_precision",
    "ungrounded_accuracy",
)
DOCUMENT_COLUMNS: tuple[str, ...] = (
    "filename",
    "document_id",
    "variable",
    "gold",
    "predicted",
    "correct",
    "outcome",
    "reason",
    "grounded",
)
PROFILE_COLUMNS: tuple[str, ...] = ("profile", "model", *SUMMARY_COLUMNS)
AGREEMENT_COLUMNS: tuple[str, ...] = (
    "variable",
    "compared",
    "agreed",
    "agreed_correct",
    "agreed_accuracy",
    "disagreed",
    "first_correct",
    "second_correct",
    "neither_correct",
    "first_accuracy",
    "second_accuracy",
    "one_missing",
)
ALL_VARIABLES = "(all variables)"
_RATIOS = frozenset(
    {
        "agreed_accuracy",
        "first_accuracy",
        "second_accuracy",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "grounded_share",
        "grounding_precision",
        "ungrounded_accuracy",
    }
)
_BOLD = Font(bold=True)
_MAX_WIDTH = 60

DEFINITIONS: tuple[tuple[str, str], ...] = (
    ("compared", "Pairs with a usable gold value and an extraction"),
    ("accuracy", "correct / compared; agreeing that a value is not stated is correct"),
    ("wrong", "Both have a value, and they differ"),
    ("missed", "The gold has a value; the prediction says not stated"),
    ("spurious", "The gold says not stated; the prediction has a value"),
    ("no_answer", "The extraction gave no answer (failed, cancelled, unfinished): counted wrong"),
    (
        "precision / recall / f1",
        "multi_category and list: items matched over items predicted "
        "/ over gold items, summed over pairs",
    ),
    ("grounded_share", "Predicted values whose quote was found / values with a verdict"),
    ("grounding_precision", "Of the values whose quote was found, the share that is correct"),
    ("ungrounded_accuracy", "Of the values whose quote was not found, the share that is correct"),
    (
        "agreed_accuracy",
        "Two-profile run: of the pairs both profiles answered alike, the share that is correct",
    ),
    (
        "first_accuracy / second_accuracy",
        "Two-profile run: of the pairs the profiles answered differently, the share each got right",
    ),
)


def _metric_row(name: str, label: str, type_: str, metrics: MetricsOut) -> list[Cell]:
    values = metrics.model_dump()
    grounding = values.pop("grounding")
    values |= grounding
    return [name, label, type_, *(values[c] for c in SUMMARY_COLUMNS[3:])]


def _summary_rows(evaluation: EvaluationOut) -> Iterable[list[Cell]]:
    for v in evaluation.variables:
        yield _metric_row(v.variable, v.label, v.type, v)
    yield _metric_row(ALL_VARIABLES, "", "", evaluation.overall)


def _profile_rows(evaluation: EvaluationOut) -> Iterable[list[Cell]]:
    for profile in evaluation.profiles or ():
        for v in profile.variables:
            yield [profile.profile, profile.model, *_metric_row(v.variable, v.label, v.type, v)]
        yield [profile.profile, profile.model, *_metric_row(ALL_VARIABLES, "", "", profile.overall)]


def _agreement_rows(evaluation: EvaluationOut) -> Iterable[list[Cell]]:
    if evaluation.agreement is None:
        return
    for v in evaluation.agreement.variables:
        values = v.model_dump()
        yield [v.variable, *(values[c] for c in AGREEMENT_COLUMNS[1:])]
    overall = evaluation.agreement.overall.model_dump()
    yield [ALL_VARIABLES, *(overall[c] for c in AGREEMENT_COLUMNS[1:])]


def _document_rows(evaluation: EvaluationOut) -> Iterable[list[Cell]]:
    types = {v.variable: VariableType(v.type) for v in evaluation.variables}
    for document in evaluation.per_document:
        for cell in document.cells:
            var_type = types[cell.variable]
            yield [
                document.filename,
                str(document.document_id),
                cell.variable,
                # An unusable gold value is shown as written, so the sheet says what to fix.
                (cell.gold_raw or "")
                if cell.outcome is Outcome.GOLD_INVALID
                else format_text_value(var_type, cell.gold),
                format_text_value(var_type, cell.predicted),
                cell.correct,
                str(cell.outcome),
                cell.reason,
                cell.grounded,
            ]


def _notes_rows(evaluation: EvaluationOut) -> Iterable[list[Cell]]:
    yield ["gold", str(evaluation.gold_source)]
    yield ["predictions", str(evaluation.predictions)]
    yield ["run_id", str(evaluation.run_id) if evaluation.run_id else ""]
    yield ["absolute tolerance", evaluation.tolerance.absolute]
    yield ["relative tolerance", evaluation.tolerance.relative]
    yield ["documents", evaluation.documents]
    for term, meaning in DEFINITIONS:
        yield [term, meaning]
    for warning in evaluation.warnings:
        yield ["warning", warning]


def _cell(ws: Any, value: Cell, percent: bool = False, bold: bool = False) -> Any:
    if isinstance(value, str):
        cell = WriteOnlyCell(ws, clean_xlsx_text(value))
        cell.data_type = "s"  # never a formula, whatever the text looks like
        if looks_like_formula(value):
            cell.quotePrefix = True
    else:
        cell = WriteOnlyCell(ws, value)
        if percent and value is not None:
            cell.number_format = "0.0%"
    if bold:
        cell.font = _BOLD
    return cell


def _sheet(wb: Any, title: str, headers: Sequence[str], rows: Iterable[list[Cell]]) -> None:
    ws = wb.create_sheet(title)
    rows = list(rows)
    for index, header in enumerate(headers):
        widest = max([len(header), *(len(str(row[index] or "")) for row in rows[:200])])
        ws.column_dimensions[get_column_letter(index + 1)].width = min(widest + 2, _MAX_WIDTH)
    ws.freeze_panes = "A2"
    ws.append([_cell(ws, header, bold=True) for header in headers])
    for row in rows:
        ws.append(
            [
                _cell(ws, value, percent=header in _RATIOS)
                for header, value in zip(headers, row, strict=True)
            ]
        )
    ws.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{len(rows) + 1}"


def evaluation_xlsx(evaluation: EvaluationOut) -> bytes:
    """The workbook's bytes: sheets Summary (a row per variable, then all variables),
    for a two-profile run Profiles (the same per profile) and Agreement (its agreement against
    gold), Per document (a row per document × variable) and Notes (settings, definitions,
    warnings)."""
    wb = Workbook(write_only=True)
    _sheet(wb, "Summary", SUMMARY_COLUMNS, _summary_rows(evaluation))
    if evaluation.profiles is not None:
        _sheet(wb, "Profiles", PROFILE_COLUMNS, _profile_rows(evaluation))
    if evaluation.agreement is not None:
        _sheet(wb, "Agreement", AGREEMENT_COLUMNS, _agreement_rows(evaluation))
    _sheet(wb, "Per document", DOCUMENT_COLUMNS, _document_rows(evaluation))
    _sheet(wb, "Notes", ("item", "value"), _notes_rows(evaluation))
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()
