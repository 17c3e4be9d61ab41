"""Streaming CSV exports (DESIGN §6), shaped for Excel: UTF-8 BOM, CRLF line ends, no formulas."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

from quarry.exports.cells import csv_optional_bool, csv_optional_number, csv_text, csv_value
from quarry.exports.table import (
    LONG_COLUMNS,
    NO_FLAGS,
    EvaluationTable,
    ExportVariable,
    LongRow,
    WideRow,
    wide_headers,
)
from quarry.variables.types import VariableType

# Excel only detects UTF-8 in a CSV by its byte-order mark; without it accents turn to mojibake.
BOM = "\ufeff"
# Big enough that a response is not thousands of tiny writes, small enough to stay bounded.
_CHUNK_CHARS = 16 * 1024


def iter_wide_csv(
    variables: Sequence[ExportVariable], rows: Iterable[WideRow], flags: bool = False
) -> Iterator[str]:
    """Yield the wide CSV (one row per document, one column per variable) in text chunks;
    with `flags`, each value is followed by its cell's flags by name (joined by "; ").

    Column names are checked before the first chunk is produced, so a clash (ValueError) can
    still become a proper error response rather than a truncated download.
    """
    headers = wide_headers(variables, flags)
    if flags:
        records = (
            [
                csv_text(row.document_id),
                csv_text(row.filename),
                *(
                    cell
                    for v in variables
                    for cell in (
                        csv_value(v.type, row.values.get(v.name)),
                        csv_text(row.flags.get(v.name, NO_FLAGS).names),
                    )
                ),
            ]
            for row in rows
        )
    else:
        records = (
            [
                csv_text(row.document_id),
                csv_text(row.filename),
                *(csv_value(v.type, row.values.get(v.name)) for v in variables),
            ]
            for row in rows
        )
    return _iter_csv(headers, records)


def iter_long_csv(rows: Iterable[LongRow]) -> Iterator[str]:
    """Yield the long CSV (one row per document × variable, with provenance) in text chunks."""
    return _iter_csv(list(LONG_COLUMNS), _long_records(rows))


def _long_records(rows: Iterable[LongRow]) -> Iterator[list[str]]:
    # One call per cell of every row: unpacking and local names are measurably cheaper here.
    # Cells that can only hold a fixed word or an id (statuses, flag names, the ids) are not
    # passed through csv_text: none of them can start like a formula, and a call per cell is
    # a good part of the row's cost.
    text, value_of, number, flag = csv_text, csv_value, csv_optional_number, csv_optional_bool
    for (
        document_id,
        filename,
        variable,
        var_type,
        value,
        status,
        evidence,
        page,
        confidence,
        grounded,
        review_status,
        extracted_value,
        model,
        prompt_version,
        run_id,
        error,
        flags,
        support,
        match_status,
        match_key,
        match_score,
    ) in rows:
        yield [
            document_id,
            text(filename),
            text(variable),
            value_of(var_type, value),
            status,
            text(evidence),
            number(page),
            number(confidence),
            flag(grounded),
            review_status,
            value_of(var_type, extracted_value),
            text(model),
            number(prompt_version),
            run_id or "",
            text(error),
            support or "",
            flags.names,
            match_status or "",
            text(match_key),
            number(match_score),
        ]


def _iter_csv(headers: list[str], records: Iterable[list[str]]) -> Iterator[str]:
    buffer = io.StringIO()
    # QUOTE_MINIMAL quotes only cells holding a comma, quote or line break; "\r\n" is what
    # RFC 4180 and Excel expect (and what keeps line breaks inside quoted cells unambiguous).
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    buffer.write(BOM)
    writer.writerow([csv_text(h) for h in headers])
    # The header goes out on its own so a download starts before the first slow DB page.
    yield _drain(buffer)
    for record in records:
        writer.writerow(record)
        if buffer.tell() >= _CHUNK_CHARS:
            yield _drain(buffer)
    if buffer.tell():
        yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate(0)
    return text


def iter_table_csv(table: EvaluationTable) -> Iterator[str]:
    """A small table (the cases layout) as CSV: text cells neutralised, numbers as numbers."""

    def records() -> Iterator[list[str]]:
        for row in table.rows:
            yield [csv_value(VariableType.TEXT, cell) for cell in row]

    return _iter_csv(list(table.columns), records())
