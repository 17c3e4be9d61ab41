"""The outbox survives the API: a real `quarry serve` process is killed (SIGKILL) after a run
has ended and before its webhook was sent; the next process sends it, exactly once."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quarry.webhooks import signing
from tests.support.fake_llm import FakeLLM
from tests.support.postgres import temporary_postgres_database
from tests.support.processes import ManagedProcess, ProcessGroup, quarry_command
from tests.support.webhook_receiver import WebhookReceiver

EMAIL, PASSWORD = "owner@example.org", "correct horse battery staple"
SECRET = "restart-test-signing-secret"
#: Hang guards only.
START_DEADLINE = 90
DEADLINE = 60


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/quarry.db"
    else:
        with temporary_postgres_database("quarry_webhooks") as url:
            yield url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`quarry serve` on a free port, restartable with other settings."""

    def __init__(self, group: ProcessGroup, tmp_path: Path, env: dict[str, str]) -> None:
        self.group, self.tmp_path, self.env = group, tmp_path, env
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ManagedProcess | None = None
        self._starts = 0

    def start(self, **overrides: str) -> ManagedProcess:
        self._starts += 1
        argv = quarry_command("serve", "--port", str(self.port), "--migrate")
        process = self.group.start(
            f"api-{self._starts}", argv, env={**self.env, **overrides}, cwd=self.tmp_path
        )
        deadline = time.monotonic() + START_DEADLINE
        while True:
            assert process.alive, process.tail()
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, process.tail()
            time.sleep(0.1)
        self.process = process
        return process


def _wait_for(client: httpx.Client, path: str, done: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        body = client.get(path).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, f"{what}: {body}"
        time.sleep(0.05)


def _run(client: httpx.Client, pid: str) -> dict[str, Any]:
    response = client.post(f"/api/v1/projects/{pid}/runs", json={})
    assert response.status_code == 202, response.text
    rid = response.json()["id"]
    return dict(
        _wait_for(
            client,
            f"/api/v1/projects/{pid}/runs/{rid}",
            lambda r: r["status"] not in ("preparing", "queued", "running"),
            "run",
        )
    )


def test_a_run_ended_before_a_crash_is_delivered_after_the_restart_exactly_once(
    tmp_path: Path, fake_llm: FakeLLM, database_url: str
) -> None:
    env = {
        "QUARRY_ENV": "test",
        "QUARRY_PASSWORD_HASH_PROFILE": "test",
        "QUARRY_DATABASE_URL": database_url,
        "QUARRY_STORAGE_DIR": str(tmp_path / "storage"),
        "QUARRY_SECRET_KEY": "test-secret-key-that-is-long-enough-for-hs256",
        "QUARRY_ADMIN_EMAIL": EMAIL,
        "QUARRY_ADMIN_PASSWORD": PASSWORD,
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_BASE_URL": fake_llm.base_url,
        "QUARRY_LLM_MODEL": "fake-model",
        "QUARRY_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on 127.0.0.1
        "QUARRY_WEBHOOK_BACKOFF_SECONDS": "0.05",
        "QUARRY_LOG_JSON": "true",
    }
    with WebhookReceiver() as receiver, ProcessGroup(tmp_path / "logs") as group:
        server = Server(group, tmp_path, env)
        # The first process looks for deliveries at start-up only: the run's end is never
        # sent by it, as if it had been killed the moment the run ended.
        first = server.start(QUARRY_WEBHOOK_POLL_SECONDS="3600")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            token = client.post(
                "/api/v1/auth/token", data={"username": EMAIL, "password": PASSWORD}
            ).json()["access_token"]
            client.headers["Authorization"] = f"Bearer {token}"
            pid = client.post("/api/v1/projects", json={"name": "Restart"}).json()["id"]
            variable = {"name": "age", "description": "Age in years", "type": "integer"}
            assert (
                client.post(f"/api/v1/projects/{pid}/variables", json=variable).status_code == 201
            )
            hook = client.post(
                f"/api/v1/projects/{pid}/webhooks",
                json={"url": receiver.url, "events": ["run.finished"], "secret": SECRET},
            ).json()
            deliveries = f"/api/v1/projects/{pid}/webhooks/{hook['id']}/deliveries"
            files = [("files", ("a.txt", b"The patient is 42 years old.", "text/plain"))]
            assert client.post(f"/api/v1/projects/{pid}/documents", files=files).status_code == 201
            _wait_for(
                client,
                f"/api/v1/projects/{pid}/documents",
                lambda d: d["items"][0]["status"] == "ready",
                "parse",
            )
            before = _run(client, pid)
            [waiting] = client.get(deliveries).json()["items"]
            assert waiting["status"] == "pending" and waiting["attempts"] == 0
            first.kill()
            assert receiver.received == []

            server.start(QUARRY_WEBHOOK_POLL_SECONDS="0.1")
            [request] = receiver.wait_for(1, DEADLINE)
            assert request.json["data"]["run"]["id"] == before["id"]
            assert request.headers["quarry-delivery"] == waiting["id"]
            assert signing.verify(SECRET, request.headers["quarry-signature"], request.body)

            # A run after the restart is delivered as it ends; the first is never repeated.
            after = _run(client, pid)
            got = receiver.wait_for(2, DEADLINE)
            assert [r.json["data"]["run"]["id"] for r in got] == [before["id"], after["id"]]
            items = client.get(deliveries).json()["items"]
            assert {d["status"] for d in items} == {"delivered"}
            assert [d["attempts"] for d in items] == [1, 1]
            assert len(receiver.received) == 2
