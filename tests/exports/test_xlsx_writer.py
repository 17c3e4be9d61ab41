"""The Excel export as a reviewer opens it: sheets, formatting, typed cells, highlights, safety."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openpyxl
import pandas as pd
import pytest
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import Cell
from openpyxl.styles.cell_style import StyleArray
from openpyxl.worksheet._writer import ALL_TEMP_FILES as openpyxl_temp_files

from quarry.exports.service import final_value
from quarry.exports.table import (
    LONG_COLUMNS,
    CellFlags,
    EvaluationTable,
    ExportVariable,
    JsonValue,
    LongRow,
    VariableExample,
    WideRow,
)
from quarry.exports.xlsx_writer import FLAG_FILLS, write_xlsx
from quarry.variables.types import VariableType as T

EVIL = '=HYPERLINK("http://x","click")'
CODEBOOK = [
    ExportVariable("title", "Title", T.TEXT, description="The trial's title, as printed."),
    ExportVariable("n", "Patients", T.INTEGER, required=True, position=1, prompt_version=3),
    ExportVariable("effect", "Effect", T.NUMBER, unit="mmHg", position=2),
    ExportVariable("randomised", "Randomised?", T.BOOLEAN, position=3),
    ExportVariable("published", "Published", T.DATE, position=4),
    ExportVariable(
        "design",
        "Design",
        T.CATEGORY,
        allowed_values=("RCT", "cohort"),
        examples=(VariableExample("RCT", "patients were randomised"), VariableExample("cohort")),
        position=5,
    ),
    ExportVariable("outcomes", "Outcomes", T.MULTI_CATEGORY, position=6),
]
COLOURS = {name: fill.fgColor.rgb[-6:] for name, fill, _ in FLAG_FILLS}


def wide_rows() -> list[WideRow]:
    return [
        WideRow(
            "doc-1",
            "trial.pdf",
            {
                "title": EVIL,
                "n": 12,
                "effect": -3.5,
                "randomised": True,
                "published": "2024-01-05",
                "design": "RCT",
                "outcomes": ["a", "b"],
            },
            {
                "n": CellFlags(low_confidence=True),
                "effect": CellFlags(ungrounded=True),
                "randomised": CellFlags(review_disagrees=True),
                "design": CellFlags(failed=True, low_confidence=True),  # failed wins
                "outcomes": CellFlags(not_found=True, low_confidence=True),  # not stated wins
            },
        ),
        WideRow("doc-2", "+1+1.pdf", {"title": "@SUM(A1)", "published": "2023-07"}),
        WideRow("doc-3", "c.pdf", {"title": "\t=1", "published": "2023", "outcomes": []}),
    ]


def long_rows() -> list[LongRow]:
    return [
        LongRow(
            "doc-1",
            "trial.pdf",
            "published",
            T.DATE,
            value="2024-01-05",
            status="succeeded",
            evidence="=published 5 January 2024\x0c(page break)",
            page=1,
            confidence=0.4,
            grounded=False,
            review_status="corrected",
            extracted_value="2024-01",
            model="gpt-x",
            prompt_version=2,
            run_id="run-1",
            flags=CellFlags(low_confidence=True, ungrounded=True),
        ),
        LongRow(
            "doc-2",
            "+1+1.pdf",
            "n",
            T.INTEGER,
            status="failed",
            error="-timeout",
            flags=CellFlags(failed=True),
        ),
    ]


def build(tmp_path: Path, evaluation: EvaluationTable | None = None) -> Any:
    path = tmp_path / "export.xlsx"
    write_xlsx(path, CODEBOOK, iter(wide_rows()), iter(long_rows()), evaluation)
    return openpyxl.load_workbook(path)


def colour(cell: Any) -> str | None:
    return cell.fill.fgColor.rgb[-6:] if cell.fill.fill_type == "solid" else None


def by_header(ws: Any) -> dict[str, list[Any]]:
    columns = list(ws.iter_cols())
    return {col[0].value: list(col[1:]) for col in columns}


def test_sheets_are_in_order_with_bold_frozen_filtered_headers(tmp_path: Path) -> None:
    wb = build(tmp_path)
    assert wb.sheetnames == ["Results", "Details", "Codebook", "Legend"]
    results, details, codebook = wb["Results"], wb["Details"], wb["Codebook"]
    assert results.freeze_panes == "C2"  # header and the document columns stay in view
    assert details.freeze_panes == codebook.freeze_panes == "A2"
    assert results.auto_filter.ref == "A1:I4"
    assert details.auto_filter.ref == "A1:T3"  # 20 columns, support, flags and match last
    assert codebook.auto_filter.ref == "A1:K8"
    for ws in (results, details, codebook):
        assert all(cell.font.b for cell in ws[1])
    assert [c.value for c in details[1]] == list(LONG_COLUMNS)
    assert [c.value for c in results[1]] == ["document_id", "filename", *(v.name for v in CODEBOOK)]


def test_column_widths_follow_content_within_bounds(tmp_path: Path) -> None:
    wb = build(tmp_path)
    widths = {k: d.width for k, d in wb["Results"].column_dimensions.items()}
    assert widths["C"] == len(EVIL) + 2  # the title column fits its longest value
    assert all(8 <= w <= 60 for w in widths.values())
    evidence = wb["Details"].column_dimensions["F"]
    assert 8 <= evidence.width <= 60


def test_results_cells_are_typed(tmp_path: Path) -> None:
    cols = by_header(build(tmp_path)["Results"])
    assert [c.value for c in cols["n"]] == [12, None, None]
    assert cols["n"][0].data_type == "n"
    assert cols["effect"][0].value == -3.5  # a negative number stays a number
    assert cols["randomised"][0].value is True
    published = cols["published"]
    assert published[0].value == datetime(2024, 1, 5)
    assert published[0].is_date and published[0].number_format == "yyyy-mm-dd"
    assert [(c.value, c.data_type) for c in published[1:]] == [("2023-07", "s"), ("2023", "s")]
    assert cols["outcomes"][0].value == "a; b"
    assert cols["outcomes"][2].value is None  # "none apply" is an empty cell


def test_pandas_reads_results_with_types(tmp_path: Path) -> None:
    build(tmp_path)
    frame = pd.read_excel(tmp_path / "export.xlsx", sheet_name="Results")
    assert frame["n"].iloc[0] == 12
    assert frame["effect"].iloc[0] == -3.5
    assert frame["published"].tolist() == [datetime(2024, 1, 5), "2023-07", "2023"]
    assert frame["title"].tolist() == [EVIL, "@SUM(A1)", "\t=1"]


def test_formula_like_text_is_inert(tmp_path: Path) -> None:
    wb = build(tmp_path)
    cols = by_header(wb["Results"])
    for cell, text in zip(cols["title"], [EVIL, "@SUM(A1)", "\t=1"], strict=True):
        assert (cell.data_type, cell.value) == ("s", text)
        assert cell.quotePrefix  # stays text even after a user edits the cell
    assert (cols["filename"][1].value, cols["filename"][1].quotePrefix) == ("+1+1.pdf", True)
    assert cols["filename"][0].quotePrefix is False  # ordinary text is left alone
    for ws in wb:
        assert not [c.coordinate for row in ws.iter_rows() for c in row if c.data_type == "f"]


def test_flagged_cells_are_highlighted(tmp_path: Path) -> None:
    cols = by_header(build(tmp_path)["Results"])
    assert len(set(COLOURS.values())) == len(COLOURS)  # every flag has its own colour
    assert colour(cols["n"][0]) == COLOURS["low_confidence"]
    assert colour(cols["effect"][0]) == COLOURS["ungrounded"]
    assert colour(cols["randomised"][0]) == COLOURS["review_disagrees"]
    assert colour(cols["design"][0]) == COLOURS["failed"]
    assert colour(cols["outcomes"][0]) == COLOURS["not_found"]
    assert colour(cols["title"][0]) is None
    assert colour(cols["n"][1]) is None


def test_details_sheet_is_typed_and_flagged(tmp_path: Path) -> None:
    cols = by_header(build(tmp_path)["Details"])
    assert cols["value"][0].value == datetime(2024, 1, 5)
    assert colour(cols["value"][0]) == COLOURS["ungrounded"]  # the more serious flag
    assert colour(cols["value"][1]) == COLOURS["failed"]
    assert cols["extracted_value"][0].value == "2024-01"
    assert (cols["page"][0].value, cols["confidence"][0].value) == (1, 0.4)
    assert cols["grounded"][0].value is False
    evidence = cols["evidence"][0]
    assert evidence.value == "=published 5 January 2024 (page break)"  # form feed made safe
    assert evidence.data_type == "s" and evidence.alignment.wrap_text
    assert (cols["error"][1].value, cols["error"][1].data_type) == ("-timeout", "s")


def test_codebook_lists_every_variable(tmp_path: Path) -> None:
    ws = build(tmp_path)["Codebook"]
    records = [
        dict(zip([c.value for c in ws[1]], [c.value for c in row], strict=True))
        for row in ws.iter_rows(min_row=2)
    ]
    assert [r["name"] for r in records] == [v.name for v in CODEBOOK]
    design = records[5]
    assert design["type"] == "category"
    assert design["allowed_values"] == "RCT; cohort"
    assert design["examples"] == "RCT — patients were randomised\ncohort"
    n = records[1]
    assert (n["required"], n["position"], n["prompt_version"], n["unit"]) == (True, 1, 3, None)
    assert ws["D2"].alignment.wrap_text  # descriptions wrap instead of running off-screen


def test_optional_evaluation_sheet_and_legend(tmp_path: Path) -> None:
    evaluation = EvaluationTable(["variable", "accuracy"], [["n", 0.75], ["=x", None]])
    wb = build(tmp_path, evaluation)
    assert wb.sheetnames == ["Results", "Details", "Codebook", "Evaluation", "Legend"]
    assert [[c.value for c in row] for row in wb["Evaluation"].iter_rows(min_row=2)] == [
        ["n", 0.75],
        ["=x", None],
    ]
    legend = {row[0].value: colour(row[0]) for row in wb["Legend"].iter_rows(min_row=2)}
    assert legend["low confidence"] == COLOURS["low_confidence"]


def test_a_failing_export_leaves_no_file_behind(tmp_path: Path) -> None:
    def broken() -> Iterator[WideRow]:
        for _ in range(150):  # past the width sample: rows are being streamed to disk
            yield wide_rows()[0]
        raise RuntimeError("database went away")

    path = tmp_path / "export.xlsx"
    # openpyxl's own list of the temporary files its write-only sheets stream to.
    before = set(openpyxl_temp_files)
    with pytest.raises(RuntimeError):
        write_xlsx(path, CODEBOOK, broken(), [])
    assert list(tmp_path.iterdir()) == []
    left = [f for f in set(openpyxl_temp_files) - before if Path(f).exists()]
    assert left == []  # not left in /tmp until the server restarts


class TrackedValues(dict[str, JsonValue]):
    """Row values that can be weakly referenced, to count how many rows are kept alive."""


def test_twenty_thousand_rows_stream_in_bounded_memory(tmp_path: Path) -> None:
    # Counting live rows is exact where tracemalloc is blind (lxml allocates in C) and slow.
    alive = most_alive = 0

    def freed() -> None:
        nonlocal alive
        alive -= 1

    def rows() -> Iterator[WideRow]:
        nonlocal alive, most_alive
        for i in range(20_000):
            values = TrackedValues(title=f"title {i}", n=i, effect=i / 4, published="2024-02-29")
            weakref.finalize(values, freed)
            alive += 1
            most_alive = max(most_alive, alive)
            flags = {"effect": CellFlags(low_confidence=True)} if i % 7 == 0 else {}
            yield WideRow(f"doc-{i}", f"file {i}.pdf", values, flags)

    path = tmp_path / "big.xlsx"
    write_xlsx(path, CODEBOOK, rows(), iter([]))
    assert most_alive <= 110, most_alive  # the width sample (100 rows), never the whole export

    ws = openpyxl.load_workbook(path, read_only=True)["Results"]
    rows_read = list(ws.iter_rows(values_only=True))
    assert len(rows_read) == 20_001
    last = rows_read[-1]
    assert last[:6] == ("doc-19999", "file 19999.pdf", "title 19999", 19_999, 19_999 / 4, None)
    assert last[6] == datetime(2024, 2, 29)


def test_openpyxl_still_keeps_cell_styles_where_the_writer_copies_them(tmp_path: Path) -> None:
    """The writer copies prepared style arrays into cells through `Cell._style`, private in
    openpyxl 3.1.5 (pinned in requirements.txt): if a new openpyxl moves it, this fails first."""
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Sheet")
    scratch = WriteOnlyCell(ws)
    scratch.fill = FLAG_FILLS[0][1]
    scratch.quotePrefix = True
    assert isinstance(scratch._style, StyleArray)
    cell = Cell(ws, row=1, column=1, style_array=scratch._style)
    cell.value = "=1+1"
    cell.data_type = "s"
    ws.append([cell, 2])
    wb.save(tmp_path / "contract.xlsx")

    written = openpyxl.load_workbook(tmp_path / "contract.xlsx")["Sheet"]["A1"]
    assert (written.value, written.data_type, written.quotePrefix) == ("=1+1", "s", True)
    assert colour(written) == COLOURS["failed"]


def test_a_not_stated_answer_is_not_flagged_low_confidence() -> None:
    """Grid, workbook and flags column agree: "not stated" has no value to doubt, whatever
    its (capped) confidence; a value with the same confidence is flagged."""

    def answer(status: str, value: object) -> SimpleNamespace:
        return SimpleNamespace(
            status=status,
            value=value,
            confidence=0.2,
            grounded=None,
            support=None,
            agreement=None,
            match_status=None,
            ocr_confidence=None,
        )

    _, not_stated = final_value(answer("not_found", None), None, None)
    assert not_stated == CellFlags(not_found=True) and not_stated.names == "not_found"
    _, doubtful = final_value(answer("succeeded", 3), None, None)
    assert doubtful == CellFlags(low_confidence=True)
