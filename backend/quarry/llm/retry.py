"""Which failed LLM calls are worth another try, and how long to wait before it.

The openai SDK's own retries are switched off (`max_retries=0`) so that every attempt goes
through the limiter on its own (a retry is a request like any other for the provider's
RPM) and so that cancelling a run is noticed between attempts.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import openai

#: A `Retry-After` longer than this is treated as this: the task's own deadline still applies.
MAX_RETRY_AFTER_SECONDS = 120.0


class InvalidCompletion(Exception):
    """A 2xx reply that is not a chat completion (a proxy's error page, a broken server):
    retried like a 5xx, since the next attempt may well reach a working server."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with "equal jitter" exponential backoff.

    The n-th wait (n from 0) is uniform in [d/2, d] with d = min(max_delay, base * 2**n): never
    near zero, so a struggling provider gets room, and spread out, so a fleet of workers that
    failed together does not come back together. A provider's `Retry-After` replaces d's lower
    bound: we wait at least that long, plus up to 10 % (at most a second) of jitter.
    """

    max_retries: int
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return retry_after + rng.uniform(0, min(1.0, 0.1 * retry_after + 0.05))
        ceiling = min(self.max_delay, self.base_delay * 2**retry)
        return rng.uniform(ceiling / 2, ceiling)


def is_retryable(exc: BaseException) -> bool:
    """Transient failures: timeouts, dropped connections, 408, 409, 429 and 5xx.

    A 429 that says the account's quota is used up is not transient, and neither is any
    other 4xx (bad request, wrong key, unknown model): retrying those only wastes time.
    """
    if isinstance(exc, openai.APIConnectionError | InvalidCompletion):  # incl. APITimeoutError
        return True
    if isinstance(exc, openai.RateLimitError):
        return not is_quota_exhausted(exc)
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409) or exc.status_code >= 500
    return False


def is_quota_exhausted(exc: openai.APIStatusError) -> bool:
    return exc.status_code == 429 and getattr(exc, "code", None) == "insufficient_quota"


def retry_reason(exc: BaseException) -> str:
    """A short label for logs and metrics: "timeout", "connection", "429", "500"…"""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        return str(exc.status_code)
    if isinstance(exc, InvalidCompletion):
        return "invalid_response"
    return type(exc).__name__


def retry_after_seconds(exc: BaseException, now: float | None = None) -> float | None:
    """The wait the provider asked for, from `retry-after-ms` or `Retry-After` (seconds or an
    HTTP date); None when there is none or it is unusable."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    seconds: float | None = None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            seconds = float(raw_ms) / 1000
        except ValueError:
            seconds = None
    raw = headers.get("retry-after")
    if seconds is None and raw:
        try:
            seconds = float(raw)
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError):
                parsed = None
            if parsed is not None and parsed.tzinfo is not None:
                seconds = parsed.timestamp() - (time.time() if now is None else now)
    if seconds is None or seconds != seconds or seconds < 0:  # missing, NaN or in the past
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)
