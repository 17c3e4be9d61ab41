"""Streaming JSON exports (DESIGN §6): an array of objects, values keeping their JSON types.

JSON is data, not a spreadsheet, so nothing here is formula-neutralised: a text value "=1+1"
is exported exactly as stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence

from quarry.exports.table import (
    FLAG_COLUMN_SUFFIX,
    CellFlags,
    EvaluationTable,
    ExportVariable,
    JsonValue,
    LongRow,
    WideRow,
    wide_headers,
)

_CHUNK_CHARS = 16 * 1024
# One encoder for every object: json.dumps with any non-default option builds a new encoder per
# call, which cost more than encoding a row. ensure_ascii=False keeps the file readable and
# smaller (the response is UTF-8); allow_nan=False because strict JSON has no NaN.
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def iter_wide_json(
    variables: Sequence[ExportVariable], rows: Iterable[WideRow], flags: bool = False
) -> Iterator[str]:
    """Yield a JSON array with one object per document: document_id, filename, then one key per
    variable in codebook order (null = not stated, lists stay arrays); with `flags`, each
    followed by `<name>__flag`, the cell's flags by name (an array).

    Variable names are checked eagerly (ValueError on a clash), before any chunk is produced.
    """
    wide_headers(variables, flags)
    if flags:
        objects = (
            {
                "document_id": row.document_id,
                "filename": row.filename,
                **{
                    key: item
                    for v in variables
                    for key, item in (
                        (v.name, _json_safe(row.values.get(v.name))),
                        (v.name + FLAG_COLUMN_SUFFIX, _flag_names(row.flags.get(v.name))),
                    )
                },
            }
            for row in rows
        )
    else:
        objects = (
            {
                "document_id": row.document_id,
                "filename": row.filename,
                **{v.name: _json_safe(row.values.get(v.name)) for v in variables},
            }
            for row in rows
        )
    return _iter_array(objects)


def _flag_names(flags: CellFlags | None) -> list[JsonValue]:
    return [name for name in flags.names.split("; ") if name] if flags is not None else []


def iter_long_json(rows: Iterable[LongRow]) -> Iterator[str]:
    """Yield a JSON array with one object per (document, variable), keys as the long CSV columns."""
    return _iter_array(_long_objects(rows))


def _long_objects(rows: Iterable[LongRow]) -> Iterator[dict[str, JsonValue]]:
    # Keys in LONG_COLUMNS order (a test holds them to it); a literal is quicker than zip.
    for row in rows:
        yield {
            "document_id": row.document_id,
            "filename": row.filename,
            "variable": row.variable,
            "value": _json_safe(row.value),
            "status": row.status,
            "evidence": row.evidence,
            "page": row.page,
            "confidence": _json_safe(row.confidence),
            "grounded": row.grounded,
            "review_status": row.review_status,
            "extracted_value": _json_safe(row.extracted_value),
            "model": row.model,
            "prompt_version": row.prompt_version,
            "run_id": row.run_id,
            "error": row.error,
            "support": row.support,
            "flags": _flag_names(row.flags),
            "match_status": row.match_status,
            "match_key": row.match_key,
            "match_score": row.match_score,
        }


def _iter_array(objects: Iterable[dict[str, JsonValue]]) -> Iterator[str]:
    parts: list[str] = ["["]
    size = 1
    separator = "\n"
    for obj in objects:
        text = separator + _encode(obj)
        separator = ",\n"
        parts.append(text)
        size += len(text)
        if size >= _CHUNK_CHARS:
            yield "".join(parts)
            parts.clear()
            size = 0
    # An empty export is "[]", a non-empty one closes on its own line.
    parts.append("]\n" if separator == "\n" else "\n]\n")
    yield "".join(parts)


def _json_safe(value: JsonValue) -> JsonValue:
    """Replace NaN/infinity, which strict JSON cannot hold, by null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value


def iter_table_json(table: EvaluationTable) -> Iterator[str]:
    """A small table (the cases layout) as a JSON array of objects keyed by its columns."""
    columns = list(table.columns)
    return _iter_array(
        {name: _json_safe(cell) for name, cell in zip(columns, row, strict=True)}
        for row in table.rows
    )
