"""The LLM call limiter: concurrency, requests and tokens per window, crashes and cancellation.

The behavioural tests run against both limiters: the in-process one (embedded mode) and the
Redis one on the real Redis server (QUARRY_TEST_REDIS_URL, default redis://127.0.0.1:6379/0).
For Redis, each "process" is a `RedisLimiter` with its own client, sharing one key prefix; for
the in-process limiter, every "process" is the same instance. Windows are shortened to under a
second so the whole file runs in seconds. Without Redis the Redis cases are skipped locally and
fail in CI (CI=true).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from quarry.llm.limiter import CallLimiter, LimitSettings, LocalLimiter, create_limiter
from quarry.llm.redis_limiter import RedisLimiter
from tests.support.redis import redis_test_url, require_redis

REDIS_URL = redis_test_url()
BACKEND = Path(__file__).resolve().parents[2] / "backend"
# Scheduling noise allowed when comparing measured times with the limits.
SLACK = 0.05


def _require_redis() -> None:
    require_redis()


class Fleet:
    """Limiters sharing one budget, one per simulated process."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.prefix = f"quarry-test:limiter:{uuid.uuid4().hex}"
        self._limiters: list[CallLimiter] = []

    def limiters(self, settings: LimitSettings, count: int = 2) -> list[CallLimiter]:
        if self.kind == "local":
            shared = LocalLimiter(settings)
            self._limiters.append(shared)
            return [shared] * count
        made: list[CallLimiter] = [
            RedisLimiter(
                Redis.from_url(REDIS_URL), settings, key_prefix=self.prefix, owns_client=True
            )
            for _ in range(count)
        ]
        self._limiters.extend(made)
        return made

    async def close(self) -> None:
        for limiter in self._limiters:
            await limiter.aclose()
        if self.kind == "redis":
            async with Redis.from_url(REDIS_URL) as client:
                keys = [key async for key in client.scan_iter(match=f"{self.prefix}:*")]
                if keys:
                    await client.delete(*keys)


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def fleet(request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    if request.param == "redis":
        _require_redis()
    fleet = Fleet(request.param)
    try:
        yield fleet
    finally:
        await fleet.close()


async def _admitted_at(limiter: CallLimiter, tokens: int = 1, actual: int | None = None) -> float:
    """Take a slot, report usage, release; when the slot was granted."""
    async with limiter.slot(tokens) as permit:
        granted = time.monotonic()
        if actual is not None:
            permit.record_usage(actual)
    return granted


async def _acquires_within(limiter: CallLimiter, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds), limiter.slot(1):
            return True
    except TimeoutError:
        return False


# --- concurrency ---------------------------------------------------------------------------


async def test_concurrency_is_shared_by_every_process(fleet: Fleet) -> None:
    a, b = fleet.limiters(LimitSettings(concurrency=3))
    active = peak = 0

    async def call(limiter: CallLimiter) -> None:
        nonlocal active, peak
        async with limiter.slot(10):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.03)
            active -= 1

    started = time.monotonic()
    await asyncio.gather(*(call(a if i % 2 else b) for i in range(24)))
    assert peak == 3
    # 24 calls of 30 ms, 3 at a time: ~240 ms (waiters are woken by releases, not by polling).
    assert time.monotonic() - started < 60  # a hang guard, not a timing


async def test_unlimited_rates_only_bound_concurrency(fleet: Fleet) -> None:
    (limiter,) = fleet.limiters(LimitSettings(concurrency=50, rpm=None, tpm=None), count=1)
    started = time.monotonic()
    await asyncio.gather(*(_admitted_at(limiter, 10**9) for _ in range(200)))
    assert time.monotonic() - started < 60  # a hang guard: 200 admissions take ~0.1-0.3 s


async def test_a_busy_process_does_not_starve_another(fleet: Fleet) -> None:
    busy, quiet = fleet.limiters(LimitSettings(concurrency=1))
    stop = asyncio.Event()

    async def hammer() -> None:
        while not stop.is_set():
            async with busy.slot(1):
                await asyncio.sleep(0.01)

    hammers = [asyncio.create_task(hammer()) for _ in range(4)]
    await asyncio.sleep(0.05)
    try:
        # Four callers queued before it, 10 ms each: it goes within a few turns.
        assert await _acquires_within(quiet, 3.0)  # starvation would be forever
    finally:
        stop.set()
        await asyncio.gather(*hammers)


