"""Feeding the synchronous, streaming writers from async database reads, a batch at a time.

The writers (csv/json/xlsx) are plain generators over plain iterables, which keeps them simple,
testable and benchmarkable. Their input comes from async queries, and formatting every cell is
blocking work that must not run on the event loop. So a writer runs in a worker thread, and:

- its input is a *feed* over an async iterator of batches: each step of the feed is one hop to
  the loop, so the price of a hop (tens of microseconds) is paid per batch of thousands of
  cells, not per row as before (a 260k-row export spent most of its time hopping);
- its output, for the streamed formats, is gathered in the thread into hand-offs of about
  HAND_OFF_CHARS and encoded there, then passed back through a buffer of OUTBOX_DEPTH
  hand-offs: a slow client holds the writer back instead of filling memory.

If the consumer stops early (the client went away, the request was cancelled), the thread stops
at its next hand-off or feed step, and the sources (which hold database sessions) are closed once
it has. That clean-up runs in a task of its own: a consumer cancelled by its task group is
cancelled again at each await, and must not leave a thread blocked or a session open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")

#: Characters of output per hand-off from the writer thread to the loop (then one ASGI send).
HAND_OFF_CHARS = 256 * 1024
#: Hand-offs that may wait for the consumer before the writer thread waits for it.
OUTBOX_DEPTH = 2

_END = object()
# Clean-ups in flight, so that the event loop's weak references to tasks do not lose them.
_CLEAN_UPS: set[asyncio.Task[None]] = set()


class ExportStopped(Exception):
    """Raised in the writer thread once its consumer has gone: stop writing."""


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _next_or_end(source: AsyncIterator[T]) -> T | object:
    try:
        return await anext(source)
    except StopAsyncIteration:
        return _END


class Feed(Generic[T]):
    """A blocking iterable, for a worker thread, over an async iterator run on `loop`.

    Each item costs one hop to the loop, so give it batches. While the thread works on one
    item the loop already reads the next (the database works while the writer formats; one
    item ahead, so memory holds two).
    """

    def __init__(
        self, source: AsyncIterator[T], loop: asyncio.AbstractEventLoop, stopped: threading.Event
    ) -> None:
        self._source = source
        self._loop = loop
        self._stopped = stopped
        #: The item being read ahead, if any (the clean-up waits for it before closing).
        self.pending: concurrent.futures.Future[T | object] | None = None

    def _request(self) -> concurrent.futures.Future[T | object]:
        return asyncio.run_coroutine_threadsafe(_next_or_end(self._source), self._loop)

    def __iter__(self) -> Iterator[T]:
        while True:
            if self._stopped.is_set():
                raise ExportStopped
            item = (self.pending or self._request()).result()
            if item is _END:
                self.pending = None
                return
            self.pending = self._request()
            yield cast(T, item)


class _Outbox:
    """A bounded buffer from the writer thread to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stopped: threading.Event) -> None:
        self._loop = loop
        self._stopped = stopped
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._room = threading.Semaphore(OUTBOX_DEPTH)

    def put(self, item: object) -> None:
        """Thread side: wait for room, then hand `item` to the loop."""
        self._room.acquire()
        if self._stopped.is_set():
            raise ExportStopped
        self._loop.call_soon_threadsafe(self._items.put_nowait, item)

    async def get(self) -> object:
        item = await self._items.get()
        self._room.release()
        return item

    def stop(self) -> None:
        self._stopped.set()
        self._room.release()  # wakes a put waiting for room, which then sees the stop


def _gathered(chunks: Iterable[str]) -> Iterator[str]:
    """The writer's chunks joined into pieces of at least HAND_OFF_CHARS (the last may be less)."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= HAND_OFF_CHARS:
            yield "".join(parts)
            parts.clear()
            size = 0
    if parts:
        yield "".join(parts)


async def stream_from_thread(
    produce: Callable[..., Iterable[str]], *sources: AsyncIterator[Any]
) -> AsyncIterator[bytes]:
    """Run `produce(*feeds)` in a worker thread, one feed per source, and yield its text here
    as UTF-8, in hand-offs of about HAND_OFF_CHARS.

    An error raised by `produce` (even before its first chunk) is raised here.
    """
    loop = asyncio.get_running_loop()
    stopped = threading.Event()
    outbox = _Outbox(loop, stopped)
    feeds = [Feed(source, loop, stopped) for source in sources]

    def work() -> None:
        try:
            for text in _gathered(produce(*feeds)):
                outbox.put(text.encode("utf-8"))
            outbox.put(_END)
        except ExportStopped:
            return
        except BaseException as exc:
            try:
                outbox.put(_Failure(exc))
            except ExportStopped:
                return

    worker = loop.run_in_executor(None, work)
    try:
        while True:
            item = await outbox.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield cast(bytes, item)
    finally:
        outbox.stop()
        await _clean_up(worker, feeds, sources)


async def run_in_thread(work: Callable[..., R], *sources: AsyncIterator[Any]) -> R:
    """`work(*feeds)` in a worker thread, one feed per source; its result.

    If the caller is cancelled, the thread is stopped at its next feed step (ExportStopped is
    raised there) and the sources are closed once it has finished.
    """
    loop = asyncio.get_running_loop()
    stopped = threading.Event()
    feeds = [Feed(source, loop, stopped) for source in sources]
    worker = loop.run_in_executor(None, work, *feeds)
    try:
        # Shielded: cancelling the caller must not detach it from a thread still running.
        return await asyncio.shield(worker)
    finally:
        stopped.set()
        await _clean_up(worker, feeds, sources)


async def _clean_up(
    worker: asyncio.Future[Any], feeds: Sequence[Feed[Any]], sources: Sequence[AsyncIterator[Any]]
) -> None:
    """Wait for the thread and any read-ahead, then close the sources (which were in use until
    then: an async generator cannot be closed while it runs)."""

    async def finish() -> None:
        await asyncio.wait([worker])
        if not worker.cancelled():
            worker.exception()  # retrieved: the caller was given it, or has gone
        reads = [asyncio.wrap_future(f.pending) for f in feeds if f.pending is not None]
        if reads:
            await asyncio.wait(reads)
            for read in reads:
                if not read.cancelled():
                    read.exception()
        for source in sources:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    task = asyncio.ensure_future(finish())
    _CLEAN_UPS.add(task)
    task.add_done_callback(_CLEAN_UPS.discard)
    await asyncio.shield(task)
