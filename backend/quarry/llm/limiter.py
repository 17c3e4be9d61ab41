"""Keep LLM calls inside the provider's limits: concurrent calls, requests and tokens per minute.

    limiter = create_limiter(LimitSettings(concurrency=8, rpm=500, tpm=200_000), redis_url)
    async with limiter.slot(estimated_tokens=1_200) as permit:
        reply = await call_the_model()
        permit.record_usage(reply.tokens_in + reply.tokens_out)

`slot` waits until a call may start within every limit. Embedded mode uses `LocalLimiter` (one
process, asyncio). Distributed mode uses `RedisLimiter`: every process that uses the same Redis
and key prefix shares one budget, so a fleet of workers stays inside the provider's limits
instead of provoking 429 storms.

Rates are sliding windows (default 60 s): in no window of that length do the admitted calls
exceed `rpm` requests or `tpm` tokens. A call counts from its admission until a whole window
after it ended, since the provider counts it at some unknown moment in between. That is
safe, also against providers that refill a token bucket continuously; it does allow the whole
minute's budget to start in a burst, which a provider that "quantizes" its limit to a few
seconds could still refuse.

Ordering, within a process and across processes, is first come first served (a queue), so a
large request is never starved by a stream of small ones, and one process cannot starve another
by always being the first to notice that a slot became free.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis


@dataclass(frozen=True)
class LimitSettings:
    """The provider's limits. `None` means unlimited."""

    concurrency: int
    rpm: int | None = None
    tpm: int | None = None
    #: Length of the rate window. The provider's limits are per minute; tests shorten it.
    window_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rpm is not None and self.rpm < 1:
            raise ValueError("rpm must be at least 1, or None for unlimited")
        if self.tpm is not None and self.tpm < 1:
            raise ValueError("tpm must be at least 1, or None for unlimited")
        if not self.window_seconds > 0:
            raise ValueError("window_seconds must be positive")

    @property
    def rated(self) -> bool:
        return self.rpm is not None or self.tpm is not None


class CallPermit:
    """Permission for one call, valid inside `slot()`; takes the provider's real token count."""

    __slots__ = ("_actual_tokens", "_released", "call_id", "estimated_tokens")

    def __init__(self, call_id: str, estimated_tokens: int) -> None:
        self.call_id = call_id
        self.estimated_tokens = estimated_tokens
        self._actual_tokens: int | None = None
        self._released = False

    @property
    def actual_tokens(self) -> int | None:
        return self._actual_tokens

    def record_usage(self, actual_tokens: int) -> None:
        """Replace the estimate with the provider's count (prompt + completion tokens).

        The token window is corrected when the slot is released, so call this inside the
        `async with` block. The last value recorded wins.
        """
        if actual_tokens < 0:
            raise ValueError("actual_tokens must not be negative")
        if self._released:
            raise RuntimeError("record_usage() must be called before the slot is released")
        self._actual_tokens = actual_tokens


class CallLimiter(Protocol):
    def slot(self, estimated_tokens: int) -> AbstractAsyncContextManager[CallPermit]:
        """Wait until a call may start within all limits; hold a concurrency slot while inside."""
        ...

    async def aclose(self) -> None:
        """Stop background work (and close the Redis client the limiter created)."""
        ...


class _QueuedLimiter(CallLimiter):
    """`slot()` for both limiters: a local FIFO gate in front of the shared admission check.

    Only the coroutine at the head of the gate checks the limits (locally or in Redis); the
    others wait their turn in arrival order (asyncio.Lock wakes waiters first in, first out).
    So a process competes with one waiter at a time, and waking up costs one check, not one
    per waiting coroutine.
    """

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self._gate = asyncio.Lock()

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[CallPermit]:
        if estimated_tokens < 0:
            raise ValueError("estimated_tokens must not be negative")
        permit = CallPermit(uuid.uuid4().hex, estimated_tokens)
        # Cancelled while queued at the gate: nothing is held. `_admit` cleans up after itself.
        async with self._gate:
            await self._admit(permit)
        try:
            yield permit
        finally:
            permit._released = True
            await self._release(permit)

    @abstractmethod
    async def _admit(self, permit: CallPermit) -> None:
        """Return once the call holds a slot and counts in the windows; cancelled: hold nothing."""

    @abstractmethod
    async def _release(self, permit: CallPermit) -> None:
        """Free the slot and apply the permit's token correction; must complete when cancelled."""


