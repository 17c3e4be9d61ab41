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

from quarry.app import create_app
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
from tests.support.postgres import temporary_postgres_database

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
    await same_values_at_half_price(*served)


async def test_a_batch_run_on_postgresql(tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.default_reply = model_reply
    with temporary_postgres_database("quarry_batches") as database_url:
        settings = batch_settings(tmp_path, fake_llm, database_url=database_url)
        async with running_app(settings) as (app, client):
            await same_values_at_half_price(app, client, fake_llm)


async def same_values_at_half_price(app: FastAPI, client: httpx.AsyncClient, fake: FakeLLM) -> None:
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


async def logged(client: httpx.AsyncClient, headers: Headers, pid: str, run_id: str) -> list[Any]:
    response = await client.get(
        f"{API}/projects/{pid}/runs/{run_id}/logs", params={"limit": 500}, headers=headers
    )
    return response.json()["items"]  # type: ignore[no-any-return]


async def test_cancelling_a_batch_run_cancels_its_provider_batch(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    fake.batch_api.delay = 3600  # never answered unless cancelled
    headers, pid = await project(app, client, fake, "cancel@example.org")
    run_id = await start(client, headers, pid, profile="batch")
    await wait_until(
        client, headers, pid, run_id, lambda r: (r["batch"] or {}).get("status") == "in_progress"
    )

    response = await client.post(f"{API}/projects/{pid}/runs/{run_id}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    # The run's counters and its batches are two reads, each of its own moment: the poll
    # that first sees the batch closed may still count its tasks as running.
    run = await wait_until(
        client,
        headers,
        pid,
        run_id,
        lambda r: r["batch"]["open"] == 0 and r["counts"]["running"] == 0,
    )

    assert [b["status"] for b in fake.batch_api.batches] == ["cancelled"]
    assert fake.batch_api.cancels == 1 and fake.calls() == 0
    assert run["status"] == "cancelled" and run["batch"]["status"] == "cancelled"
    assert run["counts"]["cancelled"] == 6 and run["counts"]["running"] == 0
    assert run["cost_usd"] == 0
    events = [line["event"] for line in await logged(client, headers, pid, run_id)]
    assert "run.batch_cancelled" in events


async def test_a_restart_mid_batch_resumes_polling_without_resubmitting(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = model_reply
    fake_llm.batch_api.delay = 3600
    settings = batch_settings(tmp_path, fake_llm)
    async with running_app(settings) as (app, client):
        headers, pid = await project(app, client, fake_llm, "restart@example.org")
        run_id = await start(client, headers, pid, profile="batch")
        await wait_until(
            client,
            headers,
            pid,
            run_id,
            lambda r: (r["batch"] or {}).get("status") == "in_progress",
        )
    # The API process stopped (and with it the batch's poller); the provider answers meanwhile.
    fake_llm.batch_api.delay = 0
    again = create_app(settings)
    transport = httpx.ASGITransport(app=again)
    async with (
        again.router.lifespan_context(again),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        run = await wait_for_run(client, headers, pid, run_id)
        rows = await list_extractions(client, headers, pid, run_id=run_id)

    assert run["status"] == "completed", run
    assert fake_llm.batch_api.creations == 1  # polled again, not submitted again
    assert fake_llm.calls() == 0
    assert sorted(r["value"] for r in rows if r["variable_name"] == "site") == [
        "Graz",
        "Lyon",
        "Porto",
    ]


async def test_failed_lines_and_invalid_answers_are_asked_again_live(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    headers, pid = await project(app, client, fake, "lines@example.org")
    fake.inject("500")  # the batch's first line fails at the provider
    # One batch answer about `enrolled` is not an integer: it fails validation.
    fake.script(
        variable="enrolled", reply={"found": True, "evidence": "x", "value": "many"}, times=1
    )
    run_id = await start(client, headers, pid, profile="batch")
    run = await wait_for_run(client, headers, pid, run_id)

    assert run["status"] == "completed", run
    rows = await list_extractions(client, headers, pid, run_id=run_id)
    assert sorted(r["value"] for r in rows if r["variable_name"] == "enrolled") == [31, 64, 120]
    assert fake.batch_api.creations == 1
    assert fake.calls() == 2  # the failed line, and the re-ask, live
    assert run["batch"]["failed"] == 1
    events = [line["event"] for line in await logged(client, headers, pid, run_id)]
    assert "task.batch_line_failed" in events and "task.reasked" in events
    # The live calls are billed at the full price, the batch's at half.
    full = (run["tokens_in"] * 1.0 + run["tokens_out"] * 2.0) / 1_000_000
    assert full / 2 < run["cost_usd"] < full


async def test_expired_batches_resubmit_the_remainder_then_go_live(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    fake.batch_api.expire_after = 2  # every batch expires having answered two requests
    headers, pid = await project(app, client, fake, "expired@example.org")
    run_id = await start(client, headers, pid, profile="batch")
    run = await wait_for_run(client, headers, pid, run_id)

    assert run["status"] == "completed", run
    assert [b["status"] for b in fake.batch_api.batches] == ["expired", "expired"]
    assert [len(b) for b in (fake.batch_api.lines,)] == [4]  # 2 + 2 answered in batches
    assert fake.calls() == 2  # the remainder, live, after the second expiry
    rows = await list_extractions(client, headers, pid, run_id=run_id)
    assert all(r["status"] == "succeeded" for r in rows) and len(rows) == 6
    messages = [line["message"] for line in await logged(client, headers, pid, run_id)]
    assert any("expired before it was fully answered" in m for m in messages)


async def test_a_server_without_a_batch_api_is_asked_live(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    fake.batch_api.refuse = True
    headers, pid = await project(app, client, fake, "refused@example.org")
    run_id = await start(client, headers, pid, profile="batch")
    run = await wait_for_run(client, headers, pid, run_id)

    assert run["status"] == "completed", run
    assert fake.batch_api.creations == 0 and fake.calls() == 6
    assert run["batch"]["status"] == "failed"
    full = (run["tokens_in"] * 1.0 + run["tokens_out"] * 2.0) / 1_000_000
    assert run["cost_usd"] == pytest.approx(full)  # live calls: the full price
    lines = await logged(client, headers, pid, run_id)
    refused = [line for line in lines if line["event"] == "run.batch_refused"]
    assert refused and "HTTP 404" in refused[0]["message"]


async def test_estimates_show_the_batch_discount(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    headers, pid = await project(app, client, fake, "estimate@example.org")
    url = f"{API}/projects/{pid}/runs"
    live = (
        await client.post(url, json={"dry_run": True, "profile": "live"}, headers=headers)
    ).json()
    batch = (
        await client.post(url, json={"dry_run": True, "profile": "batch"}, headers=headers)
    ).json()
    assert live["batch_discount"] is None and batch["batch_discount"] == 0.5
    assert batch["estimated_input_tokens"] == live["estimated_input_tokens"]
    assert batch["estimated_cost_usd"] == pytest.approx(live["estimated_cost_usd"] / 2)


async def test_bad_batch_configurations_are_refused_with_a_reason(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    headers, pid = await project(app, client, fake, "config@example.org")
    profiles = f"{API}/projects/{pid}/profiles"
    other = await client.post(
        profiles,
        json={"name": "claude", "model": "claude-x", "provider": "anthropic", "batch": True},
        headers=headers,
    )
    assert other.status_code == 400 and "OpenAI-compatible" in other.json()["detail"]
    free = await client.post(
        profiles,
        json={"name": "free", "model": "m", "batch": True, "batch_discount": 1},
        headers=headers,
    )
    assert free.status_code == 422
    listed = (await client.get(profiles, headers=headers)).json()["items"]
    batch = next(p for p in listed if p["name"] == "batch")
    assert (batch["batch"], batch["batch_discount"]) == (True, 0.5)
    moved = await client.patch(
        f"{profiles}/{batch['id']}", json={"provider": "google"}, headers=headers
    )
    assert moved.status_code == 400 and "Batch mode" in moved.json()["detail"]
    budget = await client.post(
        f"{API}/projects/{pid}/runs", json={"profile": "batch", "budget_usd": 5}, headers=headers
    )
    assert budget.status_code == 400 and "budget" in budget.json()["detail"]


async def test_a_grouped_batch_run_sends_one_request_per_document(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    headers, pid = await project(app, client, fake, "grouped@example.org")
    patched = await client.patch(f"{API}/projects/{pid}", json={"group_size": 2}, headers=headers)
    assert patched.status_code == 200, patched.text
    live_id = await start(client, headers, pid, profile="live")
    await wait_for_run(client, headers, pid, live_id)
    batch_id = await start(client, headers, pid, profile="batch", force_fresh=True)
    run = await wait_for_run(client, headers, pid, batch_id)

    assert run["status"] == "completed" and run["batch"]["requests"] == 3
    assert all(line.is_group for line in fake.batch_api.lines)
    assert await values(client, headers, pid, batch_id) == await values(
        client, headers, pid, live_id
    )


async def test_a_submission_cut_short_is_completed_by_the_next_poller(
    tmp_path: Path, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies (here: fails) after the provider created the batch and before that
    was recorded: the next poller finds the batch by its marker instead of creating another."""
    from quarry.batches import lifecycle

    record_state = lifecycle.record_state
    calls = 0

    async def dies_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the process died here")
        return await record_state(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "record_state", dies_once)
    fake_llm.default_reply = model_reply
    # A short task lease makes the dead submitter's poll lease expire soon.
    settings = batch_settings(tmp_path, fake_llm, task_lease_seconds=2)
    async with running_app(settings) as (app, client):
        headers, pid = await project(app, client, fake_llm, "resume@example.org")
        run_id = await start(client, headers, pid, profile="batch")
        run = await wait_for_run(client, headers, pid, run_id)

    assert run["status"] == "completed", run
    assert fake_llm.batch_api.creations == 1 and fake_llm.calls() == 0
    assert run["batch"]["batches"] == 1
