"""CSV exports as a user reads them back: with the csv module, with pandas, in Excel."""

from __future__ import annotations

import csv
import io
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from quarry.exports.csv_writer import iter_long_csv, iter_wide_csv
from quarry.exports.table import LONG_COLUMNS, CellFlags, ExportVariable, LongRow, WideRow
from quarry.variables.types import VariableType as T


def make_codebook() -> list[ExportVariable]:
    return [
        ExportVariable("title", "Title", T.TEXT),
        ExportVariable("n_patients", "Patients", T.INTEGER),
        ExportVariable("effect", "Effect size", T.NUMBER, unit="mmHg"),
        ExportVariable("randomised", "Randomised?", T.BOOLEAN),
        ExportVariable("published", "Published", T.DATE),
        ExportVariable("design", "Design", T.CATEGORY, allowed_values=("RCT", "cohort")),
        ExportVariable("outcomes", "Outcomes", T.MULTI_CATEGORY),
        ExportVariable("authors", "Authors", T.LIST),
    ]


def make_wide_row(**values: object) -> WideRow:
    base: dict[str, object] = {
        "title": "Blood pressure, a trial",
        "n_patients": 12,
        "effect": 3.5,
        "randomised": True,
        "published": "2024-01-05",
        "design": "RCT",
        "outcomes": ["a", "b"],
        "authors": ["Doe, J.", "Smith"],
    }
    base.update(values)
    return WideRow("doc-1", "trial.pdf", base)  # type: ignore[arg-type]


def read_csv(chunks: Iterator[str]) -> list[list[str]]:
    text = "".join(chunks)
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:], newline="")))


def write_csv(path: Path, chunks: Iterator[str]) -> Path:
    # What an HTTP response does: encode the stream as UTF-8, byte for byte.
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk.encode("utf-8"))
    return path


def test_wide_csv_round_trips_through_csv_module() -> None:
    rows = [make_wide_row(), WideRow("doc-2", "empty.pdf", {"effect": 12.0, "outcomes": []})]
    header, first, second = read_csv(iter_wide_csv(make_codebook(), rows))
    assert header == ["document_id", "filename", *(v.name for v in make_codebook())]
    assert first == [
        "doc-1",
        "trial.pdf",
        "Blood pressure, a trial",
        "12",
        "3.5",
        "true",
        "2024-01-05",
        "RCT",
        "a; b",
        "Doe, J.; Smith",
    ]
    # Not stated (missing or None) and "none apply" are empty cells; 12.0 prints as 12.
    assert second == ["doc-2", "empty.pdf", "", "", "12", "", "", "", "", ""]


def test_wide_csv_reads_back_in_pandas_with_exact_values(tmp_path: Path) -> None:
    rows = [make_wide_row(effect=-5, published="2023-07"), make_wide_row(effect=1e-7)]
    path = write_csv(tmp_path / "wide.csv", iter_wide_csv(make_codebook(), rows))
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(frame.columns)[:2] == ["document_id", "filename"]  # BOM not in the header
    assert frame["effect"].tolist() == ["-5", "0.0000001"]
    assert frame["published"].tolist() == ["2023-07", "2024-01-05"]
    assert frame["randomised"].tolist() == ["true", "true"]
    typed = pd.read_csv(path)
    assert typed["effect"].tolist() == [-5.0, 1e-7]  # a negative number stays a number
    assert typed["n_patients"].tolist() == [12, 12]


def test_csv_uses_crlf_and_quotes_only_when_needed() -> None:
    text = "".join(iter_wide_csv(make_codebook(), [make_wide_row(title='say "hi"\nthen go')]))
    assert text.count("\r\n") == 2  # header and row; the line break inside a value is quoted
    assert '"say ""hi""\nthen go"' in text
    assert ",RCT," in text  # unquoted plain value


@pytest.mark.parametrize(
    "evil", ['=HYPERLINK("http://x","click")', "+1+1", "@SUM(A1)", "\t=1", "-2+3", " =1"]
)
def test_formula_text_is_neutralised_everywhere(evil: str) -> None:
    variables = [ExportVariable("note", "Note", T.TEXT), ExportVariable("n", "N", T.NUMBER)]
    rows = [WideRow("doc-1", evil, {"note": evil, "n": -5})]
    _, row = read_csv(iter_wide_csv(variables, rows))
    assert row == ["doc-1", "'" + evil, "'" + evil, "-5"]


def test_long_csv_has_provenance_columns() -> None:
    rows = [
        LongRow(
            "doc-1",
            "trial.pdf",
            "effect",
            T.NUMBER,
            value=4.25,
            status="succeeded",
            evidence="=the effect was 4.25",
            page=3,
            confidence=0.9,
            grounded=True,
            review_status="corrected",
            extracted_value=4.0,
            model="gpt-x",
            prompt_version=2,
            run_id="run-1",
            flags=CellFlags(low_confidence=True, unsupported_evidence=True),
            support="unsupported",
        ),
        LongRow("doc-1", "trial.pdf", "title", T.TEXT),  # never extracted
    ]
    header, first, second = read_csv(iter_long_csv(rows))
    assert header == list(LONG_COLUMNS)
    record = dict(zip(header, first, strict=True))
    assert record["value"] == "4.25"
    assert record["extracted_value"] == "4"
    assert record["evidence"] == "'=the effect was 4.25"
    assert (record["page"], record["confidence"], record["grounded"]) == ("3", "0.9", "true")
    assert (record["review_status"], record["prompt_version"]) == ("corrected", "2")
    assert (record["support"], record["flags"]) == (
        "unsupported",
        "low_confidence; unsupported_evidence",
    )
    assert second == ["doc-1", "trial.pdf", "title", *[""] * (len(LONG_COLUMNS) - 3)]


def test_variable_named_like_a_fixed_column_is_refused_before_streaming() -> None:
    variables = [ExportVariable("filename", "File name", T.TEXT)]
    with pytest.raises(ValueError, match="filename"):
        iter_wide_csv(variables, [])  # raised on the call, not on first iteration


def test_empty_export_is_just_the_header() -> None:
    assert read_csv(iter_wide_csv(make_codebook(), [])) == [
        ["document_id", "filename", *(v.name for v in make_codebook())]
    ]


def test_twenty_thousand_rows_stream_in_bounded_memory(tmp_path: Path) -> None:
    variables = make_codebook()

    def rows() -> Iterator[WideRow]:
        for i in range(20_000):
            yield WideRow(f"doc-{i}", f"file {i}.pdf", {"title": f"title {i}", "effect": i / 4})

    started = time.perf_counter()
    tracemalloc.start()
    try:
        chunks = iter_wide_csv(variables, rows())
        first = next(chunks)
        sizes = [len(chunk) for chunk in chunks]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 30  # a hang guard: this takes ~1 s
    assert first.startswith("\ufeffdocument_id,")
    assert len(sizes) > 10 and max(sizes) < 64 * 1024  # many modest chunks, not one blob
    # The file is ~1 MB and the rows ~10 MB as objects; streaming holds a chunk or two
    # (~250 kB measured), so materialising either would blow this bound.
    assert peak < 1_000_000, peak

    path = write_csv(tmp_path / "big.csv", iter_wide_csv(variables, rows()))
    frame = pd.read_csv(path)
    assert len(frame) == 20_000
    assert frame["effect"].iloc[-1] == 19_999 / 4
