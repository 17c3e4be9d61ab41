"""Parsing in a pool of child processes: a file that crashes, hangs or balloons its parser
fails with a reason, and nothing else is affected — the next document parses, with its own
text, in a fresh child; the caller never blocks. Healthy children are reused, each document
under limits of its own, and replaced after a number of documents."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from quarry.documents.parsing import (
    PAGE_SEPARATOR,
    DocumentKind,
    DocumentParseError,
    ParsedDocument,
    isolation,
    parse_document,
)
from quarry.documents.parsing.isolation import IsolatedParser, ParseLimits, ParserClosedError
from tests.documents.fault_child import fault_file
from tests.support.documents import (
    make_docx,
    make_many_pages_pdf,
    make_nested_forms_pdf,
    make_pdf,
)

GENEROUS = ParseLimits(timeout_seconds=60, cpu_seconds=30, memory_mb=1024)

MakeParser = Callable[..., IsolatedParser]


@pytest.fixture
def fault_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "CHILD_MODULE", "tests.documents.fault_child")


@pytest.fixture
async def make_parser() -> AsyncIterator[MakeParser]:
    """`make_parser(limits, concurrency, **options)`: a parser whose children are stopped
    when the test ends."""
    made: list[IsolatedParser] = []

    def make(
        limits: ParseLimits = GENEROUS, concurrency: int = 1, **options: int
    ) -> IsolatedParser:
        parser = IsolatedParser(limits, concurrency, **options)
        made.append(parser)
        return parser

    yield make
    for parser in made:
        await parser.aclose()


def stored(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def parse_error(parser: IsolatedParser, path: Path, kind: DocumentKind) -> str:
    with pytest.raises(DocumentParseError) as caught:
        await parser.parse(path, kind)
    return caught.value.reason


def assert_consistent(document: ParsedDocument) -> None:
    assert document.text == PAGE_SEPARATOR.join(page.text for page in document.pages)
    for number, page in enumerate(document.pages, start=1):
        assert page.number == number
        assert document.text[page.char_start : page.char_end] == page.text


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("paper.pdf", make_pdf(["Aspirin in 120 patients.", "", "Results on page three."]), "pdf"),
        ("study.docx", make_docx(["Cohort.", [["Age", "47"]], "After."], {0}), "docx"),
        (
            "notes.txt",
            b"First page\x00 with a NUL\n\fSecond page \xff\xfe bad bytes\n",
            DocumentKind.TEXT,
        ),
    ],
)
async def test_a_child_parses_exactly_as_the_parser_does_in_process(
    tmp_path: Path, name: str, data: bytes, kind: str, make_parser: MakeParser
) -> None:
    path = stored(tmp_path, name, data)
    in_child = await make_parser(GENEROUS, 2).parse(path, DocumentKind(kind))
    assert in_child == parse_document(path, DocumentKind(kind))
    assert_consistent(in_child)
    assert "\x00" not in in_child.text


async def test_thousands_of_pages_come_back_whole(tmp_path: Path, make_parser: MakeParser) -> None:
    # ~100 KB of JSON: more than a pipe buffer holds, which is why results travel in a file.
    path = stored(tmp_path, "long.pdf", make_many_pages_pdf(3000))
    document = await make_parser(GENEROUS, 1).parse(path, DocumentKind.PDF)
    assert len(document.pages) == 3000
    assert document.pages[2999].text == "Page 3000 of the long report."
    assert_consistent(document)


@pytest.mark.usefixtures("fault_child")
@pytest.mark.parametrize("fault", ["segfault", "abort"])
async def test_a_parser_that_crashes_fails_only_its_document(
    tmp_path: Path, fault: str, make_parser: MakeParser
) -> None:
    parser = make_parser(GENEROUS, 1)
    reason = await parse_error(
        parser, stored(tmp_path, "x.txt", fault_file(fault)), DocumentKind.TEXT
    )
    assert reason == isolation.CRASHED_REASON
    assert "crashed" in reason
    # The same parser goes on with the next document.
    document = await parser.parse(stored(tmp_path, "next.txt", b"Still here.\n"), DocumentKind.TEXT)
    assert document.text == "Still here."


@pytest.mark.usefixtures("fault_child")
async def test_a_parser_that_hangs_is_killed_at_the_timeout(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    limits = ParseLimits(timeout_seconds=1.5, cpu_seconds=30, memory_mb=1024)
    path = stored(tmp_path, "x.txt", fault_file("sleep"))
    # A hang guard, not a timing: the child is killed at 1.5 s.
    async with asyncio.timeout(120):
        reason = await parse_error(make_parser(limits, 1), path, DocumentKind.TEXT)
    assert "timed out after 1.5 s" in reason
    assert_process_gone(int(path.with_name("x.txt.pid").read_text()))


@pytest.mark.usefixtures("fault_child")
async def test_a_parser_that_spins_is_stopped_by_its_cpu_limit(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    limits = ParseLimits(timeout_seconds=60, cpu_seconds=1, memory_mb=1024)
    reason = await parse_error(
        make_parser(limits, 1), stored(tmp_path, "x.txt", fault_file("spin")), DocumentKind.TEXT
    )
    assert "more than 1 s of processor time" in reason


@pytest.mark.usefixtures("fault_child")
async def test_a_parser_that_balloons_is_stopped_by_its_memory_limit(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    limits = ParseLimits(timeout_seconds=60, cpu_seconds=30, memory_mb=300)
    reason = await parse_error(
        make_parser(limits, 1),
        stored(tmp_path, "x.txt", fault_file("balloon")),
        DocumentKind.TEXT,
    )
    assert "exceeded its memory limit" in reason and "300 MB" in reason


async def test_a_pdf_built_to_exhaust_memory_fails_with_the_memory_reason(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    # A few kilobytes of nested drawings that would write 10**9 letters: MuPDF's allocation
    # fails at the limit, which must not be mistaken for a damaged file.
    limits = ParseLimits(timeout_seconds=60, cpu_seconds=30, memory_mb=200)
    path = stored(tmp_path, "laughs.pdf", make_nested_forms_pdf(8, with_text=True))
    reason = await parse_error(make_parser(limits, 1), path, DocumentKind.PDF)
    assert "exceeded its memory limit" in reason


async def test_a_pdf_built_to_take_forever_is_stopped_by_the_cpu_limit(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    limits = ParseLimits(timeout_seconds=60, cpu_seconds=1, memory_mb=1024)
    path = stored(tmp_path, "slow.pdf", make_nested_forms_pdf(9, with_text=False))
    reason = await parse_error(make_parser(limits, 1), path, DocumentKind.PDF)
    assert "processor time" in reason


@pytest.mark.usefixtures("fault_child")
@pytest.mark.parametrize("fault", ["garbage", "exit"])
async def test_a_child_that_answers_nonsense_fails_with_a_reason(
    tmp_path: Path, fault: str, make_parser: MakeParser
) -> None:
    parser = make_parser(GENEROUS, 1)
    reason = await parse_error(
        parser, stored(tmp_path, "x.txt", fault_file(fault)), DocumentKind.TEXT
    )
    assert reason == isolation.UNEXPECTED_REASON


@pytest.mark.usefixtures("fault_child")
async def test_a_child_writing_without_end_is_stopped_by_the_file_size_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_parser: MakeParser
) -> None:
    monkeypatch.setattr(isolation, "MAX_RESULT_BYTES", 8 * 1024 * 1024)
    parser = make_parser(GENEROUS, 1)
    reason = await parse_error(
        parser, stored(tmp_path, "x.txt", fault_file("flood")), DocumentKind.TEXT
    )
    assert "far more text than Quarry can store" in reason


@pytest.mark.usefixtures("fault_child")
async def test_no_more_children_run_at_once_than_the_concurrency(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    parser = make_parser(GENEROUS, 2)
    paths = [stored(tmp_path, f"doc{n}.txt", fault_file("nap", f"Doc {n}.")) for n in range(5)]
    documents = await asyncio.gather(*(parser.parse(p, DocumentKind.TEXT) for p in paths))
    assert [d.text.splitlines()[-1] for d in documents] == [f"Doc {n}." for n in range(5)]

    runs = [
        tuple(map(float, line.split()))
        for path in paths
        for line in path.with_name(path.name + ".runs").read_text().splitlines()
    ]
    assert len(runs) == 5
    overlapping = max(sum(start <= at < end for start, end in runs) for at, _ in runs)
    assert overlapping == 2


@pytest.mark.usefixtures("fault_child")
async def test_a_cancelled_parse_kills_its_child(tmp_path: Path, make_parser: MakeParser) -> None:
    path = stored(tmp_path, "x.txt", fault_file("sleep"))
    task = asyncio.create_task(make_parser(GENEROUS, 1).parse(path, DocumentKind.TEXT))
    pid_file = path.with_name("x.txt.pid")
    deadline = time.monotonic() + 20
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the child never started"
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_process_gone(int(pid_file.read_text()))


@pytest.mark.usefixtures("fault_child")
async def test_the_child_gets_none_of_the_servers_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_parser: MakeParser
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-leak")
    monkeypatch.setenv("QUARRY_SECRET_KEY", "do-not-leak-either")
    parser = make_parser(GENEROUS, 1)
    document = await parser.parse(
        stored(tmp_path, "x.txt", fault_file("environ")), DocumentKind.TEXT
    )
    environment = json.loads(document.text)
    assert "do-not-leak" not in document.text
    assert not [name for name in environment if name.startswith(("QUARRY_", "OPENAI_"))]


async def test_a_missing_stored_file_is_a_server_fault_not_a_document_failure(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    with pytest.raises(FileNotFoundError):
        await make_parser(GENEROUS, 1).parse(tmp_path / "gone.pdf", DocumentKind.PDF)


async def parsed_by(parser: IsolatedParser, path: Path) -> int:
    """The process id of the child that parsed `path` (a "pid" stand-in file)."""
    return int((await parser.parse(path, DocumentKind.TEXT)).text)


@pytest.mark.usefixtures("fault_child")
@pytest.mark.parametrize("fault", ["segfault", "sleep", "garbage", "exit", "balloon"])
async def test_after_a_parser_breaks_the_next_document_gets_its_own_text_from_a_new_child(
    tmp_path: Path, make_parser: MakeParser, fault: str
) -> None:
    limits = ParseLimits(timeout_seconds=3, cpu_seconds=30, memory_mb=400)
    parser = make_parser(limits, 1)
    before = await parsed_by(parser, stored(tmp_path, "before.txt", fault_file("pid")))
    bad = stored(tmp_path, "bad.txt", fault_file(fault, "Secret words of the broken file."))
    await parse_error(parser, bad, DocumentKind.TEXT)

    document = await parser.parse(
        stored(tmp_path, "next.txt", b"Its own text.\n"), kind=DocumentKind.TEXT
    )
    assert document.text == "Its own text."
    after = await parsed_by(parser, stored(tmp_path, "after.txt", fault_file("pid")))
    assert after != before
    assert_process_gone(before)


@pytest.mark.usefixtures("fault_child")
async def test_a_child_is_reused_until_it_has_parsed_its_share(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    parser = make_parser(GENEROUS, 1, recycle_after=3)
    first = await parsed_by(parser, stored(tmp_path, "1.txt", fault_file("pid")))
    # A document that fails in the ordinary way (no text) does not cost its child.
    reason = await parse_error(parser, stored(tmp_path, "2.txt", b"  \n\n"), DocumentKind.TEXT)
    assert reason == "The document contains no text."
    third = await parsed_by(parser, stored(tmp_path, "3.txt", fault_file("pid")))
    fourth = await parsed_by(parser, stored(tmp_path, "4.txt", fault_file("pid")))
    assert third == first
    assert fourth != first
    assert_process_gone(first)


@pytest.mark.usefixtures("fault_child")
async def test_each_document_gets_its_own_processor_time(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    # 0.6 s each, 1 s allowed each: three in one child use more than a second in all.
    parser = make_parser(ParseLimits(timeout_seconds=60, cpu_seconds=1, memory_mb=1024), 1)
    pids = [
        await parsed_by(parser, stored(tmp_path, f"{n}.txt", fault_file("burn"))) for n in range(3)
    ]
    assert len(set(pids)) == 1


@pytest.mark.usefixtures("fault_child")
async def test_a_child_left_with_little_memory_is_replaced(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    parser = make_parser(ParseLimits(timeout_seconds=60, cpu_seconds=30, memory_mb=400), 1)
    hoarder = await parsed_by(parser, stored(tmp_path, "hoard.txt", fault_file("hoard")))
    assert await parsed_by(parser, stored(tmp_path, "next.txt", fault_file("pid"))) != hoarder


@pytest.mark.usefixtures("fault_child")
async def test_closing_the_parser_stops_its_children(
    tmp_path: Path, make_parser: MakeParser
) -> None:
    parser = make_parser(GENEROUS, 2)
    path = stored(tmp_path, "busy.txt", fault_file("sleep"))
    busy = asyncio.create_task(parser.parse(path, DocumentKind.TEXT))
    pid_file = path.with_name("busy.txt.pid")
    deadline = time.monotonic() + 20
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the child never started"
        await asyncio.sleep(0.05)
    # The first child is busy, so this takes a second one, which then waits idle.
    idle = await parsed_by(parser, stored(tmp_path, "idle.txt", fault_file("pid")))
    assert idle != int(pid_file.read_text())

    await parser.aclose()
    assert_process_gone(idle)
    assert_process_gone(int(pid_file.read_text()))
    # Not a verdict on the document: it was interrupted, and can be parsed again later.
    with pytest.raises(ParserClosedError):
        await busy
    with pytest.raises(ParserClosedError):
        await parser.parse(stored(tmp_path, "late.txt", b"Too late.\n"), DocumentKind.TEXT)


def assert_process_gone(pid: int, timeout: float = 5.0) -> None:
    """The process has exited (a zombie not yet reaped counts as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        assert time.monotonic() < deadline, f"child {pid} still running (state {state})"
        time.sleep(0.05)
        os.sched_yield()
