"""Runs as a user lives them: bad answers re-asked, flaky servers retried, failures explained,
failed pairs retried alone, runs cancelled, progress and logs readable."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

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
from tests.support.fake_llm import FakeLLM

Headers = dict[str, str]


async def _project_with_docs(
    app: FastAPI, client: httpx.AsyncClient, texts: dict[str, str], variables: list[dict[str, Any]]
) -> tuple[Headers, str, list[dict[str, Any]]]:
    headers = await sign_up(app, client, "runner@example.org")
    pid = (await create_project(client, headers))["id"]
    for spec in variables:
        await add_variable(client, headers, pid, **spec)
    files = [(name, text.encode(), "text/plain") for name, text in texts.items()]
    assert (await upload(client, headers, pid, files)).status_code == 201
    docs = await wait_for_documents(client, headers, pid)
    assert all(d["status"] == "ready" for d in docs)
    return headers, pid, docs


async def _start(
    client: httpx.AsyncClient, headers: Headers, pid: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(f"/api/v1/projects/{pid}/runs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


async def _logs(client: httpx.AsyncClient, headers: Headers, pid: str, run_id: str) -> list[str]:
    response = await client.get(f"/api/v1/projects/{pid}/runs/{run_id}/logs", headers=headers)
    return [e["message"] for e in response.json()["items"]]


AGE = {"name": "age", "description": "Age of the patient in years", "type": "integer"}


async def test_invalid_answer_is_reasked_with_the_validation_error(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid, _ = await _project_with_docs(
        app, client, {"p.txt": "The patient is 42 years old."}, [AGE]
    )
    fake_llm.script(
        variable="age",
        reply={"found": True, "evidence": "42 years old", "value": 42, "confidence": 0.8},
    )
    fake_llm.script(
        variable="age",
        reply={"found": True, "evidence": "42 years", "value": "forty-two", "confidence": 0.8},
        times=1,
    )
    run = await wait_for_run(client, headers, pid, (await _start(client, headers, pid))["id"])
    assert run["status"] == "completed"
    [extraction] = await list_extractions(client, headers, pid)
    assert extraction["value"] == 42 and extraction["attempts"] == 2
    assert extraction["grounded"] is True
    # The second request carried the model's bad answer and the validation error.
    second = fake_llm.requests[-1]
    assert (
        second.messages[-2]["role"] == "assistant" and "forty-two" in second.messages[-2]["content"]
    )
    assert "whole number" in second.messages[-1]["content"].lower()
    assert any("re-asked" in line for line in await _logs(client, headers, pid, run["id"]))


async def test_the_log_counts_only_the_re_asks_that_were_made(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid, _ = await _project_with_docs(
        app, client, {"p.txt": "The patient is forty-two years old."}, [AGE]
    )
    # Never a whole number: asked once, re-asked twice, then it fails (no third re-ask).
    fake_llm.script(
        variable="age",
        reply={"found": True, "evidence": "forty-two", "value": "forty-two", "confidence": 0.8},
    )
    run = await wait_for_run(client, headers, pid, (await _start(client, headers, pid))["id"])
    [extraction] = await list_extractions(client, headers, pid)
    assert extraction["status"] == "failed" and extraction["attempts"] == 3
    assert fake_llm.calls() == 3
    lines = await _logs(client, headers, pid, run["id"])
    reasked = [line for line in lines if "re-asked" in line]
    assert len(reasked) == 2, lines
    assert any("No valid answer after 3 attempts" in line for line in lines), lines


async def test_the_log_counts_one_of_a_thing_in_the_singular(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    settings = make_settings(tmp_path, fake_llm, llm_repair_attempts=0)
    async with running_app(settings) as (app, client):
        headers, pid, _ = await _project_with_docs(
            app, client, {"p.txt": "The patient is forty-two years old."}, [AGE]
        )
        fake_llm.script(variable="age", reply={"found": True, "value": "forty-two"})
        run = await wait_for_run(client, headers, pid, (await _start(client, headers, pid))["id"])
        retry = await client.post(f"/api/v1/projects/{pid}/runs/{run['id']}/retry", headers=headers)
        assert retry.status_code == 202, retry.text
        await wait_for_run(client, headers, pid, run["id"])
        lines = await _logs(client, headers, pid, run["id"])
    assert "Run created: 1 document × 1 variable = 1 extraction with fake-model." in lines
    assert any("No valid answer after 1 attempt: " in line for line in lines), lines
    assert "Retrying 1 extraction." in lines


async def test_flaky_server_is_retried_and_every_pair_succeeds(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    texts = {f"d{i}.txt": f"Document {i}: the patient is {30 + i} years old." for i in range(4)}
    headers, pid, _ = await _project_with_docs(app, client, texts, [AGE])
    for i in range(4):
        fake_llm.script(
            variable="age",
            contains=f"Document {i}:",
            reply={
                "found": True,
                "evidence": f"{30 + i} years old",
                "value": 30 + i,
                "confidence": 0.9,
            },
        )
    fake_llm.retry_after = "0"
    fake_llm.inject("429")
    fake_llm.inject("500")
    fake_llm.inject("malformed")
    run = await wait_for_run(client, headers, pid, (await _start(client, headers, pid))["id"])
    assert run["status"] == "completed" and run["counts"]["succeeded"] == 4
    values = sorted(e["value"] for e in await list_extractions(client, headers, pid))
    assert values == [30, 31, 32, 33]
    assert fake_llm.calls(status=429) == 1 and fake_llm.calls(status=500) == 1


async def test_permanent_failure_has_a_reason_and_retry_reruns_only_it(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    texts = {
        "good.txt": "GOOD: the patient is 50 years old.",
        "bad.txt": "BAD: the patient is 60 years old.",
    }
    headers, pid, _ = await _project_with_docs(app, client, texts, [AGE])
    fake_llm.script(
        variable="age",
        contains="GOOD:",
        reply={"found": True, "evidence": "50 years old", "value": 50, "confidence": 0.9},
    )
    fake_llm.script(variable="age", contains="BAD:", reply="I think the answer is sixty")
    run = await wait_for_run(client, headers, pid, (await _start(client, headers, pid))["id"])
    assert run["status"] == "completed_with_errors"
    assert run["counts"] == {
        "pending": 0,
        "running": 0,
        "succeeded": 1,
        "not_found": 0,
        "failed": 1,
        "cancelled": 0,
    }
    [failed] = await list_extractions(client, headers, pid, status="failed")
    assert "not valid JSON" in failed["error"] and failed["attempts"] == 3
    assert any(
        "bad.txt" in line and "not valid JSON" in line
        for line in await _logs(client, headers, pid, run["id"])
    )

    calls_before = fake_llm.calls()
    fake_llm.script(
        variable="age",
        contains="BAD:",
        reply={"found": True, "evidence": "60 years old", "value": 60, "confidence": 0.9},
    )
    response = await client.post(f"/api/v1/projects/{pid}/runs/{run['id']}/retry", headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, run["id"])
    assert run["status"] == "completed" and run["counts"]["succeeded"] == 2
    assert fake_llm.calls() == calls_before + 1  # only the failed pair was asked again
    assert all("BAD:" in r.text for r in fake_llm.requests[calls_before:])
    again = await client.post(f"/api/v1/projects/{pid}/runs/{run['id']}/retry", headers=headers)
    assert again.status_code == 409 and again.json()["error"] == "conflict"


async def test_cancel_stops_new_calls(tmp_path: Path, fake_llm: FakeLLM) -> None:
    settings = make_settings(tmp_path, fake_llm, llm_concurrency=2)
    async with running_app(settings) as (app, client):
        texts = {f"d{i}.txt": f"Document {i} text." for i in range(20)}
        headers, pid, _ = await _project_with_docs(app, client, texts, [AGE])
        fake_llm.latency = 0.3
        run = await _start(client, headers, pid)
        deadline = time.monotonic() + 30  # hang guards, not timings
        while not fake_llm.requests:
            assert time.monotonic() < deadline, "no call was ever made"
            await asyncio.sleep(0.01)
        response = await client.post(
            f"/api/v1/projects/{pid}/runs/{run['id']}/cancel", headers=headers
        )
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        url = f"/api/v1/projects/{pid}/runs/{run['id']}"
        while (await client.get(url, headers=headers)).json()["counts"]["running"]:
            assert time.monotonic() < deadline, "the calls in flight never ended"
            await asyncio.sleep(0.02)
        calls = len(fake_llm.requests)
        await asyncio.sleep(1.0)
        assert len(fake_llm.requests) == calls  # nothing new started
        run = (await client.get(f"/api/v1/projects/{pid}/runs/{run['id']}", headers=headers)).json()
        assert run["status"] == "cancelled"
        assert run["counts"]["cancelled"] >= 14 and run["counts"]["pending"] == 0
        assert calls <= 6
        again = await client.post(
            f"/api/v1/projects/{pid}/runs/{run['id']}/cancel", headers=headers
        )
        assert again.status_code == 409


async def test_timeout_fails_the_pair_with_a_readable_reason(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    settings = make_settings(tmp_path, fake_llm, llm_timeout_seconds=0.5, llm_max_retries=0)
    async with running_app(settings) as (app, client):
        headers, pid, _ = await _project_with_docs(app, client, {"a.txt": "Some text."}, [AGE])
        fake_llm.inject("timeout")
        run = await wait_for_run(client, headers, pid, (await _start(client, headers, pid))["id"])
        assert run["status"] == "failed"
        [extraction] = await list_extractions(client, headers, pid)
        assert extraction["error"] == "The LLM call timed out after 0.5 s."


async def test_without_an_llm_the_app_starts_and_runs_are_refused_clearly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, None)
    async with running_app(settings) as (app, client):
        assert (await client.get("/health/ready")).status_code == 200
        headers, pid, _ = await _project_with_docs(app, client, {"a.txt": "Some text."}, [AGE])
        response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "llm_not_configured"
        assert "OPENAI_API_KEY" in body["detail"] and "OPENAI_BASE_URL" in body["detail"]
        runs = (await client.get(f"/api/v1/projects/{pid}/runs", headers=headers)).json()
        assert runs["total"] == 0


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"document_ids": ["00000000-0000-0000-0000-000000000000"]}, 404, "No such document"),
        ({"variable_ids": ["00000000-0000-0000-0000-000000000000"]}, 404, "No such variable"),
        ({"document_ids": "not-a-list"}, 422, "document_ids"),
    ],
)
async def test_bad_run_requests(
    app: FastAPI, client: httpx.AsyncClient, body: dict[str, Any], status: int, needle: str
) -> None:
    headers, pid, _ = await _project_with_docs(app, client, {"a.txt": "Some text."}, [AGE])
    response = await client.post(f"/api/v1/projects/{pid}/runs", json=body, headers=headers)
    assert response.status_code == status and needle in response.json()["detail"]


async def test_run_without_documents_or_variables_is_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, "empty@example.org")
    pid = (await create_project(client, headers))["id"]
    response = await client.post(f"/api/v1/projects/{pid}/runs", headers=headers)
    assert response.status_code == 400 and "no ready documents" in response.json()["detail"]


async def test_selected_pairs_progress_events_and_review_in_export(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    texts = {
        "a.txt": "ALPHA: aged 70 years, weight 80 kg.",
        "b.txt": "BETA: aged 20 years, weight 60 kg.",
    }
    weight = {"name": "weight", "description": "Body weight", "type": "number", "unit": "kg"}
    headers, pid, docs = await _project_with_docs(app, client, texts, [AGE, weight])
    alpha = next(d for d in docs if d["filename"] == "a.txt")
    fake_llm.script(
        variable="age",
        contains="ALPHA",
        reply={"found": True, "evidence": "aged 70 years", "value": 70, "confidence": 0.9},
    )
    variables = (await client.get(f"/api/v1/projects/{pid}/variables", headers=headers)).json()[
        "items"
    ]
    age_id = next(v["id"] for v in variables if v["name"] == "age")
    run = await _start(client, headers, pid, document_ids=[alpha["id"]], variable_ids=[age_id])
    assert run["total"] == 1

    # Server-sent events: progress until the end.
    async with client.stream(
        "GET", f"/api/v1/projects/{pid}/runs/{run['id']}/events", headers=headers
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        body = ""
        async for chunk in stream.aiter_text():
            body += chunk
    assert "event: progress" in body and "event: end" in body
    last_progress = [line for line in body.splitlines() if line.startswith('data: {"id"')][-1]
    assert json.loads(last_progress[6:])["progress"] == 1.0

    # A reviewer corrects the value; the export uses the correction.
    response = await client.put(
        f"/api/v1/projects/{pid}/reviews/{alpha['id']}/{age_id}",
        json={"status": "corrected", "value": "71"},
        headers=headers,
    )
    assert response.status_code == 200 and response.json()["value"] == 71
    bad = await client.put(
        f"/api/v1/projects/{pid}/reviews/{alpha['id']}/{age_id}",
        json={"status": "corrected", "value": "old"},
        headers=headers,
    )
    assert bad.status_code == 400 and "whole number" in bad.json()["detail"]
    # A correction that names no value is refused, not stored as "not stated"; an explicit
    # null is the reviewer saying the document does not state it.
    empty = await client.put(
        f"/api/v1/projects/{pid}/reviews/{alpha['id']}/{age_id}",
        json={"status": "corrected"},
        headers=headers,
    )
    assert empty.status_code == 400 and "needs its value" in empty.json()["detail"]
    history = await client.get(
        f"/api/v1/projects/{pid}/reviews/{alpha['id']}/{age_id}", headers=headers
    )
    assert [r["value"] for r in history.json()] == [71]
    csv_text = (await client.get(f"/api/v1/projects/{pid}/export", headers=headers)).content.decode(
        "utf-8-sig"
    )
    assert "a.txt,71," in csv_text.replace("\r\n", "\n")


async def test_a_failed_cell_cannot_be_accepted_only_corrected(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers, pid, docs = await _project_with_docs(app, client, {"a.txt": "Unreadable."}, [AGE])
    fake_llm.script(variable="age", reply="not json at all")
    run = await wait_for_run(client, headers, pid, (await _start(client, headers, pid))["id"])
    assert run["status"] == "failed"
    # The run's page says why, once per reason, and what to do about it.
    shown = (await client.get(f"/api/v1/projects/{pid}/runs/{run['id']}", headers=headers)).json()
    assert [f["count"] for f in shown["failures"]] == [1], shown["failures"]
    assert "did not fit the variable" in shown["failures"][0]["next_step"]
    assert shown["budget_reached"] is False
    variable_id = (await client.get(f"/api/v1/projects/{pid}/variables", headers=headers)).json()[
        "items"
    ][0]["id"]
    cell = f"/api/v1/projects/{pid}/reviews/{docs[0]['id']}/{variable_id}"
    accepted = await client.put(cell, json={"status": "accepted"}, headers=headers)
    assert accepted.status_code == 400 and "correct it" in accepted.json()["detail"]
    corrected = await client.put(cell, json={"status": "corrected", "value": 33}, headers=headers)
    assert corrected.status_code == 200
    history = (await client.get(cell, headers=headers)).json()
    assert [r["status"] for r in history] == ["corrected"]


async def test_a_run_whose_llm_failed_says_why_once_with_the_count(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    """Issue 15: 55 of 80 failed showed the same line 55 times and no summary."""
    docs = {f"{n}.txt": f"Patient {n}, aged {n} years." for n in range(1, 5)}
    headers, pid, _ = await _project_with_docs(app, client, docs, [AGE])
    fake_llm.inject("500", times=1000)
    run = await wait_for_run(client, headers, pid, (await _start(client, headers, pid))["id"])
    assert run["status"] == "failed" and run["counts"]["failed"] == 4

    shown = (await client.get(f"/api/v1/projects/{pid}/runs/{run['id']}", headers=headers)).json()
    [failure] = shown["failures"]
    assert failure["count"] == 4 and "HTTP 500" in failure["reason"]
    assert "running and healthy" in failure["next_step"]
    listed = (await client.get(f"/api/v1/projects/{pid}/runs", headers=headers)).json()
    assert listed["items"][0]["failures"] is None  # one run's page only
