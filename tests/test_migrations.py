"""The Alembic migrations build exactly the models' schema, on SQLite and on PostgreSQL.

These tests are synchronous on purpose: `run_migrations` runs its own event loop (as the CLI
does, before uvicorn starts), so the database checks below use `asyncio.run` in between.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, delete, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from quarry.db import create_engine, create_sessionmaker, session_scope
from quarry.migrations import alembic_config, find_alembic_ini, run_migrations
from quarry.models import Base, Project, Run, RunEvent, User
from quarry.settings import get_settings
from tests.support.postgres import temporary_postgres_database

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_TABLES = set(Base.metadata.tables)
#: The latest migration (alembic/versions/); update it with each new one.
HEAD = "0013"

T = TypeVar("T")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        # A directory that does not exist yet, like ./var/ on a fresh install.
        yield f"sqlite+aiosqlite:///{tmp_path}/var/quarry.db"
    else:
        with temporary_postgres_database() as url:
            yield url


def on_sync_connection(database_url: str, inspect_with: Callable[[Connection], T]) -> T:
    """Run `inspect_with` on a sync connection to the database (through the async driver)."""

    async def run() -> T:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(inspect_with)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def table_names(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def differences_from_models(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_migrations_build_the_models_schema_and_downgrade_cleanly(database_url: str) -> None:
    run_migrations(database_url)

    assert on_sync_connection(database_url, table_names) == MODEL_TABLES | {"alembic_version"}
    assert on_sync_connection(database_url, differences_from_models) == []
    assert on_sync_connection(database_url, current_revision) == head_revision() == HEAD

    command.downgrade(alembic_config(database_url), "base")
    assert on_sync_connection(database_url, table_names) <= {"alembic_version"}
    assert on_sync_connection(database_url, current_revision) is None

    run_migrations(database_url)
    assert on_sync_connection(database_url, differences_from_models) == []
    # Running it again on an up-to-date database is a no-op (`quarry serve` does it each start).
    run_migrations(database_url)
    assert on_sync_connection(database_url, current_revision) == HEAD


async def insert_and_read_back(database_url: str) -> list[RunEvent]:
    engine = create_engine(database_url)
    sessionmaker = create_sessionmaker(engine)
    try:
        async with session_scope(sessionmaker) as session:
            user = User(email="ada@example.org", password_hash="x")
            session.add(user)
            await session.flush()
            project = Project(owner_id=user.id, name="Trials")
            session.add(project)
            await session.flush()
            run = Run(project_id=project.id, created_by=user.id, model="m", settings={"t": 0.5})
            session.add(run)
            await session.flush()
            session.add_all(
                RunEvent(run_id=run.id, event="run.started", message=f"event {n}", data={"n": n})
                for n in range(3)
            )

        async with session_scope(sessionmaker) as session:
            events = list((await session.scalars(select(RunEvent).order_by(RunEvent.id))).all())
            stored_run = await session.get(Run, run.id)
            assert stored_run is not None and stored_run.settings == {"t": 0.5}
            assert stored_run.created_at.tzinfo is UTC

        # The foreign keys kept their ON DELETE: removing the project removes its runs' events.
        async with session_scope(sessionmaker) as session:
            await session.execute(delete(Project).where(Project.id == project.id))
        async with session_scope(sessionmaker) as session:
            assert (await session.scalars(select(RunEvent))).all() == []
        return events
    finally:
        await engine.dispose()


def test_migrated_database_round_trips_orm_data(database_url: str) -> None:
    run_migrations(database_url)
    before = datetime.now(UTC)

    events = asyncio.run(insert_and_read_back(database_url))

    ids = [event.id for event in events]
    assert all(isinstance(event_id, int) for event_id in ids)
    assert ids == list(range(ids[0], ids[0] + 3)), "run_events ids must autoincrement"
    assert [event.data for event in events] == [{"n": 0}, {"n": 1}, {"n": 2}]
    for event in events:
        assert event.created_at.tzinfo is UTC
        assert before - timedelta(seconds=5) < event.created_at < datetime.now(UTC)


def test_alembic_command_line_takes_quarry_database_url(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "dir" / "quarry.db"
    env = {**os.environ, "QUARRY_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}

    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Running upgrade  -> 0001" in result.stderr
    assert f"-> {HEAD}" in result.stderr
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_alembic_x_argument_overrides_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # If the -x value were ignored, this (unwritable) settings URL would make the upgrade fail.
    monkeypatch.setenv("QUARRY_DATABASE_URL", "sqlite+aiosqlite:////proc/no/such/dir/x.db")
    database = tmp_path / "via-x.db"
    config = Config(
        str(REPO_ROOT / "alembic.ini"),
        cmd_opts=argparse.Namespace(x=[f"database_url=sqlite+aiosqlite:///{database}"]),
    )
    config.attributes["configure_logging"] = False

    get_settings.cache_clear()  # so a settings fallback would really see the URL above
    try:
        command.upgrade(config, "head")
    finally:
        get_settings.cache_clear()

    assert on_sync_connection(f"sqlite+aiosqlite:///{database}", table_names) >= MODEL_TABLES


def test_offline_sql_for_postgresql_uses_bigserial_for_run_events() -> None:
    output = io.StringIO()
    config = Config(str(REPO_ROOT / "alembic.ini"), output_buffer=output)
    config.attributes["database_url"] = "postgresql+asyncpg://quarry@db.invalid/quarry"
    config.attributes["configure_logging"] = False

    command.upgrade(config, "head", sql=True)

    sql = output.getvalue()
    assert "CREATE TABLE run_events (\n    id BIGSERIAL NOT NULL" in sql
    assert (
        "CONSTRAINT fk_run_events_run_id_runs FOREIGN KEY(run_id) REFERENCES runs (id) "
        "ON DELETE CASCADE" in sql
    )
    assert "TIMESTAMP WITH TIME ZONE" in sql


def test_sqlite_run_events_id_is_the_rowid(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/q.db"
    run_migrations(database_url)

    with sqlite3.connect(make_url(database_url).database or "") as conn:
        (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'run_events'").fetchone()
    # Only a column declared exactly INTEGER aliases the rowid and autoincrements.
    assert "id INTEGER NOT NULL" in ddl


async def test_run_migrations_refuses_to_run_inside_an_event_loop(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="inside an event loop"):
        run_migrations(f"sqlite+aiosqlite:///{tmp_path}/q.db")
    assert not (tmp_path / "q.db").exists()


def test_migrations_are_found_in_the_working_directory_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Docker image: alembic.ini and alembic/ in /app, the package installed elsewhere.
    (tmp_path / "alembic").mkdir()
    (tmp_path / "alembic" / "env.py").write_text("")
    (tmp_path / "alembic.ini").write_text("[alembic]\n")
    monkeypatch.chdir(tmp_path)
    assert find_alembic_ini() == (tmp_path / "alembic.ini").resolve()

    # Anywhere else: the checkout the package was imported from.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert find_alembic_ini() == REPO_ROOT / "alembic.ini"
