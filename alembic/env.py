"""Alembic environment: one async code path for SQLite (aiosqlite) and PostgreSQL (asyncpg).

The database URL comes from, in order: `config.attributes["database_url"]` (set by
`quarry.migrations.run_migrations` and the tests), `-x database_url=...` on the alembic command
line, then `quarry.settings.get_settings().database_url` (QUARRY_DATABASE_URL / .env / default).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from pathlib import Path
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import event, pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.ext.asyncio import create_async_engine

from quarry.models import Base
from quarry.models.base import UTCDateTime

config = context.config

# Only the `alembic` command configures logging from alembic.ini; called from Python
# (run_migrations sets this to False) the application's own logging is left untouched.
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> URL:
    url: str | None = config.attributes.get("database_url")
    if url is None:
        url = context.get_x_argument(as_dictionary=True).get("database_url")
    if url is None:
        from quarry.settings import get_settings

        url = get_settings().database_url
    return make_url(url)


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render Quarry's column types as plain SQLAlchemy ones.

    Migrations must not import `quarry.models`: a migration is a frozen snapshot, and the models
    are free to change (or move) after it was written. UTCDateTime's storage is exactly a
    timezone-aware DateTime; the UTC conversion is Python-side only.
    """
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def configure_options(url: URL) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        "render_as_batch": url.get_backend_name() == "sqlite",
        "compare_type": True,
        "render_item": render_item,
    }


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (`alembic upgrade head --sql`) instead of executing it."""
    url = database_url()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **configure_options(url),
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    url = connection.engine.url
    context.configure(connection=connection, **configure_options(url))
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(url: URL) -> None:
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        # A fresh install's ./var/ does not exist yet; SQLite will not create directories.
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)

    engine = create_async_engine(url, poolclass=pool.NullPool)
    if url.get_backend_name() == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _foreign_keys_off(dbapi_conn: Any, _record: Any) -> None:
            # Batch migrations copy a table and DROP the old one; with foreign keys on, that
            # DROP would fire ON DELETE CASCADE and empty every child table. (The app turns
            # them on for its own connections in quarry.db.)
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=OFF")
            cursor.close()

    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    asyncio.run(run_async_migrations(database_url()))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
