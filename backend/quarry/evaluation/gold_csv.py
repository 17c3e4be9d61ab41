"""Reading a gold-standard CSV: one row per document (by filename), one column per variable.

Tolerant of what spreadsheets write: a UTF-8 byte-order mark, Windows-1252 or Latin-1 instead
of UTF-8, semicolons or tabs instead of commas (Excel in many locales), blank lines, short rows.
What cannot be read raises :class:`GoldFileError` with a sentence for the user.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

#: Header names (compared ignoring case and surrounding spaces) of the column naming documents.
KEY_COLUMNS = ("filename", "document")
#: Columns a Quarry export has besides the variables; ignored without a warning.
IGNORED_COLUMNS = frozenset({"document_id"})
_DELIMITERS = (",", ";", "\t")
_ZIP_MAGIC = b"PK\x03\x04"


class GoldFileError(ValueError):
    """The gold file cannot be used; the message says why, for the user."""


@dataclass(frozen=True)
class GoldRow:
    line: int
    filename: str
    cells: dict[str, str]  # header as written → raw cell text


@dataclass
class GoldTable:
    key_column: str
    columns: list[str]  # the other headers, as written, in file order
    rows: list[GoldRow]
    encoding: str
    warnings: list[str] = field(default_factory=list)


def _decode(data: bytes) -> tuple[str, str]:
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")  # pragma: no cover


def _delimiter(first_line: str) -> str:
    """The separator the header line uses most (a header holds names, not commas in text)."""
    counts = {d: first_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_gold_csv(data: bytes) -> GoldTable:
    """Parse the gold file's bytes; raises GoldFileError when it cannot be used at all."""
    if data.startswith(_ZIP_MAGIC):
        raise GoldFileError(
            "The gold file is an Excel workbook or another zip file, not a CSV; "
            "save it as CSV (comma-separated values) and upload that."
        )
    if b"\x00" in data[:4096]:
        raise GoldFileError(
            "The gold file is not a text CSV (it holds binary data, or is UTF-16); "
            "save it as CSV UTF-8 and upload that."
        )
    text, encoding = _decode(data)
    if not text.strip():
        raise GoldFileError("The gold CSV is empty.")
    lines = text.splitlines()
    header_line = next(line for line in lines if line.strip())
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(header_line))
    try:
        records = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise GoldFileError(
            f"The gold CSV could not be read (line {reader.line_num}): {exc}."
        ) from exc
    records = [(line, row) for line, row in records if any(cell.strip() for cell in row)]
    header = [cell.strip() for cell in records[0][1]]
    keys = [i for i, name in enumerate(header) if name.casefold() in KEY_COLUMNS]
    if not keys:
        raise GoldFileError(
            "The gold CSV needs a 'filename' (or 'document') column naming each document, "
            f"in its first row; its first row is: {', '.join(header[:10]) or '(blank)'}."
        )
    # 'filename' wins over 'document' when a file has both.
    key = min(keys, key=lambda i: KEY_COLUMNS.index(header[i].casefold()))
    warnings: list[str] = []
    if encoding != "utf-8-sig":
        shown = {"cp1252": "Windows-1252", "latin-1": "Latin-1"}[encoding]
        warnings.append(f"The gold CSV is not UTF-8; it was read as {shown}.")
    columns: list[str] = []
    positions: dict[str, int] = {}
    for index, name in enumerate(header):
        if index == key or not name or name.casefold() in IGNORED_COLUMNS:
            continue
        if name in positions:
            warnings.append(f"Column '{name}' appears more than once; only the first is used.")
            continue
        positions[name] = index
        columns.append(name)
    rows: list[GoldRow] = []
    for line, record in records[1:]:
        filename = record[key].strip() if key < len(record) else ""
        if not filename:
            warnings.append(f"Line {line} has no filename; it was skipped.")
            continue
        cells = {
            name: record[index] if index < len(record) else "" for name, index in positions.items()
        }
        rows.append(GoldRow(line=line, filename=filename, cells=cells))
    if not rows:
        raise GoldFileError("The gold CSV has a header row but no rows of gold values.")
    return GoldTable(header[key], columns, rows, encoding, warnings)
