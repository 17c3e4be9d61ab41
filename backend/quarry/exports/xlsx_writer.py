"""The Excel export (DESIGN §6): Results, Details and Codebook sheets, streamed in bounded memory.

openpyxl's write-only mode streams each row to a temporary file, but it writes column widths and
frozen panes when the first row is appended, so each sheet first peeks at a bounded sample of its
rows to size the columns. The auto-filter is written when the sheet is closed (at save), so its
range can be set after the last row, from a running count, without holding the rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from itertools import chain, islice
from pathlib import Path
from typing import Any, TypeAlias

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from quarry.exports.cells import (
    XlsxValue,
    clean_xlsx_text,
    display_width,
    format_text_value,
    looks_like_formula,
    xlsx_value,
)
from quarry.exports.table import (
    LONG_COLUMNS,
    CellFlags,
    EvaluationTable,
    ExportVariable,
    LongRow,
    WideRow,
    wide_headers,
)
from quarry.variables.types import VariableType

# A cell to write: its value and the fill that highlights it (None = plain).
_Spec: TypeAlias = tuple[XlsxValue, PatternFill | None]

CODEBOOK_COLUMNS: tuple[str, ...] = (
    "name",
    "label",
    "type",
    "description",
    "allowed_values",
    "unit",
    "examples",
    "instructions",
    "required",
    "position",
    "prompt_version",
)
_WRAPPED = frozenset(
    {"evidence", "error", "description", "examples", "instructions", "allowed_values"}
)
_SAMPLE_ROWS = 100
_MIN_WIDTH, _MAX_WIDTH = 8, 60
_DATE_FORMAT = "yyyy-mm-dd"

_HEADER_FONT = Font(bold=True)
_HEADER_FILL = PatternFill("solid", fgColor="D9E1F2")
_WRAP = Alignment(wrap_text=True, vertical="top")


def _fill(rgb: str) -> PatternFill:
    return PatternFill("solid", fgColor=rgb)


# Most actionable first: a cell carries one fill, so when several flags apply the earliest wins
# (a failed cell has no value to doubt; a stale review matters more than a missing quote).
FLAG_FILLS: tuple[tuple[str, PatternFill, str], ...] = (
    ("failed", _fill("FFC7CE"), "extraction failed (see Details for the error)"),
    ("review_disagrees", _fill("F9D3F0"), "a newer extraction disagrees with the reviewed value"),
    ("ungrounded", _fill("FFD8A8"), "the quoted evidence was not found in the document"),
    ("low_confidence", _fill("FFF2CC"), "the model was not confident"),
    ("not_found", _fill("E7E6E6"), "checked: not stated in the document"),
)


def write_xlsx(
    path: Path,
    variables: Sequence[ExportVariable],
    wide_rows: Iterable[WideRow],
    long_rows: Iterable[LongRow],
    evaluation: EvaluationTable | None = None,
) -> None:
    """Write the Excel export to `path`, consuming the row iterables once, in bounded memory.

    Sheets: Results (wide), Details (long), Codebook, then Evaluation when given and a Legend of
    the highlight colours. The file appears at `path` only when complete (written beside it and
    renamed), so a failed export never leaves a half-written workbook behind.
    """
    headers = wide_headers(variables)
    wb = Workbook(write_only=True)
    results = (_wide_specs(variables, row) for row in wide_rows)
    _write_sheet(wb, "Results", headers, results, freeze="C2")
    _write_sheet(wb, "Details", LONG_COLUMNS, (_long_specs(row) for row in long_rows))
    _write_sheet(wb, "Codebook", CODEBOOK_COLUMNS, (_codebook_specs(v) for v in variables))
    if evaluation is not None:
        rows = ([(xlsx_value(VariableType.TEXT, v), None) for v in r] for r in evaluation.rows)
        _write_sheet(wb, evaluation.title, evaluation.columns, rows)
    _write_sheet(wb, "Legend", ("colour", "meaning"), _legend_specs(), autofilter=False)
    partial = path.with_name(f".{path.name}.part")
    try:
        wb.save(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def flag_fill(flags: CellFlags | None) -> PatternFill | None:
    """The highlight for a flagged cell, or None when nothing needs a reviewer's eye."""
    if flags is None:
        return None
    for attribute, fill, _meaning in FLAG_FILLS:
        if getattr(flags, attribute):
            return fill
    return None