async def _wait_for_change(changed: asyncio.Event, at_most: float | None) -> None:
    """Until `changed` fires, or `at_most` seconds have passed (None: no limit)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(at_most):
            await changed.wait()


# --------------------------------------------------------------------------------------------
# In-process limiter (embedded mode)


@dataclass(eq=False)  # identity: `deque.remove` must find this entry, not an equal one
class _WindowEntry:
    admitted_at: float
    tokens: int
    in_window: bool = True


class LocalLimiter(_QueuedLimiter):
    """The same limits for one process: a slot count plus sliding windows of requests and tokens."""

    def __init__(self, settings: LimitSettings) -> None:
        super().__init__(settings)
        self._active = 0
        self._window: deque[_WindowEntry] = deque()
        self._window_tokens = 0
        self._held: dict[str, _WindowEntry] = {}
        # Replaced every time it fires, so a waiter keeps the event it saw before checking.
        self._changed = asyncio.Event()

    @property
    def active(self) -> int:
        """Calls holding a slot right now."""
        return self._active

    async def _admit(self, permit: CallPermit) -> None:
        while True:
            now = time.monotonic()
            self._forget_old_calls(now)
            wait = self._seconds_to_wait(permit.estimated_tokens, now)
            if wait == 0:
                break
            # No await between the check and taking the event: no change can slip in unseen.
            await _wait_for_change(self._changed, None if math.isinf(wait) else wait)
        self._active += 1
        if self.settings.rated:
            entry = _WindowEntry(now, permit.estimated_tokens)
            self._window.append(entry)
            self._window_tokens += entry.tokens
            self._held[permit.call_id] = entry

    async def _release(self, permit: CallPermit) -> None:
        # Synchronous on purpose: a cancellation cannot interrupt it.
        self._active -= 1
        entry = self._held.pop(permit.call_id, None)
        actual = permit.actual_tokens
        # A call that already left the window no longer counts, so there is nothing to correct.
        if entry is not None and entry.in_window:
            if actual is not None:
                self._window_tokens += actual - entry.tokens
                entry.tokens = actual
            # The provider counted the request when it arrived, somewhere between admission
            # and now; it counts here for a whole window from now, so however long the request
            # took to get there, the provider never sees more than the limit in any window.
            # `now` is the latest time in the window, so moving the entry to the end keeps it
            # ordered.
            self._window.remove(entry)
            entry.admitted_at = time.monotonic()
            self._window.append(entry)
        self._notify()

    async def aclose(self) -> None:
        return None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _forget_old_calls(self, now: float) -> None:
        horizon = now - self.settings.window_seconds
        while self._window and self._window[0].admitted_at <= horizon:
            entry = self._window.popleft()
            entry.in_window = False
            self._window_tokens -= entry.tokens

    def _seconds_to_wait(self, estimate: int, now: float) -> float:
        """0 when the call may start; `inf` when it waits for a slot to be released."""
        s = self.settings
        if self._active >= s.concurrency:
            return math.inf
        wait = 0.0
        window = self._window
        if s.rpm is not None and len(window) >= s.rpm:
            # The oldest calls must leave until one more fits.
            wait = window[len(window) - s.rpm].admitted_at + s.window_seconds - now
        # A single request larger than the whole TPM could never fit: it goes as soon as the
        # window holds no tokens at all, rather than waiting forever.
        if s.tpm is not None and self._window_tokens > 0 and self._window_tokens + estimate > s.tpm:
            excess = self._window_tokens - max(s.tpm - estimate, 0)
            for entry in window:
                excess -= entry.tokens
                if excess <= 0:
                    wait = max(wait, entry.admitted_at + s.window_seconds - now)
                    break
        return max(wait, 0.0)


def create_limiter(
    settings: LimitSettings,
    redis_url: str | None,
    key_prefix: str = "quarry:llm",
    holder_ttl_seconds: float = 30.0,
) -> CallLimiter:
    """A limiter shared through Redis when `redis_url` is set, else an in-process one.

    `holder_ttl_seconds`: how long the slots of a process that died stay taken (Redis only).
    """
    if redis_url is None:
        return LocalLimiter(settings)
    from quarry.llm.redis_limiter import RedisLimiter  # its module imports this one

    return RedisLimiter(
        Redis.from_url(redis_url),
        settings,
        key_prefix=key_prefix,
        holder_ttl_seconds=holder_ttl_seconds,
        owns_client=True,
    )
