"""JSON exports: valid JSON, values keeping their types, data exported exactly as stored."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator

import pytest

from quarry.exports.json_writer import iter_long_json, iter_wide_json
from quarry.exports.table import LONG_COLUMNS, ExportVariable, LongRow, WideRow
from quarry.variables.types import VariableType as T

CODEBOOK = [
    ExportVariable("title", "Title", T.TEXT),
    ExportVariable("n", "N", T.INTEGER),
    ExportVariable("effect", "Effect", T.NUMBER),
    ExportVariable("randomised", "Randomised?", T.BOOLEAN),
    ExportVariable("published", "Published", T.DATE),
    ExportVariable("outcomes", "Outcomes", T.MULTI_CATEGORY),
]


def test_wide_json_keeps_json_types_and_codebook_order() -> None:
    rows = [
        WideRow(
            "doc-1",
            "trial.pdf",
            {
                "outcomes": ["a", "b"],
                "title": '=HYPERLINK("http://x","click")',
                "n": 12,
                "effect": -3.5,
                "randomised": False,
                "published": "2024-01",
            },
        ),
        WideRow("doc-2", "blank.pdf", {"outcomes": []}),
    ]
    data = json.loads("".join(iter_wide_json(CODEBOOK, rows)))
    assert data[0] == {
        "document_id": "doc-1",
        "filename": "trial.pdf",
        "title": '=HYPERLINK("http://x","click")',  # data, not a spreadsheet: untouched
        "n": 12,
        "effect": -3.5,
        "randomised": False,
        "published": "2024-01",
        "outcomes": ["a", "b"],
    }
    assert list(data[0]) == ["document_id", "filename", *(v.name for v in CODEBOOK)]
    # Not stated is null; "none apply" stays an empty array, so the two remain distinct.
    assert data[1]["title"] is None
    assert data[1]["outcomes"] == []


def test_long_json_has_the_long_columns() -> None:
    row = LongRow(
        "doc-1",
        "trial.pdf",
        "n",
        T.INTEGER,
        value=14,
        status="succeeded",
        evidence="14 patients",
        page=2,
        confidence=0.75,
        grounded=False,
        review_status="corrected",
        extracted_value=41,
    )
    (record,) = json.loads("".join(iter_long_json([row])))
    assert list(record) == list(LONG_COLUMNS)
    assert record["value"] == 14
    assert record["extracted_value"] == 41
    assert record["grounded"] is False
    assert record["model"] is None


def test_empty_export_is_an_empty_array() -> None:
    assert json.loads("".join(iter_wide_json(CODEBOOK, []))) == []
    assert json.loads("".join(iter_long_json([]))) == []


def test_non_finite_numbers_become_null_so_the_file_stays_strict_json() -> None:
    rows = [WideRow("doc-1", "a.pdf", {"effect": float("nan")})]
    text = "".join(iter_wide_json(CODEBOOK, rows))
    assert "NaN" not in text
    assert json.loads(text)[0]["effect"] is None


def test_unicode_is_written_as_is() -> None:
    rows = [WideRow("doc-1", "études.pdf", {"title": "Mémoire — 日本"})]
    text = "".join(iter_wide_json(CODEBOOK, rows))
    assert "Mémoire — 日本" in text
    assert json.loads(text)[0]["filename"] == "études.pdf"


def test_duplicate_variable_names_are_refused_eagerly() -> None:
    with pytest.raises(ValueError, match="title"):
        iter_wide_json([*CODEBOOK, ExportVariable("title", "Again", T.TEXT)], [])


def test_twenty_thousand_rows_stream_in_bounded_memory() -> None:
    def rows() -> Iterator[WideRow]:
        for i in range(20_000):
            yield WideRow(f"doc-{i}", f"f{i}.pdf", {"title": f"t{i}", "outcomes": ["a", "b"]})

    tracemalloc.start()
    try:
        chunks = list(len(chunk) for chunk in iter_wide_json(CODEBOOK, rows()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(chunks) > 10
    assert peak < 1_000_000, peak  # the output is ~3 MB and the rows ~10 MB as objects
    data = json.loads("".join(iter_wide_json(CODEBOOK, rows())))
    assert len(data) == 20_000
    assert data[-1]["title"] == "t19999"
