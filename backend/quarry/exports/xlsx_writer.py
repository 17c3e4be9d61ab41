"""The Excel export (DESIGN §6): Results, Details and Codebook sheets, streamed in bounded memory.

openpyxl's write-only mode streams each row to a temporary file, but it writes column widths and
frozen panes when the first row is appended, so each sheet first peeks at a bounded sample of its
rows to size the columns. The auto-filter is written when the sheet is closed (at save), so its
range can be set after the last row, from a running count, without holding the rows.

Speed: openpyxl's own work per cell (about 8 µs) is the floor; ours comes on top of it. So a cell
is handed to openpyxl as a plain value wherever that writes the same thing (numbers, booleans,
blanks, and text that cannot be mistaken for a formula or an error code), and a Cell object
only where the cell needs a style or a forced text type. Such cells take their style as a copy
of a style array prepared once per workbook (`_Styles`), not through openpyxl's style
descriptors, which hash the fill or alignment on every assignment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from itertools import chain, islice
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ERROR_CODES, Cell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.styles.cell_style import StyleArray
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
    FLAG_PRECEDENCE,
    LONG_COLUMNS,
    NO_FLAGS,
    CellFlags,
    EvaluationTable,
    ExportVariable,
    LongRow,
    WideRow,
    wide_headers,
)
from quarry.variables.types import VariableType

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
_SAMPLE_ROWS = 100
_MIN_WIDTH, _MAX_WIDTH = 8, 60
_DATE_FORMAT = "yyyy-mm-dd"

_HEADER_FONT = Font(bold=True)
_HEADER_FILL = PatternFill("solid", fgColor="D9E1F2")
_WRAP = Alignment(wrap_text=True, vertical="top")


def _fill(rgb: str) -> PatternFill:
    return PatternFill("solid", fgColor=rgb)


# A cell carries one fill: when several flags apply, the first by table.FLAG_PRECEDENCE wins
# (the order the results grid's `flag` and its legend follow too).
_FILLS: dict[str, tuple[PatternFill, str]] = {
    "failed": (_fill("FFC7CE"), "extraction failed (see Details for the error)"),
    "review_disagrees": (
        _fill("F9D3F0"),
        "a newer extraction disagrees with the reviewed value",
    ),
    "models_disagree": (
        _fill("DDEBF7"),
        "the two profiles of a two-profile run answered differently (the first's value is shown)",
    ),
    "not_found": (_fill("E7E6E6"), "checked: not stated in the document"),
    "ungrounded": (_fill("FFD8A8"), "the quoted evidence was not found in the document"),
    "unsupported_evidence": (
        _fill("FCE4D6"),
        "the quote is in the document but does not contain the value",
    ),
    "match_unmatched": (
        _fill("F4B183"),
        "the value matches no row of its reference list (pick one in review)",
    ),
    "match_ambiguous": (
        _fill("E2D1F9"),
        "the value matches several rows of its reference list, or only loosely",
    ),
    "ocr_low_confidence": (
        _fill("E2EFDA"),
        "the quote was read by OCR with low confidence: check it on the page",
    ),
    "low_confidence": (_fill("FFF2CC"), "the model was not confident"),
}
FLAG_FILLS: tuple[tuple[str, PatternFill, str], ...] = tuple(
    (name, *_FILLS[name]) for name in FLAG_PRECEDENCE
)


def write_xlsx(
    path: Path,
    variables: Sequence[ExportVariable],
    wide_rows: Iterable[WideRow],
    long_rows: Iterable[LongRow],
    evaluation: EvaluationTable | None = None,
    extra_sheets: Sequence[EvaluationTable] = (),
) -> None:
    """Write the Excel export to `path`, consuming the row iterables once, in bounded memory.

    Sheets: Results (wide), Details (long), Codebook, then Evaluation when given, the
    `extra_sheets` (Cases and Findings when the project has cases) and a Legend of
    the highlight colours. The file appears at `path` only when complete (written beside it and
    renamed), so a failed export never leaves a half-written workbook behind.
    """
    headers = wide_headers(variables)
    wb = Workbook(write_only=True)
    try:
        _write_sheets(wb, variables, headers, wide_rows, long_rows, evaluation, extra_sheets)
    except BaseException:
        _discard(wb)
        raise
    partial = path.with_name(f".{path.name}.part")
    try:
        wb.save(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write_sheets(
    wb: Any,
    variables: Sequence[ExportVariable],
    headers: Sequence[str],
    wide_rows: Iterable[WideRow],
    long_rows: Iterable[LongRow],
    evaluation: EvaluationTable | None,
    extra_sheets: Sequence[EvaluationTable] = (),
) -> None:
    cells = _Cells(wb.create_sheet("Results"))
    columns = [(v.name, v.type) for v in variables]
    _write_sheet(
        cells, headers, (_results_row(cells, columns, row) for row in wide_rows), freeze="C2"
    )
    cells = cells.on(wb.create_sheet("Details"))
    _write_sheet(cells, LONG_COLUMNS, (_details_row(cells, row) for row in long_rows))
    cells = cells.on(wb.create_sheet("Codebook"))
    _write_sheet(cells, CODEBOOK_COLUMNS, (_codebook_row(cells, v) for v in variables))
    for table in (evaluation, *extra_sheets):
        if table is None:
            continue
        cells = cells.on(wb.create_sheet(table.title))
        rows = ([cells.value(xlsx_value(VariableType.TEXT, v)) for v in row] for row in table.rows)
        _write_sheet(cells, table.columns, rows)
    cells = cells.on(wb.create_sheet("Legend"))
    _write_sheet(cells, ("colour", "meaning"), _legend_rows(cells), autofilter=False)


def _discard(wb: Any) -> None:
    """Remove the temporary files of an unfinished write-only workbook.

    openpyxl streams each sheet to a temporary file and deletes it when the workbook is saved,
    or else only when the process exits: a server would collect one per failed or abandoned
    export. Its sheet writers are private (openpyxl 3.1.5, pinned): if they move, the files are
    left as before rather than the export failing differently.
    """
    for sheet in wb.worksheets:
        # In order: the sheet's row stream, then its XML stream, then the file.
        for close in (
            getattr(getattr(sheet, "_rows", None), "close", None),
            getattr(getattr(sheet, "_writer", None), "close", None),
            getattr(getattr(sheet, "_writer", None), "cleanup", None),
        ):
            if close is not None:
                with contextlib.suppress(Exception):
                    close()


def flag_fill(flags: CellFlags | None) -> PatternFill | None:
    """The highlight for a flagged cell, or None when nothing needs a reviewer's eye."""
    if flags is None or flags is NO_FLAGS:
        return None
    fill = _FILL_OF_FLAGS.get(flags, _UNKNOWN)
    if fill is _UNKNOWN:
        fill = next((f for attribute, f, _ in FLAG_FILLS if getattr(flags, attribute)), None)
        _FILL_OF_FLAGS[flags] = fill
    return fill


