"""The limiter shared through Redis (distributed mode): see `quarry.llm.limiter` for the model."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quarry.aio import cancel_and_wait
from quarry.llm.limiter import (
    CallPermit,
    LimitSettings,
    _QueuedLimiter,
    _wait_for_change,
)

log = structlog.get_logger(__name__)

#: Redis errors that mean "Redis is (briefly) unreachable": waiting callers retry rather than fail.
_REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


# --------------------------------------------------------------------------------------------
# Redis limiter (distributed mode)
#
# State, all under the key prefix (every key expires when the limiter has been idle a while):
#   holders        zset  call id -> expiry (ms, Redis clock). The concurrency semaphore; an entry
#                        whose process died stops counting at its expiry. Live holders renew.
#   queue          zset  call id -> ticket. Waiters in arrival order (one per process at a time).
#   queue_expiry   zset  call id -> expiry. A waiter that stops coming back loses its place.
#   queue_tokens   hash  call id -> estimated tokens of a waiter.
#   ticket         int   the ticket counter.
#   calls          zset  call id -> admission time. The sliding window of requests.
#   call_tokens    hash  call id -> tokens counted for that call (estimate, then actual).
#   window_tokens  int   sum of call_tokens over the window (kept so a check is O(1)).
# and a pub/sub channel on which every release is announced, so waiters wake at once.
#
# Times are Redis's own (TIME inside the scripts), so processes on machines with skewed clocks
# agree. Redis >= 5 replicates scripts by effects, which is what allows TIME before writes.

_ACQUIRE = """
local holders, queue, queue_expiry, queue_tokens = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ticket, calls, call_tokens, window_tokens = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local id = ARGV[1]
local estimate = tonumber(ARGV[2])
local concurrency, rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local window, holder_ttl = tonumber(ARGV[6]), tonumber(ARGV[7])
local waiter_ttl, key_ttl = tonumber(ARGV[8]), tonumber(ARGV[9])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function touch()
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, key_ttl) end
end

-- Holders and waiters whose process died stop counting once their expiry has passed.
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', queue_expiry, '-inf', now)) do
  redis.call('ZREM', queue, gone)
  redis.call('ZREM', queue_expiry, gone)
  redis.call('HDEL', queue_tokens, gone)
end

-- A retry after a lost reply: this call was admitted already; count nothing twice.
if redis.call('ZSCORE', holders, id) then return {1, 0} end

local rated = rpm > 0 or tpm > 0
local used_requests, used_tokens = 0, 0
if rated then
  -- Calls admitted a whole window ago no longer count.
  local horizon = now - window
  local old = redis.call('ZRANGEBYSCORE', calls, '-inf', horizon)
  if #old > 0 then
    local freed = 0
    for _, call in ipairs(old) do
      freed = freed + (tonumber(redis.call('HGET', call_tokens, call)) or 0)
      redis.call('HDEL', call_tokens, call)
    end
    redis.call('ZREMRANGEBYSCORE', calls, '-inf', horizon)
    redis.call('DECRBY', window_tokens, freed)
  end
  used_requests = redis.call('ZCARD', calls)
  if used_requests == 0 then
    -- An empty window resets the running sum, so it can never drift for long.
    redis.call('DEL', window_tokens, call_tokens)
  end
  used_tokens = tonumber(redis.call('GET', window_tokens)) or 0
end

-- Take (or keep) a place in the queue.
if not redis.call('ZSCORE', queue, id) then
  redis.call('ZADD', queue, redis.call('INCR', ticket), id)
  redis.call('HSET', queue_tokens, id, estimate)
end
redis.call('ZADD', queue_expiry, now + waiter_ttl, id)
touch()

-- Concurrency: the first `free` waiters in the queue may go.
local rank = redis.call('ZRANK', queue, id)
local free = concurrency - redis.call('ZCARD', holders)
if rank >= free then
  if free > 0 then return {0, -1} end
  -- Woken by a release; at the latest, when the first holder's expiry passes.
  local first = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
  return {0, tonumber(first[2]) - now}
end

-- Rates: admit the waiters ahead of this one, in order, on paper. This one may go only if all
-- of them fit too, so nobody overtakes a waiter the window cannot take yet (no starvation),
-- and admitting it never takes room one of them was about to use.
-- Waits are in ms; -1 means "until something changes" (a waiter ahead must be admitted first).
local function request_wait(must_leave)
  if must_leave > used_requests then return -1 end
  local entry = redis.call('ZRANGE', calls, must_leave - 1, must_leave - 1, 'WITHSCORES')
  return tonumber(entry[2]) + window - now
end
local function token_wait(target)
  local excess = used_tokens - target
  local offset = 0
  while true do
    local batch = redis.call('ZRANGE', calls, offset, offset + 99, 'WITHSCORES')
    if #batch == 0 then return -1 end
    for j = 1, #batch, 2 do
      excess = excess - (tonumber(redis.call('HGET', call_tokens, batch[j])) or 0)
      if excess <= 0 then return tonumber(batch[j + 1]) + window - now end
    end
    offset = offset + 100
  end
