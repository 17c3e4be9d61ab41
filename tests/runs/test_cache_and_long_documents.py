"""The result cache (a re-run after editing one variable makes calls for that variable only)
and long documents (sent as the excerpts most relevant to each variable, pages recorded)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarry.runs.chunks import ChunkIndex, split_into_chunks, variable_query
from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_project,
    list_extractions,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.documents import make_pdf
from tests.support.fake_llm import FakeLLM, FakeRequest

Headers = dict[str, str]
VARIABLES = [
    {"name": "title", "description": "The report's title", "type": "text"},
    {"name": "site", "description": "Where the study took place", "type": "text"},
    {"name": "patients", "description": "Number of patients enrolled", "type": "integer"},
]


def answer(request: FakeRequest) -> dict[str, Any]:
    value = {"title": "Report", "site": "Lyon", "patients": 42}[str(request.variable)]
    return {"found": True, "evidence": None, "value": value, "confidence": 0.9}


async def start_run(
    client: httpx.AsyncClient, headers: Headers, pid: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(f"/api/v1/projects/{pid}/runs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, response.json()["id"])
    assert run["status"] == "completed", run
    return run


async def test_rerun_after_editing_one_variable_calls_only_for_it(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = answer
    headers = await sign_up(app, client, "cache@example.org")
    pid = (await create_project(client, headers))["id"]
    variables = [await add_variable(client, headers, pid, **spec) for spec in VARIABLES]
    documents = 4
    files = [
        (f"r{i}.txt", f"Report {i}. Lyon. 42 patients.".encode(), "text/plain")
        for i in range(documents)
    ]
    assert (await upload(client, headers, pid, files)).status_code == 201
    await wait_for_documents(client, headers, pid)

    first = await start_run(client, headers, pid)
    assert fake_llm.calls() == documents * len(VARIABLES)
    assert first["tokens_in"] > 0

    # Edit one variable of the three: a new prompt version for it alone.
    edited = variables[1]
    response = await client.patch(
        f"/api/v1/projects/{pid}/variables/{edited['id']}",
        json={"description": "The city where the study took place"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    fake_llm.reset()
    fake_llm.default_reply = answer
    second = await start_run(client, headers, pid)
    assert fake_llm.calls() == documents  # exactly N calls: the edited variable over N documents
    assert {r.variable for r in fake_llm.requests} == {"site"}
    rows = await list_extractions(client, headers, pid, run_id=second["id"])
    assert len(rows) == documents * len(VARIABLES)
    for row in rows:
        reused = row["variable_name"] != "site"
        assert row["cached"] is reused
        assert row["status"] == "succeeded"
        assert (row["tokens_in"] == 0) is reused
    assert second["counts"]["succeeded"] == documents * len(VARIABLES)
    assert second["tokens_in"] < first["tokens_in"]

    # A run can insist on fresh calls.
    fake_llm.reset()
    fake_llm.default_reply = answer
    await start_run(client, headers, pid, force_fresh=True)
    assert fake_llm.calls() == documents * len(VARIABLES)


async def test_failed_answers_are_not_reused(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers = await sign_up(app, client, "cache2@example.org")
    pid = (await create_project(client, headers))["id"]
    await add_variable(client, headers, pid, **VARIABLES[2])
    await upload(client, headers, pid, [("a.txt", b"42 patients.", "text/plain")])
    await wait_for_documents(client, headers, pid)
    fake_llm.default_reply = {"found": True, "evidence": None, "value": "many", "confidence": 1}
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    run = await wait_for_run(client, headers, pid, response.json()["id"])
    assert run["status"] == "failed"
    calls = fake_llm.calls()
    fake_llm.default_reply = answer
    await start_run(client, headers, pid)
    assert fake_llm.calls() == calls + 1  # asked again, not served the failure


@pytest.fixture
def settings(tmp_path: Path, fake_llm: FakeLLM):  # type: ignore[no-untyped-def]
    # A small context budget, so a ten-page document has to be sent in excerpts.
    return make_settings(tmp_path, fake_llm, llm_max_document_chars=4000)


def long_report() -> list[str]:
    filler = (
        "The committee reviewed the administrative schedule and the budget of the unit. "
        "Minutes were approved without comment and the meeting moved to other business. "
    )
    pages = [f"Annual report, page {n}. " + filler * 12 for n in range(1, 11)]
    pages[0] = "Quarterly Cardiology Report. " + pages[0]
    pages[6] = (
        "Enrolment: a total of 318 patients were enrolled at the Lyon site during the trial. "
        + filler * 10
    )
    return pages


async def test_a_long_document_is_sent_as_the_excerpts_relevant_to_each_variable(
    settings: Any, fake_llm: FakeLLM
) -> None:
    async with running_app(settings) as (app, client):
        headers = await sign_up(app, client, "long@example.org")
        pid = (await create_project(client, headers))["id"]
        await add_variable(
            client,
            headers,
            pid,
            name="patients",
            label="Patients enrolled",
            description="Total number of patients enrolled in the trial",
            type="integer",
        )
        pdf = make_pdf(long_report())
        await upload(client, headers, pid, [("long.pdf", pdf, "application/pdf")])
        await wait_for_documents(client, headers, pid)
        fake_llm.default_reply = {
            "found": True,
            "evidence": "a total of 318 patients were enrolled",
            "value": 318,
            "confidence": 0.9,
        }
        run = await start_run(client, headers, pid)
        (row,) = await list_extractions(client, headers, pid, run_id=run["id"])

        sent = fake_llm.requests[-1].text
        assert "318 patients were enrolled" in sent  # page 7, the relevant one
        assert "Quarterly Cardiology Report" in sent  # the opening always goes
        assert len(sent) < 4000 + 3000  # the budget, plus instructions and variable part
        assert "Excerpts of a 10-page document" in sent
        assert 7 in row["pages_sent"] and 1 in row["pages_sent"]
        assert len(row["pages_sent"]) < 10
        assert row["grounded"] is True and row["page"] == 7 and row["value"] == 318
        logs = (
            await client.get(f"/api/v1/projects/{pid}/runs/{run['id']}/logs", headers=headers)
        ).json()
        chunked = [e for e in logs["items"] if e["event"] == "task.chunked"]
        assert len(chunked) == 1 and "pages 1" in chunked[0]["message"]


async def test_a_long_text_file_is_one_page_and_the_log_says_so_in_the_singular(
    settings: Any, fake_llm: FakeLLM
) -> None:
    async with running_app(settings) as (app, client):
        headers = await sign_up(app, client, "one-page@example.org")
        pid = (await create_project(client, headers))["id"]
        await add_variable(client, headers, pid, **VARIABLES[2])
        # A text file has no pages: it is one page, however long, here over the budget.
        text = "\n".join(long_report()).encode()
        await upload(client, headers, pid, [("long.txt", text, "text/plain")])
        [document] = await wait_for_documents(client, headers, pid)
        assert document["page_count"] == 1 and document["char_count"] > 4000
        fake_llm.default_reply = {"found": False, "value": None}
        run = await start_run(client, headers, pid)

        logs = (
            await client.get(f"/api/v1/projects/{pid}/runs/{run['id']}/logs", headers=headers)
        ).json()
        [chunked] = [e["message"] for e in logs["items"] if e["event"] == "task.chunked"]
        assert "page 1 was sent," in chunked, chunked


def test_chunks_overlap_know_their_pages_and_rank_by_the_variable() -> None:
    pages = ["alpha " * 300, "beta " * 300 + "enrolled patients total", "gamma " * 300]
    text = "\n\n".join(pages)
    starts = [0, len(pages[0]) + 2, len(pages[0]) + len(pages[1]) + 4]
    chunks = split_into_chunks(text, starts, chunk_chars=800, overlap=100)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # overlapping
        assert before.first_page <= after.first_page
    spec = {"name": "patients", "label": "Patients", "description": "Number of patients enrolled"}
    chosen = ChunkIndex(text, chunks).select(variable_query(spec), budget_chars=1700)
    assert chosen[0] is chunks[0]
    assert any("enrolled patients" in text[c.start : c.end] for c in chosen)
    assert sum(c.end - c.start for c in chosen) <= 1700
