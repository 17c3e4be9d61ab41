"""Throw-away PostgreSQL databases for tests that need the real server.

    with temporary_postgres_database() as url:   # postgresql+asyncpg://…/quarry_test_<hex>
        ...

The server is QUARRY_TEST_PG_URL (default postgresql+asyncpg://postgres@127.0.0.1:5432). When it
cannot be reached the test is skipped — except in CI (CI=true), where a missing service is a
failure: a green build must not mean "the PostgreSQL tests never ran".

Plain asyncpg (a runtime dependency) does the CREATE/DROP, driven on a private event loop in a
helper thread, so the context manager works the same from sync tests, async tests and fixtures.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine, Iterator
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


def _run(coro: Coroutine[Any, Any, T]) -> T:
    # A thread of its own, so this works even when the caller's thread runs an event loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


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


@contextmanager
def temporary_postgres_database(prefix: str = "quarry_test") -> Iterator[str]:
    """Create an empty, uniquely named database; yield its SQLAlchemy (asyncpg) URL; drop it.

    Skips the test when the server is unreachable (fails instead when CI=true).
    """
    base = postgres_base_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    unreachable: BaseException | None = None
    try:
        _run(_admin_execute(base, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as error:  # refused, timed out, auth, …
        unreachable = error
    if unreachable is not None:  # out here, so the report is not a chained traceback
        _unavailable(base, unreachable)
    try:
        yield base.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        # FORCE (PostgreSQL 13+): connections a test leaked (an undisposed engine) must not
        # keep the database alive.
        _run(_admin_execute(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