# flag_fill's answers: a few hundred combinations at most (threads may race to add one; same value).
_FILL_OF_FLAGS: dict[CellFlags, PatternFill | None] = {}
_UNKNOWN = object()


class _FastCell(Cell):  # type: ignore[misc]  # openpyxl is untyped
    """A Cell that is cheap to print. openpyxl's write-only append first tries every value as a
    plain value, and a Cell fails that with an error message that includes its repr (about a
    third of the cost of a styled cell); nothing else is different."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<export cell>"


class _Styles:
    """The style arrays of one workbook, built once per combination through openpyxl's own
    style descriptors on a scratch cell, then copied into each cell that needs one."""

    def __init__(self, sheet: Any) -> None:
        self._sheet = sheet
        self._arrays: dict[tuple[int, bool, bool, bool, bool], StyleArray] = {}
        self._fills: list[PatternFill | None] = []  # keeps the ids above from being reused

    def array(
        self,
        fill: PatternFill | None = None,
        *,
        wrap: bool = False,
        date: bool = False,
        quote: bool = False,
        header: bool = False,
    ) -> StyleArray:
        # By identity: the fills are this module's constants, and hashing a PatternFill walks
        # all its fields.
        key = (id(fill), wrap, date, quote, header)
        array = self._arrays.get(key)
        if array is None:
            scratch = WriteOnlyCell(self._sheet)
            if fill is not None:
                scratch.fill = fill
            if wrap:
                scratch.alignment = _WRAP
            if date:
                scratch.number_format = _DATE_FORMAT
            if quote:
                # Keeps Excel from reading the text as a formula even after a user edits it.
                scratch.quotePrefix = True
            if header:
                scratch.font = _HEADER_FONT
            # openpyxl 3.1.5 (pinned) keeps a cell's style as this StyleArray; a contract test
            # (tests/exports/test_xlsx_writer.py) fails if that changes.
            array = self._arrays[key] = scratch._style
            self._fills.append(fill)
        return array


class _Cells:
    """Turns export values into what openpyxl's write-only append takes, for one sheet."""

    def __init__(self, sheet: Any, styles: _Styles | None = None) -> None:
        self.sheet = sheet
        self._styles = styles or _Styles(sheet)

    def on(self, sheet: Any) -> _Cells:
        """The same, for another sheet of the workbook (style arrays are workbook-wide)."""
        return _Cells(sheet, self._styles)

    def text(self, value: str | None, fill: PatternFill | None = None, wrap: bool = False) -> Any:
        if not value:  # an empty text is a blank cell
            return self._styled(None, fill) if fill is not None else None
        text = clean_xlsx_text(value)
        quote = looks_like_formula(text)
        if fill is None and not wrap and not quote and text not in ERROR_CODES:
            # openpyxl writes a plain str as a text cell unless it starts with "=" (a formula,
            # caught by looks_like_formula) or is an error code such as "#N/A".
            return text
        cell = self._cell(self._styles.array(fill, wrap=wrap, quote=quote))
        cell.value = text
        # openpyxl turns a str starting with "=" into a formula and "#N/A" into an error:
        # every such text is forced back to a plain string, whatever it looks like.
        cell.data_type = "s"
        return cell

    def value(self, value: XlsxValue, fill: PatternFill | None = None, wrap: bool = False) -> Any:
        if isinstance(value, str):
            return self.text(value, fill, wrap)
        if isinstance(value, date):
            cell = self._cell(self._styles.array(fill, date=True))
            cell.value = value
            return cell
        if fill is None:
            return value  # numbers, booleans and blanks need no cell object
        return self._styled(value, fill)

    def _styled(self, value: XlsxValue, fill: PatternFill | None) -> Any:
        cell = self._cell(self._styles.array(fill))
        cell.value = value
        return cell

    def _cell(self, style: StyleArray) -> Any:
        # At A1 as WriteOnlyCell makes them; append gives each its real place.
        return _FastCell(self.sheet, row=1, column=1, style_array=style)

    def header(self, text: str) -> Any:
        cell = self._cell(self._styles.array(_HEADER_FILL, header=True))
        cell.value = clean_xlsx_text(text)
        cell.data_type = "s"
        return cell


