"""Readiness in distributed mode: the API reports Redis, and says so when it is gone."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import make_settings
from tests.support.api import running_app


async def test_ready_is_503_naming_redis_when_redis_is_unreachable(tmp_path: Path) -> None:
    # Nothing listens on port 1: the API still starts (it connects lazily) and says why
    # it is not ready, quickly, instead of hanging the probe.
    settings = make_settings(tmp_path, None, redis_url="redis://127.0.0.1:1/0")
    async with running_app(settings) as (_app, client):
        started = time.monotonic()
        response = await client.get("/health/ready")
        assert time.monotonic() - started < 20  # the probe's own Redis timeout is 2 s
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["redis"].startswith("unavailable: ")
        assert (await client.get("/health/live")).status_code == 200
