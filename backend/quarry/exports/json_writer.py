"""Streaming JSON exports (DESIGN §6): an array of objects, values keeping their JSON types.

JSON is data, not a spreadsheet, so nothing here is formula-neutralised: a text value "=1+1"
is exported exactly as stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence

from quarry.exports.table import (
    LONG_COLUMNS,
    ExportVariable,
    JsonValue,
    LongRow,
    WideRow,
    wide_headers,
)

_CHUNK_CHARS = 16 * 1024


def iter_wide_json(variables: Sequence[ExportVariable], rows: Iterable[WideRow]) -> Iterator[str]:
    """Yield a JSON array with one object per document: document_id, filename, then one key per
    variable in codebook order (null = not stated, lists stay arrays).

    Variable names are checked eagerly (ValueError on a clash), before any chunk is produced.
    """
    wide_headers(variables)
    objects = (
        {
            "document_id": row.document_id,
            "filename": row.filename,
            **{v.name: _json_safe(row.values.get(v.name)) for v in variables},
        }
        for row in rows
    )
    return _iter_array(objects)


def iter_long_json(rows: Iterable[LongRow]) -> Iterator[str]:
    """Yield a JSON array with one object per (document, variable), keys as the long CSV columns."""
    objects = (
        dict(
            zip(
                LONG_COLUMNS,
                (
                    row.document_id,
                    row.filename,
                    row.variable,
                    _json_safe(row.value),
                    row.status,
                    row.evidence,
                    row.page,
                    _json_safe(row.confidence),
                    row.grounded,
                    row.review_status,
                    _json_safe(row.extracted_value),
                    row.model,
                    row.prompt_version,
                    row.run_id,
                    row.error,
                ),
                strict=True,
            )
        )
        for row in rows
    )
    return _iter_array(objects)


def _iter_array(objects: Iterable[dict[str, JsonValue]]) -> Iterator[str]:
    parts: list[str] = ["["]
    size = 1
    separator = "\n"
    for obj in objects:
        # ensure_ascii=False keeps the file readable and smaller; the response is UTF-8.
        text = separator + json.dumps(obj, ensure_ascii=False, allow_nan=False)
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
