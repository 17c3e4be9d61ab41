"""The app on SQLite by default; a test marked `BOTH_DATABASES` runs on PostgreSQL too.

A conftest imports `database` and `settings` from here to use them (as tests/users and
tests/members do)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quarry.settings import Settings
from tests.conftest import make_settings
from tests.support.fake_llm import FakeLLM
from tests.support.postgres import temporary_postgres_database

BOTH_DATABASES = pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def settings(tmp_path: Path, fake_llm: FakeLLM, database: str) -> Iterator[Settings]:
    if database == "sqlite":
        yield make_settings(tmp_path, fake_llm)
        return
    with temporary_postgres_database("quarry_teams") as url:
        yield make_settings(tmp_path, fake_llm, database_url=url)
