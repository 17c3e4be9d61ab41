"""Fixtures for the hostile-user tests: cheap password hashing and the real Redis."""

from __future__ import annotations

import os

import pytest
import redis
from argon2 import PasswordHasher

from quarry.auth import passwords
from tests.support.postgres import in_ci

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2id parameters: these tests sign many users in; tests/auth checks hashing."""
    monkeypatch.setattr(
        passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def redis_url() -> str:
    """QUARRY_TEST_REDIS_URL (default the local server); skipped when unreachable, except in
    CI (CI=true), where a missing Redis is a failure: green must mean the Redis tests ran."""
    url = os.environ.get("QUARRY_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        message = f"Redis is not reachable at {url}: {type(error).__name__}: {error}"
        if in_ci():
            pytest.fail(f"{message} (CI=true: the service is required)", pytrace=False)
        pytest.skip(f"{message} (set QUARRY_TEST_REDIS_URL to use another server)")
    finally:
        client.close()
    return url
