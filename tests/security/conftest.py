"""Fixtures for the hostile-user tests: the real Redis."""

from __future__ import annotations

import pytest

from tests.support.redis import require_redis


@pytest.fixture
def redis_url() -> str:
    return require_redis()