end
if rated then
  local requests, tokens = used_requests, used_tokens
  for _, waiter in ipairs(redis.call('ZRANGE', queue, 0, rank)) do
    local need = tonumber(redis.call('HGET', queue_tokens, waiter)) or 0
    local wait = 0
    if rpm > 0 and requests + 1 > rpm then
      wait = request_wait(requests + 1 - rpm)
    end
    -- A single request larger than the whole TPM could never fit: it goes as soon as the
    -- window holds no tokens at all, rather than waiting forever.
    if tpm > 0 and tokens > 0 and tokens + need > tpm then
      local pending = tokens - used_tokens
      local target = tpm - need - pending
      local token = -1
      if target >= 0 or pending == 0 then token = token_wait(math.max(target, 0)) end
      if wait == -1 or token == -1 then wait = -1 else wait = math.max(wait, token) end
    end
    if wait ~= 0 then return {0, wait} end
    requests = requests + 1
    tokens = tokens + need
  end
end

redis.call('ZREM', queue, id)
redis.call('ZREM', queue_expiry, id)
redis.call('HDEL', queue_tokens, id)
redis.call('ZADD', holders, now + holder_ttl, id)
if rated then
  redis.call('ZADD', calls, now, id)
  redis.call('HSET', call_tokens, id, estimate)
  redis.call('INCRBY', window_tokens, estimate)
end
touch()
return {1, 0}
"""

_RELEASE = """
local holders, call_tokens, window_tokens, calls = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, actual, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3]
redis.call('ZREM', holders, id)
-- The provider counted the request when it arrived, some time between admission and now: from
-- now on the call counts for a whole window (see LocalLimiter._release).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', calls, 'XX', now, id)
if actual >= 0 then
  -- A call that already left the window no longer counts, so there is nothing to correct.
  local counted = tonumber(redis.call('HGET', call_tokens, id))
  if counted then
    redis.call('HSET', call_tokens, id, actual)
    redis.call('INCRBY', window_tokens, actual - counted)
  end
end
redis.call('PUBLISH', channel, 'released')
return 1
"""

# Undo an admission the caller never learned of (cancelled or failed mid-acquire): the call was
# never made, so it leaves the queue, the holders and the windows.
_ABANDON = """
local holders, queue, queue_expiry, queue_tokens = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local calls, call_tokens, window_tokens = KEYS[5], KEYS[6], KEYS[7]
local id, channel = ARGV[1], ARGV[2]
redis.call('ZREM', holders, id)
redis.call('ZREM', queue, id)
redis.call('ZREM', queue_expiry, id)
redis.call('HDEL', queue_tokens, id)
local counted = tonumber(redis.call('HGET', call_tokens, id))
if redis.call('ZREM', calls, id) == 1 and counted then
  redis.call('HDEL', call_tokens, id)
  redis.call('DECRBY', window_tokens, counted)
end
redis.call('PUBLISH', channel, 'released')
return 1
"""

# Push the expiry of this process's live holders forward; report those that had expired anyway.
_RENEW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local expiry = now + tonumber(ARGV[1])
local lost = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], expiry, ARGV[i])
  else
    lost = lost + 1
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return lost
"""


@dataclass(frozen=True)
class _Keys:
    holders: str
    queue: str
    queue_expiry: str
    queue_tokens: str
    ticket: str
    calls: str
    call_tokens: str
    window_tokens: str
    channel: str

    @classmethod
    def under(cls, prefix: str) -> _Keys:
        return cls(**{name: f"{prefix}:{name}" for name in cls.__dataclass_fields__})


