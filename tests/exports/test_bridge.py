"""The hand-over between the event loop and the writer thread: a long export reaches the
client in a few large pieces and in bounded memory, errors reach the reader, and a reader that
goes away stops the writer and releases what it held."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterable, Iterator

import pytest

from quarry.exports import bridge
from quarry.exports.csv_writer import iter_long_csv
from quarry.exports.table import LongRow
from quarry.variables.types import VariableType as T

HANG_GUARD = 30  # seconds; the tests take a fraction of one


class Batches:
    """An async source of batches of long rows, as the export service reads them; it records
    how far it was read and whether it was closed."""

    def __init__(self, batches: int, rows: int, evidence: int = 500) -> None:
        self.batches, self.rows, self.evidence = batches, rows, evidence
        self.read = 0
        self.closed = asyncio.Event()

    async def __call__(self) -> AsyncIterator[list[LongRow]]:
        try:
            for b in range(self.batches):
                await asyncio.sleep(0)  # a query
                self.read += 1
                yield [
                    LongRow(
                        f"doc-{b}-{i}",
                        f"file {b}-{i}.pdf",
                        "title",
                        T.TEXT,
                        value=f"value {i}",
                        status="succeeded",
                        evidence="e" * self.evidence,
                        page=1,
                        confidence=0.9,
                    )
                    for i in range(self.rows)
                ]
        finally:
            self.closed.set()


def long_csv(batches: Iterable[list[LongRow]]) -> Iterator[str]:
    return iter_long_csv(row for batch in batches for row in batch)


async def test_twenty_thousand_rows_arrive_in_few_pieces_in_bounded_memory() -> None:
    source = Batches(batches=40, rows=500)
    tracemalloc.start()
    try:
        sizes = [len(chunk) async for chunk in bridge.stream_from_thread(long_csv, source())]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = sum(sizes)
    assert total > 11_000_000  # 20,000 rows of ~570 bytes
    # Each piece is one send to the client: ~256 kB, not a 16 kB chunk or a row at a time.
    assert len(sizes) <= total // (128 * 1024) + 1, len(sizes)
    # In memory at once: a batch being written, one read ahead, and two pieces waiting.
    assert peak < 5_000_000, (peak, len(sizes))
    assert source.closed.is_set()


async def test_a_writer_error_reaches_the_reader_and_the_source_is_closed() -> None:
    source = Batches(batches=10, rows=10)

    def failing(batches: Iterable[list[LongRow]]) -> Iterator[str]:
        for batch in batches:
            yield "x" * len(batch)
            raise ValueError("a cell the writer cannot take")

    with pytest.raises(ValueError, match="cannot take"):
        async with asyncio.timeout(HANG_GUARD):
            async for _ in bridge.stream_from_thread(failing, source()):
                pass
    assert source.closed.is_set()
    assert source.read < 10


async def test_a_reader_that_goes_away_stops_the_writer_and_closes_the_source() -> None:
    source = Batches(batches=1_000, rows=100)
    writer_done = threading.Event()

    def writer(batches: Iterable[list[LongRow]]) -> Iterator[str]:
        try:
            yield from long_csv(batches)
        finally:
            writer_done.set()

    stream = bridge.stream_from_thread(writer, source())
    first = await anext(stream)
    assert first.startswith("\ufeffdocument_id".encode())
    await stream.aclose()  # what the response does when the client has gone

    assert writer_done.is_set()
    assert source.closed.is_set()
    assert source.read < 20  # of 1,000 batches


async def test_a_cancelled_reader_stops_the_writer_and_closes_the_source() -> None:
    source = Batches(batches=1_000, rows=100)
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def write_all(batches: Iterable[list[LongRow]]) -> int:
        count = 0
        for batch in batches:
            count += len(batch)
            loop.call_soon_threadsafe(started.set)
        return count

    task = asyncio.create_task(bridge.run_in_thread(write_all, source()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(HANG_GUARD):
        await source.closed.wait()
    assert source.read < 1_000


class ThreadBatches:
    """A blocking source of batches of long rows, read by the writer thread itself (as the
    SQLite export reads its database): records the threads that opened, read and closed it."""

    def __init__(self, batches: int, rows: int) -> None:
        self.batches, self.rows = batches, rows
        self.read = 0
        self.threads: dict[str, int] = {}
        self.closed = threading.Event()

    def open(self) -> Iterator[list[LongRow]]:
        self.threads["opened"] = threading.get_ident()
        try:
            for b in range(self.batches):
                self.read += 1
                self.threads["read"] = threading.get_ident()
                yield [
                    LongRow(f"doc-{b}-{i}", f"file {b}-{i}.pdf", "title", T.TEXT, value="v" * 100)
                    for i in range(self.rows)
                ]
        finally:
            self.threads["closed"] = threading.get_ident()
            self.closed.set()

    def in_one_other_thread(self) -> bool:
        return len(set(self.threads.values())) == 1 and threading.get_ident() not in (
            self.threads.values()
        )


async def test_an_in_thread_source_is_read_and_closed_in_the_writer_thread() -> None:
    source = ThreadBatches(batches=40, rows=500)
    chunks = [c async for c in bridge.stream_from_thread(long_csv, bridge.InThread(source.open))]
    assert b"".join(chunks).count(b"\r\n") == 20_001
    assert source.read == 40 and source.closed.is_set()
    assert source.in_one_other_thread(), source.threads


async def test_an_in_thread_source_stops_when_the_reader_goes_away() -> None:
    source = ThreadBatches(batches=1_000, rows=100)
    stream = bridge.stream_from_thread(long_csv, bridge.InThread(source.open))
    await anext(stream)
    await stream.aclose()
    assert source.closed.is_set()  # closed by the time the stream is
    # Of 1,000 batches (~15 kB of CSV each): at most the hand-offs the outbox holds.
    assert source.read < 100, source.read
    assert source.in_one_other_thread(), source.threads


async def test_an_in_thread_source_is_closed_after_a_writer_error() -> None:
    source = ThreadBatches(batches=10, rows=10)

    def failing(batches: Iterable[list[LongRow]]) -> Iterator[str]:
        for batch in batches:
            yield "x" * len(batch)
            raise ValueError("a cell the writer cannot take")

    with pytest.raises(ValueError, match="cannot take"):
        async with asyncio.timeout(HANG_GUARD):
            async for _ in bridge.stream_from_thread(failing, bridge.InThread(source.open)):
                pass
    assert source.closed.is_set() and source.read < 10


async def test_a_cancelled_run_stops_reading_an_in_thread_source() -> None:
    source = ThreadBatches(batches=100_000, rows=10)
    other = Batches(batches=100_000, rows=1)  # an async source beside it, as xlsx has
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def write_all(batches: Iterable[list[LongRow]], more: Iterable[list[LongRow]]) -> int:
        count = 0
        for batch, _ in zip(batches, more, strict=False):
            count += len(batch)
            loop.call_soon_threadsafe(started.set)
        return count

    task = asyncio.create_task(
        bridge.run_in_thread(write_all, bridge.InThread(source.open), other())
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.closed.is_set() and other.closed.is_set()  # by the time the caller returns
    assert source.read < 100_000
    assert source.in_one_other_thread(), source.threads
