"""`Slots`: how much work of a kind one process has in flight, and waiting for room.

Shared by the run executor and the parse feed: both claim work from the database in batches
as large as the room they have, so they need to know how many slots are free (a semaphore
only says whether one is).
"""

from __future__ import annotations

import asyncio
import contextlib


class Slots:
    """Units of work in flight, at most `capacity` started at once (`take` may overshoot:
    a claim takes what it got and gives back what it does not use)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._freed = asyncio.Event()

    @property
    def free(self) -> int:
        return max(self.capacity - self.used, 0)

    async def wait_until_free(self, at_least: int = 1, linger: float = 0.0) -> int:
        """The number of free slots, once there is one; up to `linger` seconds longer while
        fewer than `at_least` are free (so that work is claimed in batches)."""
        while self.free == 0:
            self._freed.clear()
            await self._freed.wait()
        if self.free < at_least and linger > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(linger):
                    while self.free < at_least:
                        self._freed.clear()
                        await self._freed.wait()
        return self.free

    def take(self, n: int) -> None:
        self.used += n

    def give(self, n: int = 1) -> None:
        self.used -= n
        self._freed.set()
