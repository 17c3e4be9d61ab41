"""Throw-away PostgreSQL databases for tests that need the real server.

    with temporary_postgres_database() as url:   # postgresql+asyncpg://…/quarry_test_<hex>
        ...                                      # an empty database
    with migrated_postgres_database() as url:    # …at the latest migration, like production
        ...

A migrated database is a copy (`CREATE DATABASE … TEMPLATE`, tens of milliseconds) of a
template that this test session migrated with Alembic the first time a test asked for one
(seconds). The template is this session's own — a unique name, built from the migrations of
the checkout under test, dropped when the session ends — so a schema change can never be
hidden by a template some earlier session left behind.

The server is QUARRY_TEST_PG_URL (default postgresql+asyncpg://postgres@127.0.0.1:5432). When it
cannot be reached the test is skipped — except in CI (CI=true), where a missing service is a
failure: a green build must not mean "the PostgreSQL tests never ran".

Plain asyncpg (a runtime dependency) does the CREATE/DROP, driven on a private event loop in a
helper thread, so the context manager works the same from sync tests, async tests and fixtures.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432"
CONNECT_TIMEOUT_SECONDS = 3.0

T = TypeVar("T")


def postgres_base_url() -> URL:
    """The server to create test databases on (its database part, if any, is ignored)."""
    return make_url(os.environ.get("QUARRY_TEST_PG_URL") or DEFAULT_PG_URL)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _asyncpg_dsn(url: URL, database: str) -> str:
    return url.set(drivername="postgresql", database=database).render_as_string(hide_password=False)


def _in_thread(function: Callable[..., T], *args: Any) -> T:
    # A thread of its own, so this works even when the caller's thread runs an event loop
    # (asyncio.run and run_migrations refuse to run inside one).
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return _in_thread(asyncio.run, coro)


async def _admin_execute(base: URL, *statements: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(base, "postgres"), timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _unavailable(base: URL, error: BaseException) -> NoReturn:
    where = base.render_as_string(hide_password=True)
    message = f"PostgreSQL is not reachable at {where}: {type(error).__name__}: {error}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: the service is required)", pytrace=False)
    pytest.skip(f"{message} (set QUARRY_TEST_PG_URL to use another server)")


def _url(base: URL, database: str) -> str:
    return base.set(drivername="postgresql+asyncpg", database=database).render_as_string(
        hide_password=False
    )


def _create(base: URL, name: str, template: str | None = None) -> None:
    """CREATE DATABASE, skipping the test (failing it in CI) when the server is unreachable."""
    statement = f'CREATE DATABASE "{name}"'
    if template is not None:
        statement += f' TEMPLATE "{template}"'
    unreachable: BaseException | None = None
    try:
        _run(_admin_execute(base, statement))
    except (OSError, asyncpg.PostgresError) as error:  # refused, timed out, auth, …
        unreachable = error
    if unreachable is not None:  # out here, so the report is not a chained traceback
        _unavailable(base, unreachable)


def _drop(base: URL, name: str) -> None:
    # FORCE (PostgreSQL 13+): connections a test leaked (an undisposed engine) must not
    # keep the database alive.
    _run(_admin_execute(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def _database(prefix: str, template: str | None) -> Iterator[str]:
    base = postgres_base_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _create(base, name, template)
    try:
        yield _url(base, name)
    finally:
        _drop(base, name)


@contextmanager
def temporary_postgres_database(prefix: str = "quarry_test") -> Iterator[str]:
    """Create an empty, uniquely named database; yield its SQLAlchemy (asyncpg) URL; drop it.

    Skips the test when the server is unreachable (fails instead when CI=true).
    """
    with _database(prefix, template=None) as url:
        yield url


_template_lock = threading.Lock()
#: (server, name) of this session's migrated template, once built.
_migrated_template: tuple[URL, str] | None = None


def _session_template() -> str:
    """The name of this session's migrated template database, built on first use."""
    global _migrated_template
    base = postgres_base_url()
    with _template_lock:
        if _migrated_template is None or _migrated_template[0] != base:
            # quarry_template_<pid>_<hex>: a leftover of a killed session is recognisable.
            name = f"quarry_template_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            _create(base, name)
            try:
                # Imported here: only sessions that need PostgreSQL pay for Alembic.
                from quarry.migrations import run_migrations

                _in_thread(run_migrations, _url(base, name))
            except BaseException:
                _drop(base, name)
                raise
            # Alembic's engine is disposed: no connection is left on the template, which
            # CREATE DATABASE … TEMPLATE requires.
            _migrated_template = (base, name)
        return _migrated_template[1]


@contextmanager
def migrated_postgres_database(prefix: str = "quarry_test") -> Iterator[str]:
    """Like `temporary_postgres_database`, but at the latest migration (as `quarry migrate`
    leaves a production database): a copy of this session's migrated template."""
    with _database(prefix, template=_session_template()) as url:
        yield url


def drop_session_template() -> None:
    """Drop this session's migrated template, if one was built (at the end of the session)."""
    global _migrated_template
    with _template_lock:
        if _migrated_template is not None:
            base, name = _migrated_template
            _migrated_template = None
            _drop(base, name)
