"""Webhook tests: a receiver on 127.0.0.1 (so the operator setting that allows private
addresses is on, as the README tells an operator to do for such receivers), fast polls and
backoff, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quarry.settings import Settings
from tests.conftest import make_settings
from tests.support.fake_llm import FakeLLM
from tests.support.postgres import temporary_postgres_database
from tests.support.webhook_receiver import WebhookReceiver

#: Quick senders: a delivery is looked for every 50 ms and retried after 50, 100, 200 ms…
FAST_WEBHOOKS: dict[str, object] = {
    "webhook_allow_private": True,
    "webhook_poll_seconds": 0.05,
    "webhook_backoff_seconds": 0.05,
}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite; a module that must run on both backends uses `both_backends` instead."""
    return f"sqlite+aiosqlite:///{tmp_path}/quarry.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def both_backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/quarry.db"
    else:
        with temporary_postgres_database() as url:
            yield url


@pytest.fixture
def settings(tmp_path: Path, fake_llm: FakeLLM, database_url: str) -> Settings:
    return make_settings(tmp_path, fake_llm, database_url=database_url, **FAST_WEBHOOKS)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r
