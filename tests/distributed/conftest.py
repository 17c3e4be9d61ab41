"""Distributed mode on the real services: PostgreSQL, Redis and `quarry worker` processes.

Every test gets its own PostgreSQL database (migrated like production) and its own Arq queue
name, so neither parallel runs nor leftovers of a crashed run can hand it someone else's
jobs; at teardown the workers are stopped and every Redis key of its queue is deleted. Job
ids are `<job>:<uuid>`, unique to the test's own rows, so the few keys Arq does not prefix
with the queue name cannot collide either.

Redis is QUARRY_TEST_REDIS_URL (default redis://127.0.0.1:6379/0); when it (or PostgreSQL)
cannot be reached the tests are skipped — except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import redis
from arq import constants as arq_keys
from tests.conftest import make_settings
from tests.support.fake_llm import FakeLLM
from tests.support.postgres import migrated_postgres_database
from tests.support.processes import ManagedProcess, ProcessGroup, quarry_command
from tests.support.redis import require_redis

from quarry.settings import Settings

#: Short enough that a killed worker's tasks come back within seconds, not a minute.
FAST_RECOVERY: dict[str, object] = {
    "task_lease_seconds": 4,
    "sweep_interval_seconds": 1.0,
    "task_timeout_seconds": 30,
    "worker_shutdown_grace_seconds": 0,
    "llm_concurrency": 4,
}

#: The settings a worker process receives as QUARRY_* variables (the rest are defaults).
_WORKER_SETTINGS = (
    "env",
    "database_url",
    "redis_url",
    "redis_queue",
    "storage_dir",
    "llm_model",
    "llm_concurrency",
    "llm_timeout_seconds",
    "llm_max_retries",
    "llm_rpm",
    "llm_tpm",
    "llm_repair_attempts",
    "task_lease_seconds",
    "task_timeout_seconds",
    "sweep_interval_seconds",
    "worker_shutdown_grace_seconds",
    "worker_heartbeat_file",
    "webhook_allow_private",
    "webhook_poll_seconds",
    "webhook_backoff_seconds",
)

_PROCESSES = pytest.StashKey[ProcessGroup]()


def purge_queue(url: str, queue: str) -> None:
    """Delete every key of `queue`: its jobs (all still listed in the queue's sorted set,
    since Arq removes a job from it only together with its keys) and its own keys."""
    client = redis.Redis.from_url(url)
    try:
        ids = [i.decode() for i in client.zrange(queue, 0, -1)]
        keys = [
            prefix + job_id
            for job_id in ids
            for prefix in (
                arq_keys.job_key_prefix,
                arq_keys.in_progress_key_prefix,
                arq_keys.retry_key_prefix,
                arq_keys.result_key_prefix,
            )
        ]
        keys += [queue, f"{queue}:health-check", f"{queue}:sweep"]
        client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_url() -> str:
    return require_redis()


@pytest.fixture
def database_url(redis_url: str) -> Iterator[str]:
    # Depends on redis_url only so that a missing Redis skips before a database is made.
    with migrated_postgres_database() as url:
        yield url


@pytest.fixture
def settings(
    tmp_path: Path, fake_llm: FakeLLM, database_url: str, redis_url: str
) -> Iterator[Settings]:
    """Distributed settings: the root conftest's `app` and `client` fixtures use these."""
    queue = f"quarry-test:{uuid.uuid4().hex[:12]}"
    values = {"database_url": database_url, "redis_url": redis_url, "redis_queue": queue}
    try:
        yield make_settings(tmp_path, fake_llm, **values, **FAST_RECOVERY)
    finally:
        purge_queue(redis_url, queue)


def worker_env(settings: Settings) -> dict[str, str]:
    env = {
        f"QUARRY_{name.upper()}": str(getattr(settings, name))
        for name in _WORKER_SETTINGS
        if getattr(settings, name) is not None
    }
    assert settings.secret_key is not None and settings.openai_api_key is not None
    env["QUARRY_SECRET_KEY"] = settings.secret_key.get_secret_value()
    env["OPENAI_API_KEY"] = settings.openai_api_key.get_secret_value()
    env["OPENAI_BASE_URL"] = str(settings.openai_base_url)
    env["QUARRY_LOG_JSON"] = "true"  # one plain line per event in the log file
    env["QUARRY_LOG_LEVEL"] = "INFO"
    return env


class Workers:
    """`quarry worker` processes for one test, all with the test's settings."""

    def __init__(self, group: ProcessGroup, settings: Settings, cwd: Path) -> None:
        self.group = group
        self.settings = settings
        self.cwd = cwd  # not the repository: a developer's .env must not leak in
        self._started = 0

    def start(self) -> ManagedProcess:
        """Start a worker without waiting for it (see `ready`)."""
        self._started += 1
        return self.group.start(
            f"worker-{self._started}",
            quarry_command("worker"),
            env=worker_env(self.settings),
            cwd=self.cwd,
        )

    async def ready(self, process: ManagedProcess, timeout: float = 60) -> ManagedProcess:
        """Wait, without blocking the event loop the in-process API runs on, until the
        worker has connected to Redis and the database."""
        deadline = time.monotonic() + timeout
        while "worker.started" not in process.output():
            assert process.alive, f"{process.name} exited:\n{process.tail()}"
            assert time.monotonic() < deadline, f"{process.name} did not start:\n{process.tail()}"
            await asyncio.sleep(0.05)
        return process

    async def start_ready(self) -> ManagedProcess:
        return await self.ready(self.start())

    @property
    def alive(self) -> list[ManagedProcess]:
        return [p for p in self.group.processes if p.alive]


@pytest.fixture
def workers(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Settings
) -> Iterator[Workers]:
    """Start workers with `workers.start()`; all are stopped at teardown, and their logs are
    attached to the report of a failed test."""
    with ProcessGroup(tmp_path / "logs") as group:
        request.node.stash[_PROCESSES] = group
        yield Workers(group, settings, tmp_path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    group = item.stash.get(_PROCESSES, None)
    if group is not None and report.when == "call" and report.failed:
        report.sections.append(("worker logs", group.report()))
    return report