def _results_row(
    cells: _Cells, columns: Sequence[tuple[str, VariableType]], row: WideRow
) -> list[Any]:
    text, value = cells.text, cells.value
    values, flags = row.values, row.flags
    return [
        text(row.document_id),
        text(row.filename),
        *(
            value(
                xlsx_value(var_type, values.get(name)),
                flag_fill(flags.get(name)) if flags else None,
            )
            for name, var_type in columns
        ),
    ]


def _details_row(cells: _Cells, row: LongRow) -> list[Any]:
    text, value = cells.text, cells.value
    return [
        text(row.document_id),
        text(row.filename),
        text(row.variable),
        value(xlsx_value(row.type, row.value), flag_fill(row.flags)),
        text(row.status),
        text(row.evidence, wrap=True),
        row.page,
        xlsx_value(VariableType.NUMBER, row.confidence),  # a NaN would corrupt the file
        row.grounded,
        text(row.review_status),
        value(xlsx_value(row.type, row.extracted_value)),
        text(row.model),
        row.prompt_version,
        text(row.run_id),
        text(row.error, wrap=True),
        text(row.support),
        text(row.flags.names),
        text(row.match_status),
        text(row.match_key),
        xlsx_value(VariableType.NUMBER, row.match_score),
    ]


def _codebook_row(cells: _Cells, variable: ExportVariable) -> list[Any]:
    examples = "\n".join(
        f"{format_text_value(variable.type, ex.value)} — {ex.snippet}"
        if ex.snippet
        else format_text_value(variable.type, ex.value)
        for ex in variable.examples
    )
    text = cells.text
    return [
        text(variable.name),
        text(variable.label),
        text(str(variable.type)),
        text(variable.description, wrap=True),
        text("; ".join(variable.allowed_values), wrap=True),
        text(variable.unit),
        text(examples, wrap=True),
        text(variable.instructions, wrap=True),
        variable.required,
        variable.position,
        variable.prompt_version,
    ]


def _legend_rows(cells: _Cells) -> Iterator[list[Any]]:
    for attribute, fill, meaning in FLAG_FILLS:
        yield [cells.text(attribute.replace("_", " "), fill), cells.text(meaning)]


def _write_sheet(
    cells: _Cells,
    headers: Sequence[str],
    rows: Iterable[list[Any]],
    *,
    freeze: str = "A2",
    autofilter: bool = True,
) -> None:
    ws = cells.sheet
    rows = iter(rows)
    sample = list(islice(rows, _SAMPLE_ROWS))
    for index, header in enumerate(headers):
        widest = max([len(header), *(_width(row[index]) for row in sample)])
        ws.column_dimensions[get_column_letter(index + 1)].width = min(
            max(widest + 2, _MIN_WIDTH), _MAX_WIDTH
        )
    ws.freeze_panes = freeze
    ws.append([cells.header(header) for header in headers])
    count = 0
    for row in chain(sample, rows):
        ws.append(row)
        count += 1
    if autofilter:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{count + 1}"


def _width(cell: Any) -> int:
    return display_width(cell.value if isinstance(cell, Cell) else cell)
