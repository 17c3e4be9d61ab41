"""Feeding the synchronous, streaming writers from async database reads in bounded memory.

The writers (csv/json/xlsx) are plain generators over plain iterables, which keeps them simple
and testable. The rows come from async queries. A writer therefore runs in a worker thread and
pulls each row from the event loop as it needs it; its output chunks flow back the same way.
At no point are all rows in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


def pull_from_loop(source: AsyncIterator[T], loop: asyncio.AbstractEventLoop) -> Iterator[T]:
    """A blocking iterator over an async iterator, for use from a thread other than `loop`'s."""

    async def next_item() -> object:
        try:
            return await anext(source)
        except StopAsyncIteration:
            return _END

    while True:
        item = asyncio.run_coroutine_threadsafe(next_item(), loop).result()
        if item is _END:
            return
        yield item  # type: ignore[misc]


async def stream_from_thread(produce: Callable[[], Iterator[str]]) -> AsyncIterator[str]:
    """Run a chunk-producing generator in a thread and yield its chunks here, one at a time.

    If the consumer stops early (the client went away), the thread is told to stop and the
    queue is drained so it is never left blocked.
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[object] = asyncio.Queue(maxsize=8)
    stopped = False

    def put(item: object) -> None:
        asyncio.run_coroutine_threadsafe(chunks.put(item), loop).result()

    def work() -> None:
        try:
            for chunk in produce():
                if stopped:
                    return
                put(chunk)
        except BaseException as exc:
            if not stopped:
                put(exc)
            return
        if not stopped:
            put(_END)

    worker = loop.run_in_executor(None, work)
    try:
        while True:
            item = await chunks.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stopped = True
        while not worker.done():
            while not chunks.empty():
                chunks.get_nowait()
            await asyncio.sleep(0.01)
