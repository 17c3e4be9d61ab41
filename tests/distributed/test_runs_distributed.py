"""The API journey in distributed mode: PostgreSQL, Redis, the API in-process and a real
`quarry worker` process doing every job (parsing and extraction) — and retrying a failed pair
re-runs only it."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from tests.distributed.conftest import Workers
from tests.support.api import (
    add_variable,
    create_project,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM

from quarry.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

Headers = dict[str, str]

CODEBOOK: list[dict[str, Any]] = [
    {"name": "sample_size", "description": "Participants randomised", "type": "integer"},
    {
        "name": "design",
        "description": "Study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort", "Case-control"],
    },
    {"name": "start_date", "description": "When recruitment started", "type": "date"},
]
DOCUMENTS = {
    "alpha.txt": "ALPHA: an RCT. 120 patients were randomised. Recruitment began in March 2020.",
    "beta.txt": "BETA: a cohort study of 87 participants, recruited from 12 May 2019.",
}
ANSWERS: dict[str, dict[str, tuple[Any, str]]] = {
    "ALPHA": {
        "sample_size": (120, "120 patients were randomised"),
        "design": ("rct", "an RCT"),
        "start_date": ("March 2020", "Recruitment began in March 2020"),
    },
    "BETA": {
        "sample_size": ("87", "87 participants"),
        "design": ("Cohort", "a cohort study"),
        "start_date": ("12 May 2019", "recruited from 12 May 2019"),
    },
}
EXPECTED_CSV = {
    "alpha.txt": {"sample_size": "120", "design": "RCT", "start_date": "2020-03"},
    "beta.txt": {"sample_size": "87", "design": "Cohort", "start_date": "2019-05-12"},
}


async def _queued_payloads(settings: Settings) -> dict[str, Any]:
    """The jobs waiting in the test's queue: job id → the decoded job (JSON, not pickle)."""
    assert settings.redis_url
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        ids = [i.decode() for i in await client.zrange(settings.redis_queue, 0, -1)]
        jobs = {i: await client.get(f"arq:job:{i}") for i in ids}
        # A job a worker took between the two reads has no payload any more: not waiting.
        return {i: json.loads(job) for i, job in jobs.items() if job is not None}
    finally:
        await client.aclose()


async def _start_run(client: httpx.AsyncClient, headers: Headers, pid: str) -> str:
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_journey_with_a_worker_process(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    fake_llm: FakeLLM,
    workers: Workers,
) -> None:
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}

    headers = await sign_up(app, client, "researcher@example.org")
    pid = (await create_project(client, headers, "Distributed review"))["id"]
    for spec in CODEBOOK:
        await add_variable(client, headers, pid, **spec)
    files = [(name, text.encode(), "text/plain") for name, text in DOCUMENTS.items()]
    assert (await upload(client, headers, pid, files)).status_code == 201

    # The API only enqueues: with no worker running nothing is parsed, and what waits in
    # Redis is one wake-up ("documents are waiting") under a deterministic id, as JSON — the
    # database is the work list.
    await asyncio.sleep(0.3)
    listed = (await client.get(f"/api/v1/projects/{pid}/documents", headers=headers)).json()
    assert {d["status"] for d in listed["items"]} == {"uploaded"}
    payloads = await _queued_payloads(settings)
    assert payloads == {
        "documents.parse:waiting": {
            "t": None,
            "f": "documents.parse",
            "a": ["waiting"],
            "k": {},
            "et": payloads["documents.parse:waiting"]["et"],
        }
    }

    await workers.start_ready()
    documents = await wait_for_documents(client, headers, pid, timeout=30)
    assert {d["filename"]: d["status"] for d in documents} == dict.fromkeys(DOCUMENTS, "ready")

    for marker, answers in ANSWERS.items():
        for variable, (value, evidence) in answers.items():
            fake_llm.script(
                variable=variable,
                contains=marker,
                reply={"found": True, "evidence": evidence, "value": value, "confidence": 0.9},
            )
    run = await wait_for_run(client, headers, pid, await _start_run(client, headers, pid), 30)
    assert run["status"] == "completed", run
    assert run["counts"]["succeeded"] == 6 and run["tokens_in"] > 0
    assert fake_llm.calls() == 6

    response = await client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "csv"}, headers=headers
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert {r["filename"]: {k: r[k] for k in EXPECTED_CSV["alpha.txt"]} for r in rows} == (
        EXPECTED_CSV
    )
    assert await _queued_payloads(settings) == {}  # finished jobs leave nothing behind


