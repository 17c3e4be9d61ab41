"""Reading an uploaded reference list (CSV or XLSX) into a header and numbered rows.

A list is a table with a header row: clients with `client_id`, `name`, `date_of_birth` …
Cells are kept as text (an identifier such as ``007`` must stay ``007``): XLSX cells are read
by pandas (openpyxl) as objects and turned into text here, whole-number floats without their
``.0`` and dates as ISO dates; CSV is decoded with the first of UTF-8 (with or without a
byte-order mark), Windows-1252 and Latin-1 that fits, and split by the separator its header
uses most (comma, semicolon, tab or pipe).

CSV is split with the standard library's reader rather than pandas, because a user with a
broken file needs every bad row named at once, and pandas stops at the first (its
``on_bad_lines`` callback is not told the line). Row numbers are the rows' lines in the
sheet as a spreadsheet shows them: the header is row 1.

A bad row — more cells than the header has columns — is an error; the whole upload is then
refused with the first rows' numbers (up to 20), so nothing half-read is stored. Blank rows
are skipped; short rows (spreadsheets trim trailing empty cells) are padded.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

MAX_ROWS = 100_000
MAX_COLUMNS = 200
MAX_CELL_CHARS = 2_000
_SHOWN_BAD_ROWS = 20
_DELIMITERS = (",", ";", "\t", "|")
_ZIP_MAGIC = b"PK\x03\x04"


class ListFileError(ValueError):
    """The upload cannot be used as a reference list; the message says why, for the user."""


@dataclass(frozen=True)
class ListTable:
    columns: list[str]
    #: (row number in the sheet, cells by column) for each non-blank row.
    rows: list[tuple[int, dict[str, str]]]
    encoding: str | None


def read_reference_list(data: bytes, filename: str) -> ListTable:
    """Parse an upload (XLSX by its zip signature, else CSV); raises ListFileError."""
    if not data.strip():
        raise ListFileError("The reference list file is empty.")
    if data.startswith(_ZIP_MAGIC) or filename.lower().endswith((".xlsx", ".xlsm")):
        records, encoding = _xlsx_records(data), None
    else:
        records, encoding = _csv_records(data)
    return _table(records, encoding)


def _decode(data: bytes) -> tuple[str, str]:
    if b"\x00" in data[:4096]:
        raise ListFileError(
            "The reference list is not a text CSV (it holds binary data, or is UTF-16); "
            "save it as CSV UTF-8 or as an Excel workbook (.xlsx) and upload that."
        )
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")  # pragma: no cover


def _delimiter(header_line: str) -> str:
    """The separator the header line uses most (a header holds names, not separators)."""
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_records(data: bytes) -> tuple[list[tuple[int, list[str]]], str]:
    text, encoding = _decode(data)
    header_line = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = _delimiter(header_line)
    try:
        return _csv_records_fast(text, delimiter), encoding
    except (pd.errors.ParserError, ValueError):
        # A bad row (or a quirk pandas' C parser refuses): read every row with the standard
        # library, which says which rows are bad.
        return _csv_records_each(text, delimiter), encoding


def _csv_records_fast(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """pandas' C parser: every record as text, blank lines kept, so that a record's index
    is its row in a spreadsheet (a quoted cell holding line breaks is still one row)."""
    frame = pd.read_csv(
        io.StringIO(text),
        sep=delimiter,
        header=None,
        dtype=object,
        keep_default_na=False,
        na_filter=False,
        skip_blank_lines=False,
        nrows=MAX_ROWS + 2,
        engine="c",
    )
    return list(enumerate(frame.to_numpy(dtype=object).tolist(), start=1))


def _csv_records_each(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records: list[tuple[int, list[str]]] = []
    try:
        for number, row in enumerate(reader, start=1):
            records.append((number, row))
            if number > MAX_ROWS + 1:
                break
    except csv.Error as exc:
        raise ListFileError(
            f"The reference list could not be read (row {len(records) + 1}): {exc}."
        ) from exc
    return records


def _xlsx_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, dt.datetime | pd.Timestamp):
        if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _xlsx_records(data: bytes) -> list[tuple[int, list[str]]]:
    try:
        frame = pd.read_excel(
            io.BytesIO(data),
            sheet_name=0,
            header=None,
            dtype=object,
            keep_default_na=False,
            engine="openpyxl",
            nrows=MAX_ROWS + 2,
        )
    except Exception as exc:  # openpyxl raises many kinds on a broken workbook
        raise ListFileError(
            "The reference list is not a readable Excel workbook (.xlsx) or CSV file."
        ) from exc
    # pandas drops nothing with header=None: the frame's index is the sheet row minus one
    # (leading blank rows included, as openpyxl reports them from the first used row).
    return [
        (int(index) + 1, [_xlsx_cell(v) for v in row])
        for index, row in zip(frame.index, frame.itertuples(index=False, name=None), strict=True)
    ]


_UNTIDY = re.compile(r"[\x00\t\n\r]|  |^\s|\s$")


def _clean(cell: str) -> str:
    """The cell without NULs (PostgreSQL text cannot hold them) and with its spaces
    collapsed; most cells need neither, which one search finds."""
    if _UNTIDY.search(cell) is None:
        return cell
    return " ".join(cell.replace("\x00", "").split())


def _table(records: list[tuple[int, list[str]]], encoding: str | None) -> ListTable:
    records = [(n, row) for n, row in records if "".join(row).strip()]
    if not records:
        raise ListFileError("The reference list is empty.")
    header_number, header_cells = records[0]
    columns = [" ".join(c.replace("\x00", "").split()) for c in header_cells]
    while columns and not columns[-1]:
        columns.pop()  # trailing empty header cells: spreadsheets often write them
    if not columns:
        raise ListFileError("The reference list's first row (the header) is blank.")
    if len(columns) > MAX_COLUMNS:
        raise ListFileError(f"The reference list has more than {MAX_COLUMNS} columns.")
    blank = [i + 1 for i, c in enumerate(columns) if not c]
    if blank:
        raise ListFileError(
            f"The header row (row {header_number}) has no name in column(s) "
            f"{', '.join(map(str, blank))}; every column needs a name."
        )
    seen: set[str] = set()
    for name in columns:
        if name.casefold() in seen:
            raise ListFileError(f"The header row names the column '{name}' twice.")
        seen.add(name.casefold())
    body = records[1:]
    if not body:
        raise ListFileError("The reference list has a header row but no rows.")
    if len(body) > MAX_ROWS:
        raise ListFileError(
            f"The reference list has more than {MAX_ROWS:,} rows; split it into several lists."
        )
    width = len(columns)
    bad: list[str] = []
    rows: list[tuple[int, dict[str, str]]] = []
    for number, cells in body:
        extra = [c for c in cells[width:] if c.strip()] if len(cells) > width else None
        if extra:
            bad.append(f"row {number} has {width + len(extra)} cells for {width} columns")
            continue
        too_long = [columns[i] for i, c in enumerate(cells[:width]) if len(c) > MAX_CELL_CHARS]
        if too_long:
            bad.append(f"row {number}: '{too_long[0]}' is longer than {MAX_CELL_CHARS} characters")
            continue
        padded = [*cells[:width], *[""] * (width - len(cells))]
        rows.append((number, {col: _clean(c) for col, c in zip(columns, padded, strict=True)}))
    if bad:
        shown = "; ".join(bad[:_SHOWN_BAD_ROWS])
        more = f" (and {len(bad) - _SHOWN_BAD_ROWS} more)" if len(bad) > _SHOWN_BAD_ROWS else ""
        raise ListFileError(
            f"The reference list has {len(bad)} bad row(s): {shown}{more}. "
            "Fix them and upload it again."
        )
    return ListTable(columns, rows, encoding)
