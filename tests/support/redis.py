"""The real Redis the tests use: QUARRY_TEST_REDIS_URL, default the local server.

Unreachable, it skips the test — except in CI (CI=true), where that is a failure: green must
mean the Redis tests ran.
"""

from __future__ import annotations

import os

import pytest
import redis

from tests.support.postgres import in_ci

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_test_url() -> str:
    """The URL, without checking that anything answers there."""
    return os.environ.get("QUARRY_TEST_REDIS_URL") or DEFAULT_REDIS_URL


def require_redis() -> str:
    """The URL of a Redis that answers PING; skips (fails in CI) when there is none."""
    url = redis_test_url()
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