async def test_retry_reruns_only_the_failed_pair(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM, workers: Workers
) -> None:
    await workers.start_ready()
    headers = await sign_up(app, client, "retry@example.org")
    pid = (await create_project(client, headers))["id"]
    await add_variable(client, headers, pid, name="age", description="Age in years", type="integer")
    texts = {"good.txt": "GOOD: the patient is 50 years old.", "bad.txt": "BAD: aged 60 years."}
    files = [(name, text.encode(), "text/plain") for name, text in texts.items()]
    assert (await upload(client, headers, pid, files)).status_code == 201
    await wait_for_documents(client, headers, pid, timeout=30)

    fake_llm.script(
        variable="age",
        contains="GOOD:",
        reply={"found": True, "evidence": "50 years old", "value": 50, "confidence": 0.9},
    )
    fake_llm.script(variable="age", contains="BAD:", reply="I think the answer is sixty")
    run_id = await _start_run(client, headers, pid)
    run = await wait_for_run(client, headers, pid, run_id, 30)
    assert run["status"] == "completed_with_errors"
    assert run["counts"]["succeeded"] == 1 and run["counts"]["failed"] == 1

    calls_before = fake_llm.calls()
    fake_llm.script(
        variable="age",
        contains="BAD:",
        reply={"found": True, "evidence": "aged 60 years", "value": 60, "confidence": 0.9},
    )
    response = await client.post(f"/api/v1/projects/{pid}/runs/{run_id}/retry", headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, run_id, 30)
    assert run["status"] == "completed" and run["counts"]["succeeded"] == 2
    assert fake_llm.calls() == calls_before + 1  # only the failed pair was asked again
    assert "BAD:" in fake_llm.requests[-1].text
    extractions = (await client.get(f"/api/v1/projects/{pid}/extractions", headers=headers)).json()[
        "items"
    ]
    assert sorted(e["value"] for e in extractions) == [50, 60]


async def test_a_run_queues_one_wake_up_and_a_cancel_leaves_nothing_to_do(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    fake_llm: FakeLLM,
    workers: Workers,
) -> None:
    worker = await workers.start_ready()
    headers = await sign_up(app, client, "big@example.org")
    pid = (await create_project(client, headers))["id"]
    for n in range(10):
        await add_variable(
            client, headers, pid, name=f"v{n}", description=f"Value {n}", type="text"
        )
    files = [(f"d{n}.txt", f"Document {n}.".encode(), "text/plain") for n in range(20)]
    assert (await upload(client, headers, pid, files)).status_code == 201
    await wait_for_documents(client, headers, pid, timeout=30)
    assert worker.stop() == 0  # SIGTERM: a clean exit

    # 200 pairs, and what waits in Redis is one wake-up for the run, not a job per pair.
    run_id = await _start_run(client, headers, pid)
    assert set(await _queued_payloads(settings)) == {f"runs.work:{run_id}"}
    cancel = await client.post(f"/api/v1/projects/{pid}/runs/{run_id}/cancel", headers=headers)
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    assert cancel.json()["counts"]["cancelled"] == 200

    # A worker that takes the wake-up finds nothing to claim: no call is made.
    await workers.start_ready()
    for _ in range(200):  # until the wake-up was taken (a hang guard of 10 s)
        if not await _queued_payloads(settings):
            break
        await asyncio.sleep(0.05)
    assert await _queued_payloads(settings) == {}
    assert fake_llm.calls(status=None) == 0
