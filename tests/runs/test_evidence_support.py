"""Evidence that supports the value (issue 12, item 4): a quote in the document that does not
contain the value is flagged `unsupported_evidence` in the API and every export; booleans and
categories without their cue words are `unchecked`; bare-value quotes are widened to their
sentence. Through the real run pipeline, on SQLite and PostgreSQL, with the fake LLM."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
from fastapi import FastAPI

from quarry.exports.xlsx_writer import FLAG_FILLS
from quarry.runs.support import Support, check_support, cue_words, sentence_span
from quarry.variables.types import TypeSpec, VariableType
from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    list_extractions,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM, answer_each
from tests.support.postgres import temporary_postgres_database

REPORT = (
    "Trial report. The study took place in Lyon. A total of 240 patients were randomised "
    "to two arms. The mean age was 54.3 years. Recruitment started in March 2021 and "
    "ended in 2022. Design: RCT."
)
SAMPLE_SENTENCE = "A total of 240 patients were randomised to two arms."
START_SENTENCE = "Recruitment started in March 2021 and ended in 2022."
AGE_QUOTE = "The mean age was 54.3 years"

VARIABLES: list[dict[str, Any]] = [
    {"name": "sample_size", "label": "Sample size", "description": "Patients", "type": "integer"},
    {"name": "age", "label": "Mean age", "description": "Mean age in years", "type": "number"},
    {"name": "randomised", "label": "Randomised", "description": "Randomised?", "type": "boolean"},
    {"name": "start", "label": "Start", "description": "When recruitment began", "type": "date"},
    {
        "name": "design",
        "label": "Design",
        "description": "Study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort"],
    },
]


def answer(value: Any, evidence: str, confidence: float | None = 0.9) -> dict[str, Any]:
    return {"found": True, "evidence": evidence, "value": value, "confidence": confidence}


#: What a small model did: right values, some of them with the wrong passage as evidence.
MISQUOTED = {
    "sample_size": answer(240, AGE_QUOTE, 0.95),  # in the document, but about the age
    "age": answer(54.3, AGE_QUOTE, 0.95),
    "randomised": answer(True, AGE_QUOTE),  # no word about randomisation: cannot be checked
    "start": answer("2021-03", "2021"),  # a bare value
    "design": answer("RCT", "Design: RCT"),
}
#: Grouped answers quoting bare values.
BARE = {
    "sample_size": answer(240, "240"),
    "age": answer(54.3, "54.3"),
    "randomised": answer(True, "randomised"),
    "start": answer("2021-03", "March 2021"),
    "design": answer("RCT", "RCT"),
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/quarry.db"
    else:
        with temporary_postgres_database("quarry_support") as url:
            yield url


async def extract(
    app: FastAPI, client: httpx.AsyncClient, *, group_size: int = 1
) -> tuple[dict[str, str], str, dict[str, dict[str, Any]]]:
    """A project over REPORT run to the end; its extractions by variable name."""
    headers = await sign_up(app, client, f"support{uuid.uuid4().hex[:8]}@example.org")
    response = await client.post(
        "/api/v1/projects", json={"name": "Support", "group_size": group_size}, headers=headers
    )
    assert response.status_code == 201, response.text
    pid = response.json()["id"]
    for spec in VARIABLES:
        await add_variable(client, headers, pid, **spec)
    files = [("report.txt", REPORT.encode(), "text/plain")]
    assert (await upload(client, headers, pid, files)).status_code == 201
    await wait_for_documents(client, headers, pid)
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, response.json()["id"])
    assert run["status"] == "completed", run
    rows = await list_extractions(client, headers, pid, run_id=run["id"])
    return headers, pid, {row["variable_name"]: row for row in rows}


async def test_a_quote_without_the_value_is_flagged_unsupported_in_the_api_and_every_export(
    tmp_path: Path, fake_llm: FakeLLM, database_url: str
) -> None:
    fake_llm.default_reply = answer_each(lambda name: MISQUOTED[name])
    settings = make_settings(tmp_path, fake_llm, database_url=database_url)
    async with running_app(settings) as (app, client):
        headers, pid, rows = await extract(app, client)

        # In the document (grounded), but it does not say 240: flagged, confidence capped.
        sample = rows["sample_size"]
        assert (sample["value"], sample["grounded"], sample["support"]) == (
            240,
            True,
            "unsupported",
        )
        assert sample["confidence"] <= 0.5
        # The same quote supports the age: not flagged, confidence as the model gave it.
        age = rows["age"]
        assert (age["value"], age["support"], age["confidence"]) == (54.3, "supported", 0.95)
        # A boolean whose quote has no word about it: unchecked, neither flagged nor capped.
        randomised = rows["randomised"]
        assert (randomised["support"], randomised["confidence"]) == ("unchecked", 0.9)
        assert rows["design"]["support"] == "supported"
        # A bare-value quote is widened to its sentence, found in the document and highlighted.
        start = rows["start"]
        assert (start["evidence"], start["grounded"], start["support"]) == (
            START_SENTENCE,
            True,
            "supported",
        )
        assert REPORT[start["char_start"] : start["char_end"]] == START_SENTENCE

        def export(format: str) -> Any:
            return client.get(
                f"/api/v1/projects/{pid}/export",
                params={"format": format, "layout": "long"},
                headers=headers,
            )

        response = await export("csv")
        assert response.status_code == 200
        records = {
            r["variable"]: r for r in csv.DictReader(io.StringIO(response.text.lstrip("\ufeff")))
        }
        assert records["sample_size"]["support"] == "unsupported"
        assert "unsupported_evidence" in records["sample_size"]["flags"].split("; ")
        assert (records["age"]["support"], records["age"]["flags"]) == ("supported", "")
        assert (records["randomised"]["support"], records["randomised"]["flags"]) == (
            "unchecked",
            "",
        )

        response = await export("json")
        assert response.status_code == 200
        objects = {o["variable"]: o for o in json.loads(response.text)}
        assert objects["sample_size"]["support"] == "unsupported"
        assert "unsupported_evidence" in objects["sample_size"]["flags"]
        assert (objects["age"]["support"], objects["age"]["flags"]) == ("supported", [])

        response = await export("xlsx")
        assert response.status_code == 200
        workbook = openpyxl.load_workbook(io.BytesIO(response.content))
        details = list(workbook["Details"].iter_rows(values_only=True))
        header = details[0]
        by_variable = {row[header.index("variable")]: row for row in details[1:]}
        flags = header.index("flags")
        assert "unsupported_evidence" in by_variable["sample_size"][flags]
        assert not by_variable["age"][flags]
        # The Results cell is highlighted with the unsupported colour, the age cell is not.
        results = list(workbook["Results"].iter_rows())
        names = [c.value for c in results[0]]
        unsupported_fill = next(f for a, f, _ in FLAG_FILLS if a == "unsupported_evidence")
        sample_cell = results[1][names.index("sample_size")]
        assert sample_cell.fill.fgColor.rgb.endswith(unsupported_fill.fgColor.rgb[-6:])
        assert results[1][names.index("age")].fill.fgColor.rgb in (None, "00000000")


async def test_grouped_bare_value_quotes_are_widened_to_their_sentence_and_grounded(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = answer_each(lambda name: BARE[name])
    _, _, rows = await extract(app, client, group_size=5)
    assert len(fake_llm.requests) == 1 and fake_llm.requests[0].is_group

    for name in ("sample_size", "randomised"):
        row = rows[name]
        assert (row["evidence"], row["grounded"], row["support"]) == (
            SAMPLE_SENTENCE,
            True,
            "supported",
        ), row
        assert REPORT[row["char_start"] : row["char_end"]] == SAMPLE_SENTENCE
    assert rows["age"]["evidence"] == "The mean age was 54.3 years."
    assert rows["start"]["evidence"] == START_SENTENCE
    assert rows["design"]["evidence"] == "Design: RCT."
    assert all(row["support"] == "supported" for row in rows.values()), rows


async def test_a_bare_value_found_twice_is_taken_in_the_sentence_that_names_the_variable(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    """ "2021" occurs in the funding sentence first; the start date's quote is widened to the
    sentence about starting."""
    text = "Funded in 2021 by the council. The trial started in 2021 in Lyon."
    fake_llm.default_reply = answer_each(lambda name: answer("2021", "2021"))
    settings = make_settings(tmp_path, fake_llm)
    async with running_app(settings) as (app, client):
        headers = await sign_up(app, client, "twice@example.org")
        response = await client.post("/api/v1/projects", json={"name": "T"}, headers=headers)
        pid = response.json()["id"]
        await add_variable(
            client, headers, pid, name="start", label="Started", description="x", type="date"
        )
        files = [("t.txt", text.encode(), "text/plain")]
        assert (await upload(client, headers, pid, files)).status_code == 201
        await wait_for_documents(client, headers, pid)
        response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
        run = await wait_for_run(client, headers, pid, response.json()["id"])
        [row] = await list_extractions(client, headers, pid, run_id=run["id"])
    assert row["evidence"] == "The trial started in 2021 in Lyon."
    assert row["support"] == "supported"


# -- the check itself, type by type -----------------------------------------------------------

INT = TypeSpec(VariableType.INTEGER)
N = TypeSpec(VariableType.NUMBER)
D = TypeSpec(VariableType.DATE)
B = TypeSpec(VariableType.BOOLEAN)
C = TypeSpec(VariableType.CATEGORY, ("RCT", "Cohort", "phase 2", "phase 3"))
M = TypeSpec(VariableType.MULTI_CATEGORY, ("aspirin", "heparin", "placebo"))
T = TypeSpec(VariableType.TEXT)
L = TypeSpec(VariableType.LIST)
RANDOMISED = cue_words("randomised", "Randomised?")


@pytest.mark.parametrize(
    ("spec", "value", "passage", "expected"),
    [
        (INT, 240, "mean age 54.3 years", Support.UNSUPPORTED),
        (INT, 240, "A total of 240 patients", Support.SUPPORTED),
        (INT, 64, "sixty-four patients were enrolled", Support.SUPPORTED),
        (INT, 112, "one hundred and twelve adults", Support.SUPPORTED),
        (INT, 64, "n = 64", Support.SUPPORTED),
        (INT, 1234, "n = 1,234", Support.SUPPORTED),
        (INT, 24, "n = 240", Support.UNSUPPORTED),
        (N, 0.035, "an event rate of 3.5%", Support.SUPPORTED),
        (N, 3.5, "an event rate of 3.5 %", Support.SUPPORTED),
        (N, 1_500_000, "a budget of 1.5 million euros", Support.SUPPORTED),
        (N, 35, "3.5 mg", Support.UNSUPPORTED),
        (D, "2019-03", "recruited from March 2019", Support.SUPPORTED),
        (D, "2019-03", "recruited from Mar 2019", Support.SUPPORTED),
        (D, "2019-03-12", "on 12/03/2019", Support.SUPPORTED),
        (D, "2019-03-12", "on 12 March 2019", Support.SUPPORTED),
        (D, "2019-04", "recruited from March 2019", Support.UNSUPPORTED),
        (D, "2021", "mean age 54.3 years", Support.UNSUPPORTED),
        (B, True, "Patients were randomized to two arms", Support.SUPPORTED),
        (B, True, "a non-randomised comparison", Support.UNSUPPORTED),
        (B, False, "patients were not randomised", Support.SUPPORTED),
        (B, False, "Randomised: No", Support.SUPPORTED),
        (B, True, "Randomised: yes", Support.SUPPORTED),
        (B, True, "mean age 54.3 years", Support.UNCHECKED),
        (C, "RCT", "Design: RCT", Support.SUPPORTED),
        (C, "phase 3", "a phase 2 trial", Support.UNSUPPORTED),
        (C, "RCT", "a randomised trial", Support.UNCHECKED),
        (M, ["aspirin", "heparin"], "aspirin and heparin daily", Support.SUPPORTED),
        (M, ["aspirin"], "heparin only", Support.UNSUPPORTED),
        (T, "Lyon", "The study took place in Lyon", Support.SUPPORTED),
        (T, "Paris", "The study took place in Lyon", Support.UNSUPPORTED),
        (L, ["placebo", "drug"], "Arms: placebo and drug", Support.SUPPORTED),
        (L, ["placebo", "surgery"], "Arms: placebo and drug", Support.UNSUPPORTED),
        (INT, 240, "", Support.UNSUPPORTED),
    ],
)
def test_support_per_type(spec: TypeSpec, value: Any, passage: str, expected: Support) -> None:
    assert check_support(spec, value, passage, RANDOMISED) is expected


def test_a_sentence_ends_at_its_full_stop_not_at_a_decimal_point() -> None:
    text = "First. The mean age was 54.3 years in 2021. Next one."
    start = text.index("2021")
    a, b = sentence_span(text, start, start + 4)
    assert text[a:b] == "The mean age was 54.3 years in 2021."
