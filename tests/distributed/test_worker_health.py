"""The container health check of a worker: `quarry worker --check` is healthy while the worker
records its health in Redis, and not once it has stopped."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from tests.distributed.conftest import Workers, worker_env
from tests.support.processes import child_env, quarry_command

from quarry.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"worker_heartbeat_file": tmp_path / "worker.alive"})


def check(settings: Settings, cwd: Path, max_age: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*quarry_command("worker", "--check", "--max-age", str(max_age))],
        env=child_env(worker_env(settings)),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_worker_check_follows_the_worker(
    settings: Settings, workers: Workers, tmp_path: Path
) -> None:
    assert check(settings, tmp_path, 60).returncode == 1  # no worker has run yet
    worker = await workers.start_ready()
    deadline = time.monotonic() + 30
    while not (tmp_path / "worker.alive").exists():
        assert time.monotonic() < deadline, worker.tail()
        await asyncio.sleep(0.1)
    healthy = await asyncio.to_thread(check, settings, tmp_path, 60)
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.startswith("healthy")

    worker.kill()
    await asyncio.sleep(1.5)
    stale = await asyncio.to_thread(check, settings, tmp_path, 1)
    assert stale.returncode == 1
    assert "unhealthy: the worker last recorded its health" in stale.stderr
