"""`cancel_and_wait` ends a loop that swallowed a cancellation — what made a worker ignore
SIGTERM now and then (Python 3.11's `asyncio.wait_for`, used by redis-py for every send)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from quarry.aio import cancel_and_wait


async def _loop_that_swallows_the_first_cancel(ticks: list[int]) -> None:
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True  # as a 3.11 wait_for does when its inner await finished too
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        ticks.append(1)


async def test_a_loop_that_swallows_one_cancellation_still_ends() -> None:
    ticks: list[int] = []
    task = asyncio.create_task(_loop_that_swallows_the_first_cancel(ticks))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(cancel_and_wait(task, None), timeout=30)
    assert task.cancelled()
    # One cancel alone would not have ended it:
    again = asyncio.create_task(_loop_that_swallows_the_first_cancel(ticks))
    await asyncio.sleep(0.05)
    again.cancel()
    done, _ = await asyncio.wait({again}, timeout=0.3)
    assert not done
    await cancel_and_wait(again)


async def test_tasks_that_ended_with_an_error_are_not_reraised() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert isinstance(task.exception(), RuntimeError)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="fixed in CPython 3.12 (gh-86296)")
async def test_python_3_11_wait_for_drops_a_cancel_that_meets_its_result() -> None:
    """Why the helper exists: the inner await completes in the same turn as the cancel."""

    async def instant() -> int:
        return 1

    outcome: list[str] = []

    async def sender() -> None:
        await asyncio.wait_for(instant(), timeout=5)
        outcome.append("returned although cancelled")

    task = asyncio.create_task(sender())
    await asyncio.sleep(0)  # sender starts wait_for; the inner task is scheduled
    await asyncio.sleep(0)  # the inner task finishes; the waiter's release is scheduled
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert outcome == ["returned although cancelled"]