# --- requests per window -------------------------------------------------------------------


async def test_requests_per_window_are_never_exceeded_and_fully_used(fleet: Fleet) -> None:
    window = 0.6
    a, b = fleet.limiters(LimitSettings(concurrency=10, rpm=4, window_seconds=window))
    started = time.monotonic()
    times = sorted(await asyncio.gather(*(_admitted_at(a if i % 2 else b) for i in range(10))))
    offsets = [t - started for t in times]
    # 4 at once, 4 one window later, 2 two windows later.
    assert all(t < window / 2 for t in offsets[:4]), offsets
    for first, fifth in zip(times, times[4:], strict=False):
        assert fifth - first >= window - SLACK, offsets
    # The waiters slept until the window had room (a hang guard: 10 × the expected 2 windows).
    assert offsets[-1] < 20 * window, offsets


# --- tokens per window ---------------------------------------------------------------------


async def test_tokens_per_window_follow_the_reported_usage(fleet: Fleet) -> None:
    window = 0.8
    a, b = fleet.limiters(LimitSettings(concurrency=10, tpm=1000, window_seconds=window))
    t_a = await _admitted_at(a, tokens=600, actual=100)
    # 100 + 800 fits only because the 600-token estimate was corrected down to 100.
    t_b = await _admitted_at(b, tokens=800)
    assert t_b - t_a < window / 2
    # Estimated 50, really 300: the window now holds 1200 tokens.
    await _admitted_at(a, tokens=50, actual=300)
    # 40 more would have fitted the estimates (990); after the correction it must wait until the
    # first two calls leave the window.
    t_d = await _admitted_at(b, tokens=40)
    assert window - SLACK <= t_d - t_a < 10 * window


async def test_a_request_larger_than_the_tpm_goes_when_the_window_is_empty(fleet: Fleet) -> None:
    window = 0.5
    a, b = fleet.limiters(LimitSettings(concurrency=10, tpm=100, window_seconds=window))
    started = time.monotonic()
    t_big = await _admitted_at(a, tokens=500)  # empty window: let through, not stuck forever
    assert t_big - started < window / 2
    t_small = await _admitted_at(b, tokens=10)  # 500 + 10 > 100: waits for the big one to leave
    assert window - SLACK <= t_small - t_big < 10 * window
    t_again = await _admitted_at(a, tokens=300)  # oversized again: waits until the window is empty
    assert window - SLACK <= t_again - t_small < 10 * window


async def test_a_large_request_is_not_starved_by_small_ones(fleet: Fleet) -> None:
    window = 0.4
    a, b = fleet.limiters(LimitSettings(concurrency=10, tpm=100, window_seconds=window))
    stop = asyncio.Event()

    async def small_calls(limiter: CallLimiter) -> None:
        while not stop.is_set():
            await _admitted_at(limiter, tokens=30)

    smalls = [asyncio.create_task(small_calls(lim)) for lim in (a, b, a)]
    await asyncio.sleep(0.1)
    try:
        started = time.monotonic()
        # It needs the window (nearly) empty. Only calls already queued ahead of it go first
        # (in its own process, and at most one from each other process, each waiting up to a
        # window for room); later ones queue behind it instead of overtaking it forever.
        await _admitted_at(b, tokens=95)
        assert time.monotonic() - started < 300 * window  # a hang guard: starved is forever
    finally:
        stop.set()
        await asyncio.gather(*smalls)


# --- cancellation --------------------------------------------------------------------------


async def test_a_cancelled_waiter_holds_nothing(fleet: Fleet) -> None:
    a, b = fleet.limiters(LimitSettings(concurrency=1, rpm=2, window_seconds=30))
    async with a.slot(1):
        waiter = asyncio.create_task(_admitted_at(b))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    # The cancelled waiter neither kept its place in the queue nor used the second request.
    assert await _acquires_within(a, 2.0)


async def test_a_cancelled_holder_releases_its_slot(fleet: Fleet) -> None:
    a, b = fleet.limiters(LimitSettings(concurrency=1))
    entered = asyncio.Event()

    async def hold_forever() -> None:
        async with a.slot(1):
            entered.set()
            await asyncio.sleep(3600)

    holder = asyncio.create_task(hold_forever())
    await entered.wait()
    assert not await _acquires_within(b, 0.1)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert await _acquires_within(b, 2.0)


