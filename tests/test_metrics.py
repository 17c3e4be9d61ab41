"""Prometheus metrics: /metrics on the API, the LLM recording API, and a worker's own server."""

from __future__ import annotations

import socket
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import create_async_engine

import quarry.metrics
from quarry.app import create_app
from quarry.db import create_sessionmaker
from quarry.metrics import (
    MAX_LABEL_VALUES,
    record_llm_call,
    record_llm_retry,
    serve_worker_metrics,
)
from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_project,
    create_schema,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM

API = "/api/v1"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_http_requests_are_counted_by_route_template(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, "ops@example.org")
    route = f"{API}/projects/{{project_id}}"
    before = await scrape(client)
    for _ in range(3):  # three different ids: one series, not three
        await client.get(f"{API}/projects/{uuid.uuid4()}", headers=headers)
    await client.get("/no/such/page")
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("quarry_http_requests_total", method="GET", route=route, status="404") == 3
    assert delta("quarry_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert delta("quarry_http_request_duration_seconds_count", method="GET", route=route) == 3
    # No raw ids anywhere in the labels.
    for _name, labels in after:
        assert not any(len(v) == 36 and v.count("-") == 4 for _k, v in labels)


async def test_run_and_task_counts_come_from_the_database(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers = await sign_up(app, client, "runs@example.org")
    pid = (await create_project(client, headers))["id"]
    await add_variable(client, headers, pid, name="title", description="Title", type="text")
    await upload(client, headers, pid, [("a.txt", b"Alpha.\n", ""), ("b.txt", b"Beta.\n", "")])
    await wait_for_documents(client, headers, pid)

    samples = await scrape(client)
    assert value(samples, "quarry_metrics_database_up") == 1
    assert value(samples, "quarry_runs", status="completed") == 0
    assert value(samples, "quarry_run_tasks", status="pending") == 0

    fake_llm.latency = 0.5  # slow enough to catch the run in progress
    response = await client.post(f"{API}/projects/{pid}/runs", json={}, headers=headers)
    samples = await scrape(client)
    active = value(samples, "quarry_runs", status="queued") + value(
        samples, "quarry_runs", status="running"
    )
    assert active == 1
    in_flight = sum(
        value(samples, "quarry_run_tasks", status=s)
        for s in ("pending", "running", "succeeded", "not_found")
    )
    assert in_flight == 2  # both tasks of the active run, whatever their state
    await wait_for_run(client, headers, pid, response.json()["id"])

    samples = await scrape(client)
    assert value(samples, "quarry_runs", status="completed") == 1
    assert value(samples, "quarry_runs", status="running") == 0
    # Finished runs' tasks are not counted: the gauge is the work still in the system.
    assert sum(v for (name, _), v in samples.items() if name == "quarry_run_tasks") == 0


async def test_a_broken_database_does_not_break_the_scrape(
    app: FastAPI, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    working = app.state.sessionmaker
    broken = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db")
    app.state.sessionmaker = create_sessionmaker(broken)
    try:
        samples = await scrape(client)
    finally:
        app.state.sessionmaker = working
        await broken.dispose()
    assert value(samples, "quarry_metrics_database_up") == 0
    assert any(name == "quarry_http_requests_total" for name, _ in samples)


def test_llm_calls_retries_and_errors_are_recorded() -> None:
    from prometheus_client import REGISTRY, generate_latest

    model = f"model-{uuid.uuid4().hex[:6]}"
    before = parse(generate_latest(REGISTRY).decode())
    record_llm_call(model, "ok", 1.5, tokens_in=1200, tokens_out=80)
    record_llm_call(model, "ok", 0.5, tokens_in=800, tokens_out=20)
    record_llm_call(model, "timeout", 60.0, tokens_in=0, tokens_out=0)
    record_llm_retry("429")
    record_llm_retry("429")
    after = parse(generate_latest(REGISTRY).decode())

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("quarry_llm_calls_total", model=model, outcome="ok") == 2
    assert delta("quarry_llm_calls_total", model=model, outcome="timeout") == 1
    assert delta("quarry_llm_errors_total", model=model, outcome="timeout") == 1
    assert delta("quarry_llm_errors_total", model=model, outcome="ok") == 0
    assert delta("quarry_llm_tokens_total", model=model, direction="in") == 2000
    assert delta("quarry_llm_tokens_total", model=model, direction="out") == 100
    assert delta("quarry_llm_call_duration_seconds_count", model=model, outcome="ok") == 2
    assert delta("quarry_llm_call_duration_seconds_sum", model=model, outcome="ok") == 2.0
    assert delta("quarry_llm_retries_total", reason="429") == 2


def test_user_chosen_model_names_cannot_explode_the_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prometheus_client import REGISTRY, generate_latest

    # A bound of its own, so the models other tests record keep their names.
    monkeypatch.setattr(quarry.metrics, "_model_label", quarry.metrics._BoundedLabel())
    for n in range(MAX_LABEL_VALUES + 20):
        record_llm_call(f"attacker-model-{uuid.uuid4().hex}-{n}", "ok", 0.1, 1, 1)
    samples = parse(generate_latest(REGISTRY).decode())
    models = {dict(labels)["model"] for name, labels in samples if name == "quarry_llm_calls_total"}
    attacker = {m for m in models if m.startswith("attacker-model-")}
    assert len(attacker) <= MAX_LABEL_VALUES  # the rest were counted as "other"
    assert value(samples, "quarry_llm_calls_total", model="other", outcome="ok") >= 20


async def test_metrics_token_protects_the_endpoint(tmp_path: Path, fake_llm: FakeLLM) -> None:
    settings = make_settings(tmp_path, fake_llm, metrics_token=SecretStr("scrape-secret-123"))
    await create_schema(settings.database_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quarry.test") as client:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "scrape-secret-123"},
            ):
                response = await client.get("/metrics", headers=headers)
                assert response.status_code == 401
                assert response.json()["error"] == "unauthorized"
                assert "quarry_http" not in response.text
            assert await scrape(client, Authorization="Bearer scrape-secret-123")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_worker_serves_its_own_metrics_when_configured(tmp_path: Path) -> None:
    assert serve_worker_metrics(make_settings(tmp_path, None)) is None  # 0 = off
    port = free_port()
    settings = make_settings(tmp_path, None, worker_metrics_port=port)
    assert serve_worker_metrics(settings, addr="127.0.0.1") == port
    record_llm_call("worker-model", "ok", 0.2, 10, 5)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = parse(text)
    assert value(samples, "quarry_llm_calls_total", model="worker-model", outcome="ok") >= 1


@pytest.mark.parametrize("port", [-1, 70000])
def test_worker_metrics_port_is_validated(tmp_path: Path, port: int) -> None:
    with pytest.raises(ValueError):
        make_settings(tmp_path, None, worker_metrics_port=port)
