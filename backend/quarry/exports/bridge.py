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

A source may also be read in the writer thread itself (InThread: a synchronous cursor, as the
SQLite export uses): then its rows reach the writer with no hop at all. It is opened on the
writer's first read and closed in the thread when the writer ends, however it ends.

If the consumer stops early (the client went away, the request was cancelled), the thread stops
at its next hand-off or feed step, and the sources (which hold database sessions) are closed once
it has. That clean-up runs in a task of its own: a consumer cancelled by its task group is
cancelled again at each await, and must not leave a thread blocked or a session open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
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
        self.source = source
        self._loop = loop
        self._stopped = stopped
        #: The item being read ahead, if any (the clean-up waits for it before closing).
        self.pending: concurrent.futures.Future[T | object] | None = None

    def _request(self) -> concurrent.futures.Future[T | object]:
        return asyncio.run_coroutine_threadsafe(_next_or_end(self.source), self._loop)

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


class InThread(Generic[T]):
    """A source the worker thread reads itself: `open()` is called there, on the first read,
    and what it returns is closed there (if it has `close`, as a generator has) once the
    work ends. Give it batches too: the thread checks for a stop between items."""

    def __init__(self, open: Callable[[], Iterable[T]]) -> None:
        self.open = open


def _read_in_thread(source: InThread[T], stopped: threading.Event) -> Generator[T, None, None]:
    items = source.open()
    try:
        for item in items:
            if stopped.is_set():
                raise ExportStopped
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _inputs(
    sources: Sequence[AsyncIterator[Any] | InThread[Any]],
    loop: asyncio.AbstractEventLoop,
    stopped: threading.Event,
) -> tuple[list[Feed[Any]], Callable[[contextlib.ExitStack], list[Iterable[Any]]]]:
    """The feeds of the async sources, and (to call in the thread) every source's input in
    order, with the in-thread ones closed by the given stack."""
    feeds: dict[int, Feed[Any]] = {
        i: Feed(source, loop, stopped)
        for i, source in enumerate(sources)
        if not isinstance(source, InThread)
    }

    def open_all(stack: contextlib.ExitStack) -> list[Iterable[Any]]:
        inputs: list[Iterable[Any]] = []
        for i, source in enumerate(sources):
            if isinstance(source, InThread):
                reader = _read_in_thread(source, stopped)
                stack.callback(reader.close)
                inputs.append(reader)
            else:
                inputs.append(feeds[i])
        return inputs

    return list(feeds.values()), open_all


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
    produce: Callable[..., Iterable[str]], *sources: AsyncIterator[Any] | InThread[Any]
) -> AsyncIterator[bytes]:
    """Run `produce(*inputs)` in a worker thread, one input per source (a feed, or the
    InThread source's own iterable), and yield its text here as UTF-8, in hand-offs of
    about HAND_OFF_CHARS.

    An error raised by `produce` (even before its first chunk) is raised here.
    """
    loop = asyncio.get_running_loop()
    stopped = threading.Event()
    outbox = _Outbox(loop, stopped)
    feeds, open_all = _inputs(sources, loop, stopped)

    def work() -> None:
        try:
            with contextlib.ExitStack() as stack:
                for text in _gathered(produce(*open_all(stack))):
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
            # Let the loop's other tasks run between hand-offs. A writer that keeps the outbox
            # full makes Queue.get return without suspending, and a send with room in the
            # socket's buffer does not suspend either: hand-off after hand-off would then go
            # out with other requests (and Starlette's disconnect listener) kept waiting.
            await asyncio.sleep(0)
    finally:
        outbox.stop()
        await _clean_up(worker, feeds)


async def run_in_thread(work: Callable[..., R], *sources: AsyncIterator[Any] | InThread[Any]) -> R:
    """`work(*inputs)` in a worker thread, one input per source (as stream_from_thread);
    its result.

    If the caller is cancelled, the thread is stopped at its next read of a source
    (ExportStopped is raised there) and the sources are closed once it has finished.
    """
    loop = asyncio.get_running_loop()
    stopped = threading.Event()
    feeds, open_all = _inputs(sources, loop, stopped)

    def run() -> R:
        with contextlib.ExitStack() as stack:
            return work(*open_all(stack))

    worker = loop.run_in_executor(None, run)
    try:
        # Shielded: cancelling the caller must not detach it from a thread still running.
        return await asyncio.shield(worker)
    finally:
        stopped.set()
        await _clean_up(worker, feeds)


async def _clean_up(worker: asyncio.Future[Any], feeds: Sequence[Feed[Any]]) -> None:
    """Wait for the thread and any read-ahead, then close the feeds' sources (which were in
    use until then: an async generator cannot be closed while it runs). In-thread sources
    were closed by the thread."""

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
        for feed in feeds:
            aclose = getattr(feed.source, "aclose", None)
            if aclose is not None:
                await aclose()

    task = asyncio.ensure_future(finish())
    _CLEAN_UPS.add(task)
    task.add_done_callback(_CLEAN_UPS.discard)
    await asyncio.shield(task)