async def test_cancellation_at_any_moment_leaks_no_slot(fleet: Fleet) -> None:
    a, b = fleet.limiters(LimitSettings(concurrency=2, tpm=10_000, window_seconds=30))
    rng = random.Random(7)

    async def impatient_call(limiter: CallLimiter, patience: float, work: float) -> None:
        try:
            async with asyncio.timeout(patience), limiter.slot(100):
                await asyncio.sleep(work)
        except TimeoutError:
            pass

    await asyncio.gather(
        *(
            impatient_call(a if i % 2 else b, rng.uniform(0, 0.02), rng.uniform(0, 0.01))
            for i in range(60)
        )
    )
    # Both slots are free, and cancelled calls gave back their tokens: 2 × 4000 more fit.
    await asyncio.wait_for(
        asyncio.gather(_admitted_at(a, tokens=4000), _admitted_at(b, tokens=4000)), 3.0
    )


def test_usage_is_recorded_inside_the_slot() -> None:
    async def record_late() -> None:
        limiter = LocalLimiter(LimitSettings(concurrency=1, tpm=10))
        async with limiter.slot(5) as permit:
            pass
        permit.record_usage(7)

    with pytest.raises(RuntimeError, match="before the slot is released"):
        asyncio.run(record_late())


# --- Redis only: crashed processes, key hygiene ---------------------------------------------

_HOLD_AND_WAIT = """
import asyncio, sys
from redis.asyncio import Redis
from quarry.llm.limiter import LimitSettings
from quarry.llm.redis_limiter import RedisLimiter

async def main() -> None:
    url, prefix, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    limiter = RedisLimiter(
        Redis.from_url(url), LimitSettings(concurrency=1), key_prefix=prefix,
        holder_ttl_seconds=ttl,
    )
    async with limiter.slot(1):
        print("holding", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.redis
async def test_a_crashed_holder_stops_counting_after_its_expiry() -> None:
    _require_redis()
    fleet = Fleet("redis")
    ttl = 0.6
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLD_AND_WAIT,
        REDIS_URL,
        fleet.prefix,
        str(ttl),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(BACKEND)},
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 60)
        assert line.strip() == b"holding"
        (limiter,) = fleet.limiters(LimitSettings(concurrency=1), count=1)
        # Alive, it renews its slot: still held well after one expiry period.
        assert not await _acquires_within(limiter, 2 * ttl)
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        killed = time.monotonic()
        async with asyncio.timeout(10 * ttl), limiter.slot(1):
            waited = time.monotonic() - killed
        assert waited <= 10 * ttl
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
        await fleet.close()


@pytest.mark.redis
async def test_redis_state_expires_when_the_limiter_is_idle() -> None:
    _require_redis()
    fleet = Fleet("redis")
    try:
        a, b = fleet.limiters(LimitSettings(concurrency=1, rpm=100, tpm=1000))
        async with a.slot(10):
            waiter = asyncio.create_task(_admitted_at(b, 10))
            await asyncio.sleep(0.05)
        await waiter
        async with Redis.from_url(REDIS_URL) as client:
            keys = [key async for key in client.scan_iter(match=f"{fleet.prefix}:*")]
            assert keys
            for key in keys:
                # Nothing is left behind forever under a prefix nobody uses any more.
                assert await client.pttl(key) > 0, key
    finally:
        await fleet.close()


# --- settings and construction -------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"concurrency": 0},
        {"concurrency": 1, "rpm": 0},
        {"concurrency": 1, "tpm": -5},
        {"concurrency": 1, "window_seconds": 0},
    ],
)
def test_nonsense_limits_are_refused(values: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        LimitSettings(**values)


async def test_create_limiter_picks_redis_only_when_configured() -> None:
    settings = LimitSettings(concurrency=2, rpm=60, tpm=None)
    local = create_limiter(settings, None)
    assert isinstance(local, LocalLimiter)
    shared = create_limiter(settings, REDIS_URL, key_prefix="quarry-test:unused")
    assert isinstance(shared, RedisLimiter)
    await shared.aclose()