class RedisLimiter(_QueuedLimiter):
    """Limits shared by every process that uses the same Redis and key prefix.

    Every process should use the same `LimitSettings` for a prefix (each check applies the
    settings of the process making it).

    `holder_ttl_seconds`: a slot whose process died is freed this long after its last renewal;
    live holders renew every third of it, however long their call takes.
    `poll_interval_seconds`: the longest a waiter sleeps without re-checking (it is normally woken
    by a release at once, or sleeps exactly until the rate window has room).
    """

    def __init__(
        self,
        redis: Redis,
        settings: LimitSettings,
        *,
        key_prefix: str = "quarry:llm",
        holder_ttl_seconds: float = 30.0,
        poll_interval_seconds: float = 1.0,
        owns_client: bool = False,
    ) -> None:
        super().__init__(settings)
        if not holder_ttl_seconds > 0 or not poll_interval_seconds > 0:
            raise ValueError("holder_ttl_seconds and poll_interval_seconds must be positive")
        self._redis = redis
        self._owns_client = owns_client
        self._keys = _Keys.under(key_prefix)
        self._holder_ttl = holder_ttl_seconds
        self._poll_interval = poll_interval_seconds
        # A waiter re-checks at least every poll interval; missing a few means it has gone.
        waiter_ttl = 3 * poll_interval_seconds + 1.0
        self._ttl_args = (
            _ms(settings.window_seconds),
            _ms(holder_ttl_seconds),
            _ms(waiter_ttl),
            _ms(2 * max(settings.window_seconds, holder_ttl_seconds, waiter_ttl) + 1.0),
        )
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._release_script = redis.register_script(_RELEASE)
        self._abandon_script = redis.register_script(_ABANDON)
        self._renew_script = redis.register_script(_RENEW)
        self._held: set[str] = set()
        self._changed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def _admit(self, permit: CallPermit) -> None:
        k, s = self._keys, self.settings
        window_ms, holder_ttl_ms, waiter_ttl_ms, key_ttl_ms = self._ttl_args
        keys = [
            k.holders,
            k.queue,
            k.queue_expiry,
            k.queue_tokens,
            k.ticket,
            k.calls,
            k.call_tokens,
            k.window_tokens,
        ]
        args: list[str | int] = [
            permit.call_id,
            permit.estimated_tokens,
            s.concurrency,
            s.rpm or 0,
            s.tpm or 0,
            window_ms,
            holder_ttl_ms,
            waiter_ttl_ms,
            key_ttl_ms,
        ]
        failures = 0
        try:
            while True:
                # Taken before the check, so a release announced meanwhile is not missed.
                changed = self._changed
                try:
                    admitted, wait_ms = await self._acquire_script(keys=keys, args=args)
                except _REDIS_UNAVAILABLE as exc:
                    failures += 1
                    delay = min(0.05 * 2 ** min(failures, 5), 1.0) * random.uniform(0.8, 1.2)
                    log.warning("llm.limiter.redis_unavailable", error=str(exc), retry_in=delay)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                if admitted:
                    self._held.add(permit.call_id)
                    self._start_renewer()
                    return
                if self._start_listener():
                    continue  # re-check once we are subscribed, instead of trusting the poll
                await _wait_for_change(changed, self._sleep_for(int(wait_ms)))
        except BaseException:
            # Cancelled or failed mid-check: Redis may have admitted us without our hearing it.
            await self._finish(self._abandon(permit))
            raise

    def _sleep_for(self, wait_ms: int) -> float:
        """The script's wait (or the poll interval when it cannot know), with a little jitter."""
        if wait_ms < 0:
            return self._poll_interval
        seconds = wait_ms / 1000 + random.uniform(0.002, 0.01 + 0.02 * wait_ms / 1000)
        return min(seconds, self._poll_interval)

    async def _release(self, permit: CallPermit) -> None:
        self._held.discard(permit.call_id)
        await self._finish(self._release_in_redis(permit))
        self._notify()

    async def _release_in_redis(self, permit: CallPermit) -> None:
        k = self._keys
        actual = permit.actual_tokens
        try:
            await self._release_script(
                keys=[k.holders, k.call_tokens, k.window_tokens, k.calls],
                args=[permit.call_id, -1 if actual is None else actual, k.channel],
            )
        except RedisError as exc:
            # The holder entry is no longer renewed and expires by itself.
            log.warning("llm.limiter.release_failed", error=str(exc), call_id=permit.call_id)

    async def _abandon(self, permit: CallPermit) -> None:
        k = self._keys
        try:
            await self._abandon_script(
                keys=[
                    k.holders,
                    k.queue,
                    k.queue_expiry,
                    k.queue_tokens,
                    k.calls,
                    k.call_tokens,
                    k.window_tokens,
                ],
                args=[permit.call_id, k.channel],
            )
        except RedisError as exc:
            # Its queue place and any slot expire by themselves.
            log.warning("llm.limiter.abandon_failed", error=str(exc), call_id=permit.call_id)

    async def _finish(self, work: Coroutine[Any, Any, None]) -> None:
        """Run clean-up to the end even if the caller is cancelled again while it runs."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await asyncio.shield(task)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _start_listener(self) -> bool:
        """Subscribe to release announcements (once); True if it was just started."""
        if self._listener is not None and not self._listener.done():
            return False
        self._listener = asyncio.create_task(self._listen_for_releases())
        return True

    async def _listen_for_releases(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._keys.channel)
                while True:
                    # A finite wait: with timeout=None redis-py would apply the client's
                    # socket_timeout, if it has one, and fail an idle subscription.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30)
                    if message is not None:
                        self._notify()
            except (RedisError, OSError) as exc:
                log.warning("llm.limiter.subscription_lost", error=str(exc))
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            # Waiters re-check rather than trust a subscription that may have missed releases.
            self._notify()
            await asyncio.sleep(self._poll_interval)

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_holders())

    async def _renew_holders(self) -> None:
        _, holder_ttl_ms, _, key_ttl_ms = self._ttl_args
        while True:
            await asyncio.sleep(self._holder_ttl / 3)
            if not self._held:
                continue
            try:
                lost = await self._renew_script(
                    keys=[self._keys.holders], args=[holder_ttl_ms, key_ttl_ms, *self._held]
                )
            except (RedisError, OSError) as exc:
                log.warning("llm.limiter.renew_failed", error=str(exc))
                continue
            if lost:
                # Renewals were late (a blocked event loop, or Redis was away): for a moment
                # the fleet may run more calls than the limit.
                log.warning("llm.limiter.holders_expired", count=int(lost))

    async def aclose(self) -> None:
        await cancel_and_wait(self._listener, self._renewer)
        self._listener = self._renewer = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._owns_client:
            await self._redis.aclose()


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
