"""Shared fixtures: settings on a temporary SQLite file, the app with its lifespan, a client,
and the fake OpenAI-compatible LLM server (real HTTP, real client code path).

Set-up is kept cheap because the suite is run often: the schema is a copy of a template built
once per session (tests/support/schema.py, tests/support/postgres.py) and passwords are hashed
with argon2's cheapest parameters (`password_hash_profile="test"`); tests/auth checks the
standard ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from quarry.app import create_app
from quarry.settings import Environment, PasswordHashProfile, Settings
from tests.support.api import create_schema
from tests.support.fake_llm import FakeLLM
from tests.support.fixtures_llm import fake_llm
from tests.support.postgres import drop_session_template

__all__ = ["fake_llm"]


def make_settings(tmp_path: Path, fake: FakeLLM | None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": Environment.TEST,
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/quarry.db",
        "storage_dir": tmp_path / "storage",
        "secret_key": SecretStr("test-secret-key-that-is-long-enough-for-hs256"),
        "openai_api_key": SecretStr("sk-test-not-a-real-key") if fake else None,
        "openai_base_url": fake.base_url if fake else None,
        "llm_model": "fake-model",
        "llm_max_retries": 2,
        "llm_timeout_seconds": 5.0,
        "log_json": False,
        "log_level": "WARNING",
        "password_hash_profile": PasswordHashProfile.TEST,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    drop_session_template()


@pytest.fixture
def settings(tmp_path: Path, fake_llm: FakeLLM) -> Settings:
    return make_settings(tmp_path, fake_llm)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    await create_schema(settings.database_url)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://quarry.test") as c:
        yield c
