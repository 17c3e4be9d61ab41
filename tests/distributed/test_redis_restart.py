"""Redis restarted in the middle of a run, losing everything it held (no persistence): the
workers keep going and the run completes with every pair stored exactly once, because the
database, not the queue, says what is left to do."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI
from tests.distributed.conftest import Workers
from tests.distributed.reports import assert_stored_exactly_once, make_project
from tests.support.fake_llm import FakeLLM
from tests.support.postgres import in_ci
from tests.support.processes import ManagedProcess, ProcessGroup

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: The longest a run may take before the test calls it hung (see CONVENTIONS, Tests).
HANG_GUARD_SECONDS = 480  # below pytest-timeout (600 s), so this message is the one seen


class PrivateRedis:
    """A redis-server of this test's own, so restarting it disturbs nobody else."""

    def __init__(self, group: ProcessGroup, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.group, self.directory, self.starts = group, directory, 0
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.starts += 1
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = self.group.start(f"redis-{self.starts}", argv, env={}, cwd=self.directory)
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert self.process.alive, self.process.tail()
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def crash(self) -> None:
        assert self.process is not None
        self.process.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed"
        if in_ci():
            pytest.fail(f"{message} (CI=true: the service is required)", pytrace=False)
        pytest.skip(message)
    with ProcessGroup(tmp_path / "redis-logs") as group:
        server = PrivateRedis(group, tmp_path)
        server.start()
        yield server


@pytest.fixture
def redis_url(private_redis: PrivateRedis) -> str:
    """Overrides the shared Redis for this module: the settings point at the private one."""
    return private_redis.url


async def test_a_redis_restart_mid_run_loses_and_duplicates_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    fake_llm: FakeLLM,
    workers: Workers,
    private_redis: PrivateRedis,
) -> None:
    pool = await asyncio.gather(workers.start_ready(), workers.start_ready())
    headers, pid, pairs = await make_project(app, client, fake_llm, documents=10)
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run_url = f"/api/v1/projects/{pid}/runs/{response.json()['id']}"

    started = time.monotonic()
    # A hang guard, not a timing: the run takes 10-25 s here, more than 20x less.
    hang_guard = started + HANG_GUARD_SECONDS
    while (await client.get(run_url, headers=headers)).json()["done"] < pairs // 3:
        assert time.monotonic() < hang_guard, "the run stalled before the restart"
        await asyncio.sleep(0.05)
    private_redis.crash()  # the queue, every job and every marker are gone
    await asyncio.sleep(1.0)
    private_redis.start()

    while (run := (await client.get(run_url, headers=headers)).json())["status"] in (
        "preparing",
        "queued",
        "running",
    ):
        assert time.monotonic() < hang_guard, f"run did not finish: {run}"
        await asyncio.sleep(0.1)
    assert all(p.alive for p in pool), "a worker did not survive the Redis restart"
    await assert_stored_exactly_once(app, run, pairs)
    assert fake_llm.calls(status=None) >= pairs


async def test_a_worker_started_before_redis_waits_for_it_then_works(
    app: FastAPI,
    client: httpx.AsyncClient,
    fake_llm: FakeLLM,
    workers: Workers,
    private_redis: PrivateRedis,
) -> None:
    private_redis.crash()
    worker = workers.start()
    deadline = time.monotonic() + 60  # a hang guard: the worker says so within a second
    while "worker.waiting_for_services" not in worker.output():
        assert worker.alive, f"the worker exited instead of waiting:\n{worker.tail()}"
        assert time.monotonic() < deadline, worker.tail()
        await asyncio.sleep(0.05)
    assert "worker.started" not in worker.output()
    private_redis.start()
    await workers.ready(worker)

    headers, pid, pairs = await make_project(app, client, fake_llm, documents=2)
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    run_url = f"/api/v1/projects/{pid}/runs/{response.json()['id']}"
    while (run := (await client.get(run_url, headers=headers)).json())["status"] in (
        "preparing",
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, f"run did not finish: {run}"
        await asyncio.sleep(0.1)
    await assert_stored_exactly_once(app, run, pairs)
