"""Rate limits: sign-in attempts per account and per client IP, API calls per user.

In-process in embedded mode; shared through the real Redis in distributed mode, where two
API processes must enforce one limit between them.
"""

from __future__ import annotations

import asyncio
import math
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI

from quarry.app import create_app
from quarry.auth.service import create_user
from quarry.db import session_scope
from quarry.security.ratelimit import MemoryRateLimiter, RedisRateLimiter
from quarry.settings import Settings
from tests.conftest import make_settings
from tests.support.api import PASSWORD, create_schema, sign_up
from tests.support.fake_llm import FakeLLM

API = "/api/v1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    await create_schema(settings.database_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def client_for(app: FastAPI, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://quarry.test")


async def add_user(app: FastAPI, email: str) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        await create_user(session, app.state.settings, email, PASSWORD)


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(f"{API}/auth/token", data={"username": email, "password": password})


def assert_rate_limited(response: httpx.Response, *, max_wait: float) -> int:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "rate_limited"
    assert "Try again in" in body["detail"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= math.ceil(max_wait)
    assert response.headers.get("x-request-id")
    return retry_after


# -- the algorithm -------------------------------------------------------------------------


async def test_memory_limiter_allows_a_burst_then_the_steady_rate() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    assert [await limiter.hit("k", 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await limiter.hit("k", 3)
    assert wait == pytest.approx(20.0)  # one more every 60/3 s
    assert await limiter.hit("other", 3) == 0.0  # keys are independent
    clock.now += 10
    assert await limiter.hit("k", 3) == pytest.approx(10.0)  # refusals do not count
    clock.now += 10
    assert await limiter.hit("k", 3) == 0.0
    assert await limiter.hit("k", 3) > 0
    clock.now += 60
    assert [await limiter.hit("k", 3) for _ in range(3)] == [0.0, 0.0, 0.0]


async def test_memory_limiter_zero_means_no_limit_and_memory_stays_bounded() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock, max_keys=100)
    assert all([await limiter.hit("k", 0) == 0.0 for _ in range(1000)])
    for n in range(1000):  # an attacker cycling through addresses or emails
        await limiter.hit(f"ip:{n}", 5)
        clock.now += 0.001
    assert len(limiter._tat) <= 100


# -- sign-in -------------------------------------------------------------------------------


async def test_sign_in_attempts_are_limited_per_account(tmp_path: Path, fake_llm: FakeLLM) -> None:
    settings = make_settings(tmp_path, fake_llm, login_attempts_per_minute=3)
    async with running_app(settings) as app, client_for(app) as client:
        await add_user(app, "victim@example.org")
        await add_user(app, "bystander@example.org")
        for _ in range(3):
            assert (await sign_in(client, "victim@example.org", "guess")).status_code == 401
        assert_rate_limited(await sign_in(client, "victim@example.org", "guess"), max_wait=20)
        # Even the right password waits: the limit is checked before any password is.
        assert_rate_limited(await sign_in(client, "Victim@Example.org "), max_wait=20)
        # Another account from the same address is not affected.
        assert (await sign_in(client, "bystander@example.org")).status_code == 200
        # Unknown accounts are limited the same way (no hint which emails exist).
        for _ in range(3):
            assert (await sign_in(client, "nobody@example.org", "guess")).status_code == 401
        assert_rate_limited(await sign_in(client, "nobody@example.org", "guess"), max_wait=20)


async def test_sign_in_attempts_are_limited_per_client_ip(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    settings = make_settings(tmp_path, fake_llm, login_ip_attempts_per_minute=4)
    async with running_app(settings) as app:
        await add_user(app, "user@example.org")
        async with (
            client_for(app, "203.0.113.7") as attacker,
            client_for(app, "198.51.100.2") as user,
        ):
            for n in range(4):  # password spraying: a different account each time
                response = await sign_in(attacker, f"user{n}@example.org", "Password1")
                assert response.status_code == 401
            assert_rate_limited(await sign_in(attacker, "user@example.org"), max_wait=15)
            # The real user, elsewhere, signs in.
            assert (await sign_in(user, "user@example.org")).status_code == 200


async def test_default_limits_leave_normal_use_alone(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    settings: Settings = app.state.settings
    assert settings.login_attempts_per_minute >= 5
    assert settings.api_requests_per_minute >= 600  # a busy web UI polls
    headers = await sign_up(app, client, "busy@example.org")
    for _ in range(100):
        assert (await client.get(f"{API}/users/me", headers=headers)).status_code == 200


# -- API calls -----------------------------------------------------------------------------


async def test_api_calls_are_limited_per_user(tmp_path: Path, fake_llm: FakeLLM) -> None:
    settings = make_settings(tmp_path, fake_llm, api_requests_per_minute=5)
    async with running_app(settings) as app, client_for(app) as client:
        heavy = await sign_up(app, client, "heavy@example.org")
        light = await sign_up(app, client, "light@example.org")
        for _ in range(5):
            assert (await client.get(f"{API}/projects", headers=heavy)).status_code == 200
        retry_after = assert_rate_limited(
            await client.get(f"{API}/projects", headers=heavy), max_wait=12
        )
        assert retry_after == 12
        assert_rate_limited(
            await client.post(f"{API}/projects", json={"name": "x"}, headers=heavy), max_wait=12
        )
        # Another user, and the open endpoints, are not affected.
        assert (await client.get(f"{API}/projects", headers=light)).status_code == 200
        assert (await client.get("/health/live")).status_code == 200


async def test_zero_turns_the_limits_off(tmp_path: Path, fake_llm: FakeLLM) -> None:
    settings = make_settings(
        tmp_path,
        fake_llm,
        api_requests_per_minute=0,
        login_attempts_per_minute=0,
        login_ip_attempts_per_minute=0,
    )
    async with running_app(settings) as app, client_for(app) as client:
        await add_user(app, "free@example.org")
        for _ in range(30):
            assert (await sign_in(client, "free@example.org", "guess")).status_code == 401
        headers = await sign_up(app, client, "free2@example.org")
        for _ in range(30):
            assert (await client.get(f"{API}/users/me", headers=headers)).status_code == 200


# -- distributed mode: the real Redis ------------------------------------------------------


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"quarry-test:{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.mark.redis
async def test_redis_limiter_is_one_limit_shared_by_every_process(
    redis_url: str, redis_prefix: str
) -> None:
    first = RedisRateLimiter(redis_url, prefix=f"{redis_prefix}:rl:")
    second = RedisRateLimiter(redis_url, prefix=f"{redis_prefix}:rl:")  # another API process
    try:
        results = [await (first if n % 2 else second).hit("k", 4) for n in range(4)]
        assert results == [0.0] * 4
        wait = await first.hit("k", 4)
        assert 14.0 < wait <= 15.0
        assert 14.0 < await second.hit("k", 4) <= 15.0
        assert await second.hit("other", 4) == 0.0
        assert await first.hit("k", 0) == 0.0
        # The bucket expires by itself once it is full again: Redis holds no garbage.
        raw = redis.Redis.from_url(redis_url)
        try:
            ttl_ms = raw.pttl(f"{redis_prefix}:rl:k")
        finally:
            raw.close()
        assert 0 < ttl_ms <= 60_000
    finally:
        await first.close()
        await second.close()


@pytest.mark.redis
async def test_redis_limiter_lets_requests_through_when_redis_is_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{port}/0", prefix="x:")
    try:
        async with asyncio.timeout(60):  # a hang guard: each hit gives up on Redis at once
            assert await limiter.hit("k", 1) == 0.0
            assert await limiter.hit("k", 1) == 0.0
    finally:
        await limiter.close()


@pytest.mark.redis
async def test_distributed_api_processes_share_the_sign_in_limit(
    tmp_path: Path, fake_llm: FakeLLM, redis_url: str, redis_prefix: str
) -> None:
    def settings_for(name: str) -> Settings:
        return make_settings(
            tmp_path / name,
            fake_llm,
            database_url=f"sqlite+aiosqlite:///{tmp_path}/shared.db",
            redis_url=redis_url,
            redis_queue=redis_prefix,
            login_attempts_per_minute=4,
        )

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running_app(settings_for("a")) as api_a, running_app(settings_for("b")) as api_b:
        assert type(api_a.state.rate_limiter) is RedisRateLimiter
        await add_user(api_a, "target@example.org")
        async with client_for(api_a) as a, client_for(api_b) as b:
            statuses = [
                (await sign_in(a if n % 2 else b, "target@example.org", "guess")).status_code
                for n in range(4)
            ]
            assert statuses == [401] * 4
            # The fifth attempt is refused, whichever process it reaches.
            assert_rate_limited(await sign_in(a, "target@example.org", "guess"), max_wait=15)
            assert_rate_limited(await sign_in(b, "target@example.org"), max_wait=15)
