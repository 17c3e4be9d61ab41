"""Small asyncio helpers the long-running loops share."""

from __future__ import annotations

import asyncio
from typing import Any

#: How long one cancellation is given before it is sent again.
_RECANCEL_SECONDS = 0.5


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel `tasks` and return once every one has ended, cancelling again any that runs on.

    A single `task.cancel()` is not always enough on Python 3.11: `asyncio.wait_for` there
    returns its inner result, and drops the cancellation, when the two arrive in the same turn
    of the loop (CPython gh-86296, fixed in 3.12). redis-py wraps every command's send in a
    `wait_for`, so a loop that talks to Redis (Arq's poll loop, the health beat, the limiter's
    listener) now and then swallows its cancellation and goes on forever — a worker that did not
    exit on SIGTERM. Each further cancel lands at a later await, so the loop ends at the next.
    What the tasks raised (their cancellation included) is not re-raised here.
    """
    pending = {task for task in tasks if task is not None}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL_SECONDS)
    for ended in tasks:
        if ended is not None and not ended.cancelled():
            ended.exception()  # retrieved: no "exception was never retrieved" at exit
