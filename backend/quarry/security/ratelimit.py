"""Rate limits for sign-in attempts and API calls: in-process, or shared through Redis.

Both limiters run the same algorithm, GCRA (the "generic cell rate algorithm", a token bucket
kept as one timestamp per key): a key may make `per_minute` requests at once, then one more
every `60 / per_minute` seconds. A refused request does not count, so a client that keeps
hammering gets in again at the steady rate, and the wait it is told (`Retry-After`) is exact.

Embedded mode keeps the timestamps in a dict (one process serves everything). Distributed
mode (QUARRY_REDIS_URL) keeps them in Redis, updated by one Lua script per request that reads
Redis's own clock, so every API process enforces one shared limit. If Redis cannot be reached
the limiter lets requests through (and logs it): a Redis outage must not lock every user out;
the readiness probe already reports Redis as down.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
import structlog
from fastapi import Request
from redis.exceptions import RedisError

from quarry.errors import TooManyRequests
from quarry.settings import Settings

log = structlog.get_logger(__name__)

PERIOD_SECONDS = 60.0
#: Keys the in-process limiter keeps at most; beyond it, idle keys are dropped first.
MAX_MEMORY_KEYS = 100_000
#: How long a Redis command may take before the limiter gives up (and lets the request in).
REDIS_TIMEOUT_SECONDS = 1.0


class RateLimiter(Protocol):
    async def hit(self, key: str, per_minute: int) -> float:
        """Count one request for `key`: 0.0 if allowed, else the seconds until one would be."""
        ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    """GCRA in a dict, for a single process (embedded mode)."""

    def __init__(
        self, *, max_keys: int = MAX_MEMORY_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        # key → theoretical arrival time of the next request; ordered by last update.
        self._tat: OrderedDict[str, float] = OrderedDict()

    async def hit(self, key: str, per_minute: int) -> float:
        if per_minute <= 0:
            return 0.0
        now = self._clock()
        new_tat = max(self._tat.get(key, now), now) + PERIOD_SECONDS / per_minute
        wait = new_tat - PERIOD_SECONDS - now
        if wait > 0:
            return wait
        self._tat[key] = new_tat
        self._tat.move_to_end(key)
        if len(self._tat) > self._max_keys:
            self._forget_idle(now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        """Drop keys whose bucket is full again (they are as good as new), then the oldest."""
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]
        while len(self._tat) > self._max_keys:
            self._tat.popitem(last=False)

    async def close(self) -> None:
        self._tat.clear()


# KEYS[1]: the bucket; ARGV[1]: emission interval (µs); ARGV[2]: period (µs).
# Returns 0 when allowed, else the wait in µs. Redis's clock, so API processes agree.
_GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - period - now
if wait > 0 then return math.ceil(wait) end
local ttl = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl)
return 0
"""


class RedisRateLimiter:
    """GCRA in Redis, shared by every API process (distributed mode)."""

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self._prefix = prefix
        self._script = self._redis.register_script(_GCRA_SCRIPT)
        self._last_warning = -math.inf

    def key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    async def hit(self, key: str, per_minute: int) -> float:
        if per_minute <= 0:
            return 0.0
        period_us = int(PERIOD_SECONDS * 1_000_000)
        try:
            wait_us = await self._script(
                keys=[self.key(key)], args=[period_us // per_minute, period_us]
            )
        except (RedisError, OSError) as exc:
            self._warn_unavailable(exc)
            return 0.0
        return int(wait_us) / 1_000_000

    def _warn_unavailable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning > PERIOD_SECONDS:  # once a minute, not once a request
            self._last_warning = now
            log.warning("ratelimit.redis_unavailable", error_type=type(exc).__name__)

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)


def create_rate_limiter(settings: Settings) -> MemoryRateLimiter | RedisRateLimiter:
    """Redis-backed in distributed mode, in-process otherwise."""
    if settings.redis_url:
        # Under the queue's name: deployments sharing one Redis already differ there.
        return RedisRateLimiter(settings.redis_url, prefix=f"{settings.redis_queue}:ratelimit:")
    return MemoryRateLimiter()


def client_ip(request: Request) -> str:
    """The client's address (uvicorn's proxy-header handling has already applied)."""
    return request.client.host if request.client else "unknown"


def _limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


async def limit_sign_in(request: Request, settings: Settings, email: str) -> None:
    """Count a sign-in attempt against the client's IP and the account; 429 past either.

    Checked before the password is, so a flood of guesses costs no argon2 work. Unknown
    emails are limited exactly like real ones: a difference would reveal which exist.
    """
    limiter = _limiter(request)
    ip = client_ip(request)
    wait = await limiter.hit(f"signin:ip:{ip}", settings.login_ip_attempts_per_minute)
    if not wait:
        wait = await limiter.hit(f"signin:account:{email}", settings.login_attempts_per_minute)
    if wait:
        log.warning("auth.sign_in.rate_limited", ip=ip, retry_after=round(wait, 1))
        raise TooManyRequests("Too many sign-in attempts.", retry_after=wait)


async def limit_api_call(request: Request, settings: Settings, user_id: object) -> None:
    """Count one API request for the signed-in user; 429 past QUARRY_API_REQUESTS_PER_MINUTE."""
    wait = await _limiter(request).hit(f"api:user:{user_id}", settings.api_requests_per_minute)
    if wait:
        raise TooManyRequests("Too many requests.", retry_after=wait)


async def limit_password_link(request: Request, settings: Settings) -> None:
    """Count a use of a set-password link against the client's IP, with the sign-ins (a
    link's token is a credential too); 429 past the limit."""
    ip = client_ip(request)
    wait = await _limiter(request).hit(f"signin:ip:{ip}", settings.login_ip_attempts_per_minute)
    if wait:
        log.warning("auth.password_link.rate_limited", ip=ip, retry_after=round(wait, 1))
        raise TooManyRequests("Too many sign-in attempts.", retry_after=wait)
