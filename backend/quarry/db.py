"""Engine, session makers, and the one place that commits.

Everything else `flush()`es. Work that must only happen once data is durable (enqueueing a
job, waking a runner) is registered with `after_commit` and runs after the commit succeeds;
on rollback it is dropped, so no job ever points at a row that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request
from sqlalchemy import Engine, event, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = structlog.get_logger(__name__)

AfterCommit = Callable[[], Awaitable[None] | None]
_AFTER_COMMIT_KEY = "quarry.after_commit"


#: A pooled PostgreSQL connection unused for this long is checked before it is handed out.
PING_AFTER_IDLE_SECONDS = 5.0


def create_engine(database_url: str) -> AsyncEngine:
    """Create the async engine; SQLite gets WAL, foreign keys and a generous busy timeout."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        engine = create_async_engine(url, pool_size=10, max_overflow=20)
        _ping_idle_connections(engine)
        return engine

    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # WAL lets the API read while the runner writes; foreign keys make cascades real.
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """`pool_pre_ping`, for connections that sat idle: a database restarted since then has
    closed them, and the pool replaces one that fails the ping (up to three times).

    SQLAlchemy's own pre-ping costs three round trips on asyncpg (BEGIN, a ping, ROLLBACK) at
    every checkout, which is several per task; a connection handed back moments ago by a
    busy worker is as good as a pinged one. One whose database went away while it was in
    use fails that transaction, which is then retried (a job's task by the sweeper, as for
    any crash); the pool then recycles every connection it held.
    """

    @event.listens_for(engine.sync_engine, "connect")
    @event.listens_for(engine.sync_engine, "checkin")
    def _mark_idle(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_conn.ping()
        except Exception as exc:
            raise DisconnectionError(f"idle connection lost: {exc}") from exc


async def ping_database(engine: AsyncEngine) -> None:
    """Raise unless the database answers a trivial query."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once the session's transaction has committed; drop it on rollback."""
    session.info.setdefault(_AFTER_COMMIT_KEY, []).append(callback)


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A unit of work: commit on success, roll back on error, then run after-commit hooks."""
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            session.info.pop(_AFTER_COMMIT_KEY, None)
            raise
        callbacks: list[AfterCommit] = session.info.pop(_AFTER_COMMIT_KEY, [])
    for callback in callbacks:
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception:
            # The data is committed; a failed wake-up is repaired by the sweeper.
            log.exception("db.after_commit_failed")


_SQLITE_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def job_write_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """`session_scope` for the short write transactions of background jobs.

    SQLite takes one writer at a time, and a connection that finds the database locked sleeps
    in SQLite's busy handler in steps of up to 100 ms: with a dozen tasks of one process
    storing results at once, most of a run's time went into those sleeps. So on SQLite the
    process's jobs queue for their write transactions on an asyncio lock instead (which
    wakes the next one the moment the previous commits); PostgreSQL needs no such thing.
    API requests do not take the lock: they are few during a run, and one that meets a job's
    transaction waits in the busy handler as before.
    """
    lock: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
    bind = sessionmaker.kw.get("bind")
    if bind is not None and bind.dialect.name == "sqlite":
        lock = _SQLITE_WRITE_LOCKS.setdefault(bind.sync_engine, asyncio.Lock())
    async with lock, session_scope(sessionmaker) as session:
        yield session


def sqlite_file(sessionmaker: async_sessionmaker[AsyncSession]) -> Path | None:
    """The database file behind `sessionmaker` when it is a SQLite file, else None."""
    bind = sessionmaker.kw.get("bind")
    if bind is None or bind.dialect.name != "sqlite":
        return None
    database = bind.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None  # in memory, or a URI of its own: only the engine's connections reach it
    return Path(database)


def connect_sqlite_reader(path: Path) -> sqlite3.Connection:
    """A plain, read-only connection to a SQLite file, inside one read transaction.

    For bulk reads in a worker thread (exports): rows come straight from SQLite to the code
    that uses them, without hops through aiosqlite's thread and the event loop. Read-only by
    URI (`mode=ro`), so such a reader can never write or take the write lock. The deferred
    BEGIN makes every query until `close()` read one snapshot (WAL keeps it while writers go
    on). The connection belongs to the thread that opened it: close it there.
    """
    connection = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None
    )
    try:
        connection.execute("BEGIN")
    except BaseException:
        connection.close()
        raise
    return connection


def writers_take_turns(session: AsyncSession) -> bool:
    """True on SQLite: one write transaction at a time, which holds the database's write lock
    from its first write until it ends, so it sees every write transaction before it."""
    return bool(session.get_bind().dialect.name == "sqlite")


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with session_scope(request.app.state.sessionmaker) as session:
        yield session


# scope="function": commit before the response is sent, so a client never reads a 2xx
# for data that then failed to commit.
SessionDep = Annotated[AsyncSession, Depends(_request_session, scope="function")]
