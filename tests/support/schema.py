"""The SQLite test schema, built once per test session and copied for every test.

`Base.metadata.create_all` on SQLite costs 0.1–0.5 s (every table and index is its own DDL
statement, committed and synced); copying the file it produced costs about a millisecond.

The template is built from the models as they are in this session, the first time a test
needs it, into a temporary directory that is removed when the session's process exits. It
is never shared with or reused by another session: the schema changes from branch to
branch, and a stale template would hide exactly the mistakes the tests are there to catch.
(PostgreSQL databases migrated by Alembic have their own template: tests/support/postgres.py.)
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from quarry.models import Base

_lock = threading.Lock()  # the web tests build schemas from a thread of their own
_template: Path | None = None


def sqlite_template() -> Path:
    """This session's template file: an SQLite database holding the empty schema."""
    global _template
    with _lock:
        if _template is None:
            directory = Path(tempfile.mkdtemp(prefix="quarry-schema-"))
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            path = directory / "template.db"
            # The standard library's driver: the DDL is the same SQLite dialect the app's
            # aiosqlite engine speaks, and it needs no event loop.
            engine = create_engine(f"sqlite:///{path}")
            try:
                Base.metadata.create_all(engine)
            finally:
                engine.dispose()
            _template = path
        return _template


def _new_sqlite_file(database_url: str) -> Path | None:
    """The file a SQLite URL names when it does not exist yet (or is empty); else None."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database)
    if path.exists() and path.stat().st_size > 0:
        return None
    return path


async def create_schema(database_url: str) -> None:
    """Give the database at `database_url` the current schema.

    A new SQLite file is a copy of the session's template. Anything else — a SQLite file that
    already exists (a test restarting its app keeps its data), another database — gets
    `create_all`, which adds only what is missing.
    """
    path = _new_sqlite_file(database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sqlite_template(), path)
        return
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
    finally:
        await engine.dispose()
