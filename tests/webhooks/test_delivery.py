"""Deliveries as a receiver sees them, on SQLite and PostgreSQL: one signed request per event
with ids and counts, retried until the receiver takes it, given up after the retry window,
sent again on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarry.settings import Settings
from quarry.webhooks import signing
from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_project,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.documents import make_pdf
from tests.support.fake_llm import FakeLLM
from tests.support.webhook_receiver import WebhookReceiver
from tests.webhooks.conftest import FAST_WEBHOOKS

Headers = dict[str, str]
SECRET = "test-signing-secret-0123456789"
SECRET_TEXT = "The patient, Jane Q. Example, is 42 years old."
#: A hang guard only.
DEADLINE = 60


@pytest.fixture
def settings(tmp_path: Path, fake_llm: FakeLLM, both_backends: str) -> Settings:
    return make_settings(tmp_path, fake_llm, database_url=both_backends, **FAST_WEBHOOKS)


async def _project(
    app: FastAPI, client: httpx.AsyncClient, receiver: WebhookReceiver, events: list[str]
) -> tuple[Headers, str, dict[str, Any]]:
    headers = await sign_up(app, client, "hooks@example.org")
    pid = (await create_project(client, headers))["id"]
    await add_variable(client, headers, pid, name="age", description="Age in years", type="integer")
    response = await client.post(
        f"/api/v1/projects/{pid}/webhooks",
        json={"url": receiver.url, "events": events, "secret": SECRET},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return headers, pid, response.json()


async def _run(
    client: httpx.AsyncClient, headers: Headers, pid: str, **body: Any
) -> dict[str, Any]:
    files = [("patient.txt", SECRET_TEXT.encode(), "text/plain")]
    if not (await client.get(f"/api/v1/projects/{pid}/documents", headers=headers)).json()["total"]:
        assert (await upload(client, headers, pid, files)).status_code == 201
        await wait_for_documents(client, headers, pid)
    response = await client.post(f"/api/v1/projects/{pid}/runs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return await wait_for_run(client, headers, pid, response.json()["id"])


async def _deliveries(
    client: httpx.AsyncClient, headers: Headers, pid: str, hid: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/api/v1/projects/{pid}/webhooks/{hid}/deliveries", headers=headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_finished_run_is_delivered_once_signed_with_counts_and_no_text(
    app: FastAPI, client: httpx.AsyncClient, receiver: WebhookReceiver, fake_llm: FakeLLM
) -> None:
    headers, pid, hook = await _project(app, client, receiver, ["run.finished"])
    fake_llm.script(
        variable="age",
        reply={"found": True, "evidence": "42 years old", "value": 42, "confidence": 0.9},
    )
    run = await _run(client, headers, pid)
    assert run["status"] == "completed"

    [request] = await receiver.arrived(1, DEADLINE)
    assert request.event == "run.finished" and request.path == "/hooks/quarry"
    assert signing.verify(SECRET, request.headers["quarry-signature"], request.body)
    assert not signing.verify(
        "another-secret-entirely", request.headers["quarry-signature"], request.body
    )
    assert not signing.verify(SECRET, request.headers["quarry-signature"], request.body + b" ")
    body = request.json
    assert body["event"] == "run.finished" and body["project_id"] == pid
    assert body["data"]["run"]["id"] == run["id"]
    assert body["data"]["run"]["status"] == "completed"
    sent = body["data"]["run"]
    assert sent["total"] == 1 and sent["succeeded"] == run["counts"]["succeeded"] == 1
    assert "42 years" not in request.body.decode() and "Jane" not in request.body.decode()

    [delivery] = await _deliveries(client, headers, pid, hook["id"])
    assert delivery["id"] == request.headers["quarry-delivery"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    assert delivery["response_status"] == 200 and delivery["payload"] == body
    # A second run is a second event: one more delivery, never a repeat of the first.
    second = await _run(client, headers, pid)
    got = await receiver.arrived(2, DEADLINE)
    assert [r.json["data"]["run"]["id"] for r in got] == [run["id"], second["id"]]
    assert len(receiver.received) == 2


async def test_a_receiver_that_answers_500_three_times_gets_it_on_the_fourth_try(
    app: FastAPI, client: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    headers, pid, hook = await _project(app, client, receiver, ["run.finished"])
    receiver.answer(500, 500, 500)
    run = await _run(client, headers, pid)

    [delivered] = await receiver.arrived(1, DEADLINE)
    assert [r.status for r in receiver.received] == [500, 500, 500, 200]
    assert len({r.headers["quarry-delivery"] for r in receiver.received}) == 1
    assert len({r.body for r in receiver.received}) == 1  # the same event each time
    assert delivered.json["data"]["run"]["id"] == run["id"]
    assert signing.verify(SECRET, delivered.headers["quarry-signature"], delivered.body)
    [delivery] = await _deliveries(client, headers, pid, hook["id"])
    assert delivery["status"] == "delivered" and delivery["attempts"] == 4
    assert delivery["error"] is None


async def test_a_delivery_is_given_up_after_the_retry_window_and_can_be_sent_again(
    tmp_path: Path, fake_llm: FakeLLM, both_backends: str, receiver: WebhookReceiver
) -> None:
    settings = make_settings(
        tmp_path,
        fake_llm,
        database_url=both_backends,
        **{**FAST_WEBHOOKS, "webhook_retry_seconds": 0.3},
    )
    async with running_app(settings) as (app, client):
        headers, pid, hook = await _project(app, client, receiver, ["run.finished"])
        receiver.answer(*[503] * 1000)  # down for good
        await _run(client, headers, pid)
        base = f"/api/v1/projects/{pid}/webhooks/{hook['id']}/deliveries"
        while True:
            [delivery] = await _deliveries(client, headers, pid, hook["id"])
            if delivery["status"] != "pending":
                break
            assert len(receiver.received) < 1000
        # How many attempts fit in the window depends on the machine's speed; at least one.
        assert delivery["status"] == "failed" and delivery["attempts"] >= 1
        assert delivery["response_status"] == 503
        assert delivery["error"] == "The receiver answered 503."
        attempts = len(receiver.received)
        assert attempts == delivery["attempts"]

        receiver.answer()  # it is back: the rest of the scripted 503s are dropped
        with receiver._lock:
            receiver._answers.clear()
        again = await client.post(f"{base}/{delivery['id']}/redeliver", headers=headers)
        assert again.status_code == 202, again.text
        assert again.json()["status"] == "pending"
        [request] = await receiver.arrived(1, DEADLINE)
        assert request.headers["quarry-delivery"] == delivery["id"]
        assert signing.verify(SECRET, request.headers["quarry-signature"], request.body)
        [done] = await _deliveries(client, headers, pid, hook["id"])
        assert done["status"] == "delivered" and done["attempts"] == attempts + 1
        twice = await client.post(f"{base}/{delivery['id']}/redeliver", headers=headers)
        assert twice.status_code == 202  # delivered ones may be sent again too
        assert (await receiver.arrived(2, DEADLINE))[1].headers["quarry-delivery"] == delivery["id"]


async def test_only_subscribed_events_of_enabled_webhooks_are_sent(
    app: FastAPI, client: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    headers, pid, failed_only = await _project(app, client, receiver, ["run.failed"])
    base = f"/api/v1/projects/{pid}/webhooks"
    off = await client.post(
        base,
        json={"url": receiver.url + "?off", "events": ["run.finished"], "enabled": False},
        headers=headers,
    )
    on = await client.post(
        base, json={"url": receiver.url + "?on", "events": ["run.finished"]}, headers=headers
    )
    assert off.status_code == on.status_code == 201
    await _run(client, headers, pid)
    [request] = await receiver.arrived(1, DEADLINE)
    assert request.path.endswith("?on")
    assert await _deliveries(client, headers, pid, failed_only["id"]) == []
    # A disabled webhook is not told: nothing waits for it either.
    assert await _deliveries(client, headers, pid, off.json()["id"]) == []
    await client.patch(f"{base}/{off.json()['id']}", json={"enabled": True}, headers=headers)
    await _run(client, headers, pid)
    got = await receiver.arrived(3, DEADLINE)
    assert sorted(r.path[-3:] for r in got) == ["?on", "?on", "off"]


async def test_a_run_whose_every_pair_fails_sends_run_failed(
    app: FastAPI, client: httpx.AsyncClient, receiver: WebhookReceiver, fake_llm: FakeLLM
) -> None:
    headers, pid, _ = await _project(app, client, receiver, ["run.failed", "run.finished"])
    fake_llm.inject("400", times=100)
    run = await _run(client, headers, pid)
    assert run["status"] == "failed"
    [request] = await receiver.arrived(1, DEADLINE)
    assert request.event == "run.failed"
    assert request.json["data"]["run"]["failed"] == 1


async def test_a_document_that_cannot_be_parsed_sends_document_failed(
    app: FastAPI, client: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    headers, pid, _ = await _project(app, client, receiver, ["document.failed"])
    broken = make_pdf(["A page about aspirin."])[:200]
    response = await upload(client, headers, pid, [("broken.pdf", broken, "application/pdf")])
    assert response.status_code == 201
    [document] = await wait_for_documents(client, headers, pid)
    assert document["status"] == "failed"
    [request] = await receiver.arrived(1, DEADLINE)
    assert request.event == "document.failed"
    assert request.json["data"]["document"] == {
        "id": document["id"],
        "filename": "broken.pdf",
        "reason": document["error"],
    }
    assert signing.verify(SECRET, request.headers["quarry-signature"], request.body)


async def test_a_budget_stop_sends_budget_reached_then_finished(
    tmp_path: Path, fake_llm: FakeLLM, both_backends: str, receiver: WebhookReceiver
) -> None:
    prices = {"fake-model": {"input": 1000.0, "output": 4000.0}}
    settings = make_settings(
        tmp_path, fake_llm, database_url=both_backends, llm_prices=prices, **FAST_WEBHOOKS
    )
    async with running_app(settings) as (app, client):
        events = ["run.budget_reached", "run.finished"]
        headers, pid, _ = await _project(app, client, receiver, events)
        run = await _run(client, headers, pid, budget_usd=0.000001)
        assert run["status"] == "completed_with_errors"
        arrived = await receiver.arrived(2, DEADLINE)
        # Deliveries go out side by side, so they may arrive in either order; the events'
        # own times say which came first (README: order by `created_at`).
        assert sorted(r.event for r in arrived) == sorted(events)
        got = sorted(arrived, key=lambda r: events.index(r.event))
        assert got[0].json["created_at"] <= got[1].json["created_at"]
        assert {r.json["data"]["run"]["id"] for r in got} == {run["id"]}
        assert json.loads(got[1].body)["data"]["run"]["cancelled"] == 1
