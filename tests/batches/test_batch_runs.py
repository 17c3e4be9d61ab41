"""Batch mode as a user meets it: a profile with `batch: true` submits a run's calls as a
provider batch (the fake's files and batches endpoints), the run shows the batch's progress,
and its values are those a live run gives, at the batch price."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarry.settings import Settings
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
from tests.support.fake_llm import FakeLLM, FakeRequest, answer_each

API = "/api/v1"
Headers = dict[str, str]
PRICE = {"price_input": 1.0, "price_output": 2.0}
DOCUMENTS = {
    "a.txt": "Site report. The trial ran in Lyon. It enrolled 120 patients.",
    "b.txt": "Site report. The trial ran in Porto. It enrolled 64 patients.",
    "c.txt": "Site report. The trial ran in Graz. It enrolled 31 patients.",
}


def answer(name: str, text: str) -> dict[str, Any]:
    """What the fake model answers about `name` in a document's `text` (its own words)."""
    city = next(c for c in ("Lyon", "Porto", "Graz") if c in text)
    count = next(n for n in ("120", "64", "31") if n in text)
    if name == "site":
        return {"found": True, "evidence": f"The trial ran in {city}.", "value": city}
    return {"found": True, "evidence": f"It enrolled {count} patients.", "value": int(count)}


def model_reply(request: FakeRequest) -> Any:
    return answer_each(lambda name: answer(name, request.text))(request)


def batch_settings(tmp_path: Path, fake: FakeLLM, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "batch_poll_min_seconds": 0.05,
        "batch_poll_max_seconds": 0.2,
        "sweep_interval_seconds": 0.5,
    }
    values.update(overrides)
    return make_settings(tmp_path, fake, **values)


@pytest.fixture
async def served(
    tmp_path: Path, fake_llm: FakeLLM
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, FakeLLM]]:
    fake_llm.default_reply = model_reply
    async with running_app(batch_settings(tmp_path, fake_llm)) as (app, client):
        yield app, client, fake_llm


async def project(
    app: FastAPI, client: httpx.AsyncClient, fake: FakeLLM, email: str, **profile: Any
) -> tuple[Headers, str]:
    headers = await sign_up(app, client, email)
    pid = (await create_project(client, headers))["id"]
    await add_variable(client, headers, pid, name="site", description="The city", type="text")
    await add_variable(
        client, headers, pid, name="enrolled", description="Patients enrolled", type="integer"
    )
    files = [(name, text.encode(), "text/plain") for name, text in DOCUMENTS.items()]
    assert (await upload(client, headers, pid, files)).status_code == 201
    await wait_for_documents(client, headers, pid)
    for name, batch in (("live", False), ("batch", True)):
        response = await client.post(
            f"{API}/projects/{pid}/profiles",
            json={
                "name": name,
                "model": "gpt-4o-mini",
                "base_url": fake.base_url,
                "batch": batch,
                **PRICE,
                **profile,
            },
            headers=headers,
        )
        assert response.status_code == 201, response.text
    return headers, pid


async def start(client: httpx.AsyncClient, headers: Headers, pid: str, **body: Any) -> str:
    response = await client.post(f"{API}/projects/{pid}/runs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def values(client: httpx.AsyncClient, headers: Headers, pid: str, run_id: str) -> Any:
    rows = await list_extractions(client, headers, pid, run_id=run_id)
    return sorted(
        (r["document_id"], r["variable_name"], r["status"], r["value"], r["evidence"],
         r["grounded"], r["support"])
        for r in rows
    )  # fmt: skip


async def wait_until(
    client: httpx.AsyncClient, headers: Headers, pid: str, run_id: str, check: Any
) -> dict[str, Any]:
    """Poll the run until `check(run)` holds (a hang guard, not a timing)."""
    deadline = time.monotonic() + 60
    while True:
        run = (await client.get(f"{API}/projects/{pid}/runs/{run_id}", headers=headers)).json()
        if check(run):
            return run  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"the run never got there: {run}"
        await asyncio.sleep(0.02)


async def test_a_batch_run_gives_the_live_values_at_the_batch_price(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    headers, pid = await project(app, client, fake, "batch@example.org")
    live_id = await start(client, headers, pid, profile="live")
    live = await wait_for_run(client, headers, pid, live_id)
    assert live["status"] == "completed" and live["batch"] is None
    live_calls = fake.calls()

    batch_id = await start(client, headers, pid, profile="batch", force_fresh=True)
    run = await wait_for_run(client, headers, pid, batch_id)

    assert run["status"] == "completed", run
    assert await values(client, headers, pid, batch_id) == await values(
        client, headers, pid, live_id
    )
    assert fake.calls() == live_calls  # no live call: all six answers came in the batch
    assert fake.batch_api.creations == 1 and len(fake.batch_api.lines) == 6
    assert run["batch"] == {
        "batches": 1,
        "open": 0,
        "status": "completed",
        "requests": 6,
        "answered": 6,
        "failed": 0,
        "discount": 0.5,
    }
    # The same requests, so the same tokens; billed at half the price.
    assert (run["tokens_in"], run["tokens_out"]) == (live["tokens_in"], live["tokens_out"])
    full = (run["tokens_in"] * 1.0 + run["tokens_out"] * 2.0) / 1_000_000
    assert run["cost_usd"] == pytest.approx(full / 2) and live["cost_usd"] == pytest.approx(full)
    logs = (await client.get(f"{API}/projects/{pid}/runs/{batch_id}/logs", headers=headers)).json()
    events = [line["event"] for line in logs["items"]]
    assert "run.batch_submitted" in events and "run.batch_ingested" in events
