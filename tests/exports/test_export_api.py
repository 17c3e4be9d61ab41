"""The export route as a user downloads it, on SQLite and PostgreSQL: which value each cell
shows, which cells are flagged, in which order the documents come, and what happens when the
download is abandoned halfway."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import threading
import time
from datetime import timedelta
from typing import Any

import openpyxl
import pytest
from starlette.requests import ClientDisconnect

from quarry.db import connect_sqlite_reader
from quarry.exports import bridge, csv_writer, service
from quarry.exports.schemas import ExportFormat, ExportLayout
from quarry.exports.xlsx_writer import FLAG_FILLS
from quarry.models import ExtractionStatus
from tests.exports.conftest import (
    T0,
    Project,
    add_documents,
    add_extraction,
    add_review,
    add_run,
)

S = ExtractionStatus
COLOURS = {name: fill.fgColor.rgb[-6:] for name, fill, _ in FLAG_FILLS}
MINUTE = timedelta(minutes=1)


def read_csv(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline="")))


async def cells_of_every_kind(project: Project) -> dict[str, Any]:
    """Documents a–f whose cells cover what decides a final value (see the comments)."""
    a, b, c, d, e, f = await add_documents(project, [f"{x}.txt" for x in "abcdef"])
    old = await add_run(project, at=T0)
    new = await add_run(project, at=T0 + 60 * MINUTE)
    later = T0 + 61 * MINUTE
    # a: the newer answer wins; an answer wins over a newer failure.
    await add_extraction(project, old, a, "n", value=1, finished_at=T0 + MINUTE)
    await add_extraction(project, new, a, "n", value=2, finished_at=later)
    await add_extraction(project, old, a, "title", value="old title", finished_at=T0 + MINUTE)
    await add_extraction(project, new, a, "title", status=S.FAILED, finished_at=later)
    # b: a correction wins (no flags: a person has looked); a rejection leaves a blank.
    await add_extraction(project, new, b, "n", value=5, finished_at=later, confidence=0.1)
    await add_review(project, b, "n", "corrected", 7, at=T0 + 120 * MINUTE)
    await add_extraction(project, new, b, "title", value="b title", finished_at=later)
    await add_review(project, b, "title", "rejected", at=T0 + 120 * MINUTE)
    # c: reviewed, then re-extracted with another value: the review stands, flagged;
    # "not stated" is an answer, shown blank.
    await add_review(project, c, "n", "corrected", 9, at=T0 + 30 * MINUTE)
    await add_extraction(project, new, c, "n", value=10, finished_at=later)
    await add_extraction(project, new, c, "title", status=S.NOT_FOUND, finished_at=later)
    # d: an unsure answer and one whose quote is not in the document.
    await add_extraction(project, new, d, "n", value=3, finished_at=later, confidence=0.2)
    await add_extraction(project, new, d, "title", value="d title", grounded=False)
    # e: a correction of a cell never extracted; f: only a failure.
    await add_review(project, e, "n", "corrected", 4, at=T0 + 120 * MINUTE)
    await add_extraction(project, new, f, "n", status=S.FAILED, finished_at=later)
    return {"old": str(old), "new": str(new)}


async def test_each_cell_shows_its_final_value(project: Project) -> None:
    runs = await cells_of_every_kind(project)

    wide = read_csv((await project.export("csv")).content)
    assert [(r["filename"], r["n"], r["title"]) for r in wide] == [
        ("a.txt", "2", "old title"),
        ("b.txt", "7", ""),
        ("c.txt", "9", ""),
        ("d.txt", "3", "d title"),
        ("e.txt", "4", ""),
        ("f.txt", "", ""),
    ]

    long = {
        (r["filename"], r["variable"]): r
        for r in read_csv((await project.export("csv", "long")).content)
    }
    assert len(long) == 12
    assert long["a.txt", "title"]["status"] == "succeeded"
    assert long["a.txt", "title"]["run_id"] == runs["old"]
    assert long["a.txt", "n"]["run_id"] == runs["new"]
    corrected = long["b.txt", "n"]
    assert (corrected["value"], corrected["extracted_value"]) == ("7", "5")
    assert (corrected["review_status"], corrected["prompt_version"]) == ("corrected", "1")
    assert long["b.txt", "title"]["review_status"] == "rejected"
    assert (long["c.txt", "title"]["status"], long["c.txt", "title"]["value"]) == ("not_found", "")
    assert (long["e.txt", "n"]["status"], long["e.txt", "n"]["value"]) == ("", "4")
    assert long["e.txt", "title"] | {"document_id": ""} == {
        **dict.fromkeys(long["e.txt", "title"], ""),
        "filename": "e.txt",
        "variable": "title",
    }
    failed = long["f.txt", "n"]
    assert failed["status"] == "failed" and "invalid JSON" in failed["error"]

    records = json.loads((await project.export("json", "long")).content)
    record = next(r for r in records if r["filename"] == "b.txt" and r["variable"] == "n")
    assert (record["value"], record["extracted_value"], record["confidence"]) == (7, 5, 0.1)
    wide_json = json.loads((await project.export("json")).content)
    assert [r["n"] for r in wide_json] == [2, 7, 9, 3, 4, None]


async def test_flagged_cells_are_highlighted_in_the_workbook(project: Project) -> None:
    await cells_of_every_kind(project)
    book = openpyxl.load_workbook(io.BytesIO((await project.export("xlsx")).content))

    def colour(cell: Any) -> str | None:
        return cell.fill.fgColor.rgb[-6:] if cell.fill.fill_type == "solid" else None

    results = book["Results"]
    header = [c.value for c in results[1]]
    fills = {
        (row[1].value, name): colour(cell)
        for row in results.iter_rows(min_row=2)
        for name, cell in zip(header, row, strict=True)
        if name in ("n", "title")
    }
    assert {key: fill for key, fill in fills.items() if fill} == {
        ("c.txt", "n"): COLOURS["review_disagrees"],
        ("c.txt", "title"): COLOURS["not_found"],
        ("d.txt", "n"): COLOURS["low_confidence"],
        ("d.txt", "title"): COLOURS["ungrounded"],
        ("f.txt", "n"): COLOURS["failed"],
    }
    details = book["Details"]
    header = [c.value for c in details[1]]
    rows = [dict(zip(header, row, strict=True)) for row in details.iter_rows(min_row=2)]
    value_fills = {(r["filename"].value, r["variable"].value): colour(r["value"]) for r in rows}
    assert value_fills["d.txt", "n"] == COLOURS["low_confidence"]
    assert value_fills["b.txt", "n"] is None
    numbers = [row[header.index("value")].value for row in details.iter_rows(min_row=2)][::2]
    assert numbers == [2, 7, 9, 3, 4, None]  # numbers stay numbers


async def test_the_wide_csv_and_json_can_carry_each_cell_s_flags(project: Project) -> None:
    """`flags=true`: no wide export hides an ungrounded or failed value (issue 15)."""
    await cells_of_every_kind(project)
    plain = read_csv((await project.export("csv")).content)
    assert "title__flag" not in plain[0]

    wide = {r["filename"]: r for r in read_csv((await project.export("csv", flags="true")).content)}
    assert list(wide["d.txt"])[2:] == ["n", "n__flag", "title", "title__flag"]
    assert (wide["d.txt"]["title"], wide["d.txt"]["title__flag"]) == ("d title", "ungrounded")
    assert wide["d.txt"]["n__flag"] == "low_confidence"
    assert (wide["c.txt"]["title"], wide["c.txt"]["title__flag"]) == ("", "not_found")
    assert wide["c.txt"]["n__flag"] == "review_disagrees"
    assert (wide["f.txt"]["n"], wide["f.txt"]["n__flag"]) == ("", "failed")
    assert wide["a.txt"]["n__flag"] == wide["a.txt"]["title__flag"] == ""

    records = json.loads((await project.export("json", flags="true")).content)
    d = next(r for r in records if r["filename"] == "d.txt")
    assert list(d)[2:] == ["n", "n__flag", "title", "title__flag"]
    assert (d["n"], d["n__flag"], d["title__flag"]) == (3, ["low_confidence"], ["ungrounded"])


async def test_documents_keep_their_upload_order_across_batches(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "CELLS_PER_BATCH", 2)  # one document (two cells) per batch
    same = T0 + timedelta(seconds=5)
    names = ["z.txt", "m.txt", "b.txt", "a.txt", "c.txt"]
    times = [T0, T0 + timedelta(seconds=1), same, same, T0 + timedelta(seconds=9)]
    ids = await add_documents(project, names, at=times)
    run = await add_run(project)
    for i, document_id in enumerate(ids):
        await add_extraction(project, run, document_id, "n", value=i)

    expected = [("z.txt", "0"), ("m.txt", "1"), ("a.txt", "3"), ("b.txt", "2"), ("c.txt", "4")]
    wide = read_csv((await project.export("csv")).content)
    assert [(r["filename"], r["n"]) for r in wide] == expected  # same time: by name
    long = read_csv((await project.export("csv", "long")).content)
    assert [(r["filename"], r["value"]) for r in long][::2] == expected
    book = openpyxl.load_workbook(io.BytesIO((await project.export("xlsx")).content))
    rows = list(book["Results"].iter_rows(min_row=2, values_only=True))
    assert [(r[1], str(r[2])) for r in rows] == expected


async def test_an_abandoned_download_stops_and_frees_its_connection(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await add_documents(project, [f"doc-{i:02}.txt" for i in range(30)])
    run = await add_run(project)
    for document_id in ids:
        await add_extraction(project, run, document_id, "title", value="x" * 200)
    monkeypatch.setattr(service, "CELLS_PER_BATCH", 2)
    # A hand-off per row or so, so that most of the export is still to come at the hang-up.
    monkeypatch.setattr(csv_writer, "_CHUNK_CHARS", 200)
    monkeypatch.setattr(bridge, "HAND_OFF_CHARS", 200)
    batches_read = 0
    real_batch = service.ExportBatch

    def counting(*args: Any) -> Any:  # a batch read, on the loop or in the writer thread
        nonlocal batches_read
        batches_read += 1
        return real_batch(*args)

    monkeypatch.setattr(service, "ExportBatch", counting)
    full = await project.export("csv", "long")
    assert batches_read == 30

    for spec_version in ("2.3", "2.4"):  # told by a message / by a failing send
        batches_read = 0
        body = await hang_up_after_first_chunk(project, spec_version)
        assert 0 < len(body) < len(full.content)
        engine = project.app.state.engine
        deadline = time.monotonic() + 30  # a hang guard only
        while engine.pool.checkedout():
            assert time.monotonic() < deadline, "the export kept its database connection"
            await asyncio.sleep(0.01)
        assert batches_read < 30, spec_version  # it stopped reading, rather than finishing unheard

    again = await project.export("csv", "long")
    assert again.content == full.content


class ClosedWatch:
    """Stands in for db.connect_sqlite_reader in the service: the real connection, and an
    event set when the export closes it (a connection can only be used in its own thread,
    so the test cannot ask it)."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = threading.Event()

    def __call__(self, path: Any) -> Any:
        self.opened += 1
        watch, connection = self, connect_sqlite_reader(path)

        class Watched:
            def __getattr__(self, name: str) -> Any:
                return getattr(connection, name)

            def close(self) -> None:
                connection.close()
                watch.closed.set()

        return Watched()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_an_abandoned_download_closes_its_reader(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await add_documents(project, [f"doc-{i:02}.txt" for i in range(30)])
    run = await add_run(project)
    for document_id in ids:
        await add_extraction(project, run, document_id, "title", value="x" * 200)
    monkeypatch.setattr(service, "CELLS_PER_BATCH", 2)
    monkeypatch.setattr(csv_writer, "_CHUNK_CHARS", 200)
    monkeypatch.setattr(bridge, "HAND_OFF_CHARS", 200)
    full = await project.export("csv", "long")

    for spec_version in ("2.3", "2.4"):
        watch = ClosedWatch()
        monkeypatch.setattr(service, "connect_sqlite_reader", watch)
        body = await hang_up_after_first_chunk(project, spec_version)
        assert 0 < len(body) < len(full.content)
        assert watch.opened == 1  # read in the writer thread, not through the pool
        assert await asyncio.to_thread(watch.closed.wait, 30), "the reader was left open"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_on_sqlite_an_export_reads_one_snapshot(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await add_documents(project, [f"doc-{i:02}.txt" for i in range(30)])
    run = await add_run(project)
    for document_id in ids:
        await add_extraction(project, run, document_id, "title", value="before")
    monkeypatch.setattr(service, "CELLS_PER_BATCH", 2)  # a query per document
    monkeypatch.setattr(csv_writer, "_CHUNK_CHARS", 200)
    monkeypatch.setattr(bridge, "HAND_OFF_CHARS", 200)
    async with project.app.state.sessionmaker() as session:
        codebook = await service.export_codebook(session, project.id)
    stream = service.stream_table(
        project.app.state.sessionmaker, project.id, codebook, ExportFormat.CSV, ExportLayout.LONG
    )
    first = await anext(stream)
    # While the export is under way, every document gets a newer answer (committed).
    later = await add_run(project, at=T0 + MINUTE)
    for document_id in ids:
        await add_extraction(
            project, later, document_id, "title", value="after", finished_at=T0 + MINUTE
        )
    rest = [chunk async for chunk in stream]

    rows = read_csv(b"".join([first, *rest]))
    assert len(rows) == 60
    assert {r["value"] for r in rows if r["variable"] == "title"} == {"before"}
    assert {
        r["value"]
        for r in read_csv((await project.export("csv", "long")).content)
        if r["variable"] == "title"
    } == {"after"}


async def hang_up_after_first_chunk(project: Project, spec_version: str) -> bytes:
    """GET the long CSV straight through ASGI; the client goes away after the first chunk."""
    path = f"/api/v1/projects/{project.id}/export"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"format=csv&layout=long",
        "root_path": "",
        "headers": [
            (b"host", b"quarry.test"),
            (b"authorization", project.headers["Authorization"].encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("quarry.test", 80),
    }
    received: list[bytes] = []
    gone = asyncio.Event()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            return
        if gone.is_set():
            raise OSError("the client has gone")
        if message.get("body"):
            received.append(message["body"])
            gone.set()

    # With spec 2.4 the failed send comes back out as ClientDisconnect, as a server sees it.
    with contextlib.suppress(ClientDisconnect):
        await asyncio.wait_for(project.app(scope, receive, send), timeout=30)
    return b"".join(received)
