"""Readiness stays honest under load: busy is not dead, and a dead database is named quickly."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quarry import health
from quarry.app import create_app
from quarry.settings import PasswordHashProfile
from tests.conftest import make_settings
from tests.support.api import PASSWORD, running_app, sign_up

EMAIL = "busy@example.org"
#: Sign-ins at once, with the standard (0.2 s) argon2 parameters: on the event loop they
#: would stall it for seconds, long enough for the probe's database check to time out.
SIGN_INS = 16
#: A hang guard, not a measurement: the burst takes a few seconds.
HANG_GUARD_SECONDS = 120


async def test_ready_answers_200_throughout_a_burst_of_sign_ins(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        None,
        password_hash_profile=PasswordHashProfile.STANDARD,
        login_attempts_per_minute=0,  # the burst is one account, from one address
        login_ip_attempts_per_minute=0,
    )
    async with running_app(settings) as (app, client):
        await sign_up(app, client, EMAIL)
        burst_over = asyncio.Event()
        probes: list[tuple[int, Any, bool]] = []  # (status, body, answered during the burst)

        async def poll_ready() -> None:
            while not burst_over.is_set():
                response = await client.get("/health/ready")
                probes.append((response.status_code, response.json(), not burst_over.is_set()))
                await asyncio.sleep(0.01)

        async def burst() -> list[int]:
            try:
                responses = await asyncio.gather(
                    *(
                        client.post(
                            "/api/v1/auth/token", data={"username": EMAIL, "password": PASSWORD}
                        )
                        for _ in range(SIGN_INS)
                    )
                )
            finally:
                burst_over.set()
            return [r.status_code for r in responses]

        async with asyncio.timeout(HANG_GUARD_SECONDS):
            prober = asyncio.create_task(poll_ready())
            await asyncio.sleep(0)  # the first probe goes out before the sign-ins
            sign_ins = await burst()
            await prober

    assert sign_ins == [200] * SIGN_INS
    assert any(during for _status, _body, during in probes), "no probe overlapped the burst"
    not_ready = [(status, body) for status, body, _during in probes if status != 200]
    assert not not_ready, f"{len(not_ready)} of {len(probes)} probes failed: {not_ready[:3]}"


@pytest.fixture
def silent_database() -> Iterator[str]:
    """A PostgreSQL URL whose "server" accepts connections and then never says a word (a
    hung database, or a network path that drops packets one way)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes the handshakes; nobody ever answers
        yield f"postgresql+asyncpg://quarry@127.0.0.1:{listener.getsockname()[1]}/quarry"


async def test_ready_is_503_naming_a_database_that_does_not_answer(
    tmp_path: Path, silent_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "DATABASE_TIMEOUT_SECONDS", 0.2)
    settings = make_settings(tmp_path, None, database_url=silent_database)
    app = create_app(settings)  # no schema to create: the database never answers
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            response = await client.get("/health/ready")
        live = await client.get("/health/live")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "unavailable: no answer within 0.2 s"},
    }
    assert live.status_code == 200  # alive, only not ready: nothing to restart
