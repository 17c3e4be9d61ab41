"""Fixtures for the hostile-user tests: cheap password hashing and the real Redis."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from quarry.auth import passwords
from tests.support.redis import require_redis


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2id parameters: these tests sign many users in; tests/auth checks hashing."""
    monkeypatch.setattr(
        passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def redis_url() -> str:
    return require_redis()