def _wide_specs(variables: Sequence[ExportVariable], row: WideRow) -> list[_Spec]:
    return [
        (row.document_id, None),
        (row.filename, None),
        *(
            (xlsx_value(v.type, row.values.get(v.name)), flag_fill(row.flags.get(v.name)))
            for v in variables
        ),
    ]


def _long_specs(row: LongRow) -> list[_Spec]:
    values: tuple[XlsxValue, ...] = (
        row.document_id,
        row.filename,
        row.variable,
        xlsx_value(row.type, row.value),
        row.status,
        row.evidence,
        row.page,
        xlsx_value(VariableType.NUMBER, row.confidence),  # a NaN would corrupt the file
        row.grounded,
        row.review_status,
        xlsx_value(row.type, row.extracted_value),
        row.model,
        row.prompt_version,
        row.run_id,
        row.error,
    )
    value_fill = flag_fill(row.flags)
    return [
        (value, value_fill if column == "value" else None)
        for column, value in zip(LONG_COLUMNS, values, strict=True)
    ]


def _codebook_specs(variable: ExportVariable) -> list[_Spec]:
    examples = "\n".join(
        f"{format_text_value(variable.type, ex.value)} — {ex.snippet}"
        if ex.snippet
        else format_text_value(variable.type, ex.value)
        for ex in variable.examples
    )
    values: tuple[XlsxValue, ...] = (
        variable.name,
        variable.label,
        str(variable.type),
        variable.description,
        "; ".join(variable.allowed_values),
        variable.unit,
        examples,
        variable.instructions,
        variable.required,
        variable.position,
        variable.prompt_version,
    )
    return [(value, None) for value in values]


def _legend_specs() -> Iterator[list[_Spec]]:
    for attribute, fill, meaning in FLAG_FILLS:
        yield [(attribute.replace("_", " "), fill), (meaning, None)]


def _write_sheet(
    wb: Any,
    title: str,
    headers: Sequence[str],
    rows: Iterable[list[_Spec]],
    *,
    freeze: str = "A2",
    autofilter: bool = True,
) -> None:
    ws = wb.create_sheet(title)
    rows = iter(rows)
    sample = list(islice(rows, _SAMPLE_ROWS))
    for index, header in enumerate(headers):
        widest = max([len(header), *(display_width(row[index][0]) for row in sample)])
        ws.column_dimensions[get_column_letter(index + 1)].width = min(
            max(widest + 2, _MIN_WIDTH), _MAX_WIDTH
        )
    ws.freeze_panes = freeze
    ws.append([_header_cell(ws, header) for header in headers])
    wrapped = [header in _WRAPPED for header in headers]
    count = 0
    for row in chain(sample, rows):
        ws.append(
            [_cell(ws, value, fill, wrap) for (value, fill), wrap in zip(row, wrapped, strict=True)]
        )
        count += 1
    if autofilter:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{count + 1}"


def _header_cell(ws: Any, header: str) -> Any:
    cell = _cell(ws, header, _HEADER_FILL, wrap=False)
    cell.font = _HEADER_FONT
    return cell


def _cell(ws: Any, value: XlsxValue, fill: PatternFill | None, wrap: bool) -> Any:
    if fill is None and not wrap and (value is None or isinstance(value, int | float)):
        return value  # plain numbers, booleans and blanks need no cell object: cheaper
    cell = WriteOnlyCell(ws)
    if isinstance(value, str):
        text = clean_xlsx_text(value)
        cell.value = text
        # openpyxl turns a str starting with "=" into a formula and "#N/A" into an error:
        # every text cell is forced back to a plain string, whatever it looks like.
        cell.data_type = "s"
        if looks_like_formula(text):
            # Keeps Excel from reading it as a formula even after a user edits the cell.
            cell.quotePrefix = True
    else:
        cell.value = value
        if isinstance(value, date):
            cell.number_format = _DATE_FORMAT
    if fill is not None:
        cell.fill = fill
    if wrap:
        cell.alignment = _WRAP
    return cell
