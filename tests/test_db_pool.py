"""PostgreSQL connections that the server dropped (it restarted) are replaced, not used.

The pool pings a connection that sat idle before handing it out (db.PING_AFTER_IDLE_SECONDS);
one in constant use is handed out without a ping.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from quarry import db
from tests.support.postgres import temporary_postgres_database


async def _terminate_other_connections(url: str) -> int:
    engine = db.create_engine(url)
    try:
        async with engine.connect() as admin:
            killed = await admin.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return int(killed or 0)
    finally:
        await engine.dispose()


async def test_an_idle_connection_the_server_dropped_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with temporary_postgres_database("quarry_pool") as url:
        engine = db.create_engine(url)
        try:
            async with engine.connect() as conn:
                first_pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            assert await _terminate_other_connections(url) >= 1  # as a server restart would
            monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # it has sat idle long enough
            async with engine.connect() as conn:
                assert await conn.scalar(text("SELECT 41 + 1")) == 42
                assert await conn.scalar(text("SELECT pg_backend_pid()")) != first_pid
        finally:
            await engine.dispose()


async def test_a_connection_in_constant_use_is_not_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    with temporary_postgres_database("quarry_pool") as url:
        engine = db.create_engine(url)
        pings = 0
        try:
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                adapter = type(raw.dbapi_connection)
            original = adapter.ping

            def counting_ping(self: object) -> None:
                nonlocal pings
                pings += 1
                original(self)

            monkeypatch.setattr(adapter, "ping", counting_ping)
            for _ in range(20):
                async with engine.connect() as conn:
                    await conn.scalar(text("SELECT 1"))
                await asyncio.sleep(0)
            assert pings == 0
            monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
            async with engine.connect() as conn:
                await conn.scalar(text("SELECT 1"))
            assert pings == 1  # once idle long enough, it is checked
        finally:
            await engine.dispose()
