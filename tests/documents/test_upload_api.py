"""Uploading documents through the API: limits, refusals that store nothing, files that parse
badly, deduplication, DOCX structure, deletion — and the server never answering 500.

Every response in this module goes through a hook that fails the test on a 5xx, and every test
ends by checking that /health/ready still answers 200.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarry.settings import Settings
from tests.conftest import make_settings
from tests.support.api import create_project, sign_up, upload, wait_for_documents
from tests.support.documents import (
    make_docx,
    make_encrypted_pdf,
    make_image_only_pdf,
    make_pdf,
)
from tests.support.fake_llm import FakeLLM

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02" + bytes(64)
OLE2_DOC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + b"Microsoft Word 97-2003"
TEXT = b"Trial of aspirin.\nA total of 120 patients were randomised.\n"


@pytest.fixture
def settings(tmp_path: Path, fake_llm: FakeLLM) -> Settings:
    return make_settings(tmp_path, fake_llm, max_upload_mb=1)


async def _no_server_errors(response: httpx.Response) -> None:
    if response.status_code >= 500:
        await response.aread()
        raise AssertionError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text}"
        )


@pytest.fixture
async def client(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    client.event_hooks["response"].append(_no_server_errors)
    yield client
    # Whatever the test threw at it, the server is still healthy.
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text


@pytest.fixture
async def owner(app: FastAPI, client: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    headers = await sign_up(app, client, "uploader@example.org")
    project = await create_project(client, headers, "Uploads")
    return headers, project["id"]


def stored_files(settings: Settings) -> list[str]:
    """Every path under the storage directory, relative to it."""
    root = settings.storage_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def blob_path(settings: Settings, sha256: str) -> Path:
    return settings.storage_dir / "sha256" / sha256[:2] / sha256


def assert_error(response: httpx.Response, status: int, code: str, *needles: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    detail: str = body["detail"]
    assert " " in detail and detail.endswith("."), detail
    for needle in needles:
        assert needle in detail, detail
    return detail


async def documents_in(
    client: httpx.AsyncClient, headers: dict[str, str], pid: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/projects/{pid}/documents", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    assert response.json()["total"] == len(items)
    return items


async def test_an_oversized_file_is_413_and_nothing_is_stored(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str], settings: Settings
) -> None:
    headers, pid = owner
    big = b"Ordinary text that goes on and on.\n" * (1_500_000 // 35)
    assert len(big) > 1024 * 1024

    response = await upload(client, headers, pid, [("big.txt", big, "text/plain")])

    assert_error(response, 413, "payload_too_large", "big.txt", "1 MB")
    assert await documents_in(client, headers, pid) == []
    assert stored_files(settings) == ["tmp"]  # no blob, no half-written staging file


async def test_an_empty_file_is_400(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str], settings: Settings
) -> None:
    headers, pid = owner
    response = await upload(client, headers, pid, [("blank.txt", b"", "text/plain")])
    assert_error(response, 400, "bad_request", "blank.txt", "empty")
    assert await documents_in(client, headers, pid) == []
    assert stored_files(settings) == ["tmp"]


@pytest.mark.parametrize(
    ("filename", "data", "says"),
    [
        ("scan.pdf", b"GIF89a\x10\x00\x10\x00" + bytes(64), "GIF image"),
        ("minutes.doc", OLE2_DOC, "legacy Word .doc"),
        ("report.docx", b"", "ZIP archive"),  # data filled in below: a ZIP without word/
    ],
    ids=["gif-named-pdf", "legacy-doc", "zip-named-docx"],
)
async def test_a_file_of_the_wrong_kind_is_415_naming_it(
    client: httpx.AsyncClient,
    owner: tuple[dict[str, str], str],
    settings: Settings,
    filename: str,
    data: bytes,
    says: str,
) -> None:
    headers, pid = owner
    if not data:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("notes/readme.txt", "not a Word document")
        data = buffer.getvalue()

    # The content type the browser claims does not matter; the bytes do.
    response = await upload(client, headers, pid, [(filename, data, "application/pdf")])

    assert_error(response, 415, "unsupported_media_type", filename, says)
    assert await documents_in(client, headers, pid) == []
    assert stored_files(settings) == ["tmp"]


async def test_a_batch_with_one_bad_file_stores_none_of_it(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str], settings: Settings
) -> None:
    headers, pid = owner
    response = await upload(
        client,
        headers,
        pid,
        [
            ("first.txt", TEXT, "text/plain"),
            ("second.pdf", make_pdf(["A good PDF."]), "application/pdf"),
            ("photo.pdf", PNG, "application/pdf"),
            ("last.txt", b"Another good file.\n", "text/plain"),
        ],
    )
    assert_error(response, 415, "unsupported_media_type", "photo.pdf")
    assert await documents_in(client, headers, pid) == []
    assert stored_files(settings) == ["tmp"]

    # The good files can then be uploaded on their own.
    response = await upload(client, headers, pid, [("first.txt", TEXT, "text/plain")])
    assert response.status_code == 201, response.text


async def test_pdfs_that_cannot_be_read_end_failed_with_a_reason(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    real = make_pdf(["A real page of text about aspirin."])
    response = await upload(
        client,
        headers,
        pid,
        [
            ("truncated.pdf", real[:200], "application/pdf"),  # a download cut short
            ("locked.pdf", make_encrypted_pdf("Confidential results."), "application/pdf"),
            ("scanned.pdf", make_image_only_pdf(), "application/pdf"),
        ],
    )
    # Accepted: they look like PDFs; what is wrong shows once they are parsed.
    assert response.status_code == 201, response.text
    assert [d["status"] for d in response.json()["items"]] == ["uploaded"] * 3

    documents = {d["filename"]: d for d in await wait_for_documents(client, headers, pid)}
    assert {name: d["status"] for name, d in documents.items()} == {
        "truncated.pdf": "failed",
        "locked.pdf": "failed",
        "scanned.pdf": "failed",
    }
    for document in documents.values():
        assert document["error"] and " " in document["error"], document
        assert document["page_count"] in (None, 0)
    assert "damaged" in documents["truncated.pdf"]["error"]
    assert "password" in documents["locked.pdf"]["error"]
    assert "scanned" in documents["scanned.pdf"]["error"]

    # A failed document has no text to show, and says so without an error.
    failed_id = documents["locked.pdf"]["id"]
    text = await client.get(f"/api/v1/projects/{pid}/documents/{failed_id}/text", headers=headers)
    assert text.status_code == 200, text.text
    assert text.json()["status"] == "failed" and text.json()["pages"] == []


async def test_text_with_nul_bytes_or_invalid_utf8_is_read(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    nul = b"Patient\x00 record exported from the old system.\n" + TEXT * 4
    latin1 = "Caf\u00e9 study, r\u00e9sum\u00e9 of results.\n".encode("latin-1") + TEXT * 4
    response = await upload(
        client, headers, pid, [("export.txt", nul, ""), ("legacy.txt", latin1, "")]
    )
    assert response.status_code == 201, response.text

    documents = {d["filename"]: d for d in await wait_for_documents(client, headers, pid)}
    assert {name: d["status"] for name, d in documents.items()} == {
        "export.txt": "ready",
        "legacy.txt": "ready",
    }
    texts = {}
    for name, document in documents.items():
        response = await client.get(
            f"/api/v1/projects/{pid}/documents/{document['id']}/text", headers=headers
        )
        texts[name] = "".join(page["text"] for page in response.json()["pages"])
    assert "\x00" not in texts["export.txt"]
    assert "Patient record exported" in texts["export.txt"]
    # A stray legacy byte costs one character, not the document.
    assert "study, r\ufffdsum\ufffd of results" in texts["legacy.txt"]
    assert "120 patients were randomised" in texts["legacy.txt"]


async def test_the_same_bytes_uploaded_twice_are_one_document(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str], settings: Settings
) -> None:
    headers, pid = owner
    first = await upload(client, headers, pid, [("trial.txt", TEXT, "text/plain")])
    again = await upload(client, headers, pid, [("trial-copy.txt", TEXT, "text/plain")])
    twice = await upload(
        client, headers, pid, [("a.txt", b"Other.\n", ""), ("b.txt", b"Other.\n", "")]
    )
    assert first.status_code == twice.status_code == 201
    assert again.status_code == 200  # nothing new was stored

    assert again.json()["items"][0]["id"] == first.json()["items"][0]["id"]
    assert twice.json()["items"][0]["id"] == twice.json()["items"][1]["id"]
    documents = await documents_in(client, headers, pid)
    assert len(documents) == 2
    assert sorted(d["filename"] for d in documents) == ["a.txt", "trial.txt"]
    blobs = [p for p in stored_files(settings) if p.startswith("sha256/") and p.count("/") == 2]
    assert len(blobs) == 2


async def test_a_duplicate_upload_says_that_nothing_new_was_stored(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    first = await upload(client, headers, pid, [("trial.txt", TEXT, "text/plain")])
    assert first.status_code == 201, first.text
    [stored] = first.json()["items"]
    assert first.json()["created"] == 1
    assert stored["duplicate_of"] is None and stored["uploaded_filename"] == "trial.txt"

    # The same bytes under a new name: the stored document, said to be one, and 200.
    again = await upload(client, headers, pid, [("trial-final.txt", TEXT, "text/plain")])
    assert again.status_code == 200, again.text
    assert again.json()["created"] == 0
    [item] = again.json()["items"]
    assert item["id"] == item["duplicate_of"] == stored["id"]
    assert item["filename"] == "trial.txt" and item["uploaded_filename"] == "trial-final.txt"

    # A batch with one new file is 201; each item says whether it is new.
    mixed = await upload(
        client,
        headers,
        pid,
        [
            ("new.txt", b"A new file.\n", ""),
            ("trial-v3.txt", TEXT, ""),
            ("new-again.txt", b"A new file.\n", ""),  # earlier in this same upload
        ],
    )
    assert mixed.status_code == 201, mixed.text
    assert mixed.json()["created"] == 1
    new, old, repeat = mixed.json()["items"]
    assert new["duplicate_of"] is None and new["filename"] == "new.txt"
    assert old["duplicate_of"] == stored["id"] and old["uploaded_filename"] == "trial-v3.txt"
    assert repeat["duplicate_of"] == new["id"] and repeat["filename"] == "new.txt"
    assert len(await documents_in(client, headers, pid)) == 2


async def all_settled(
    client: httpx.AsyncClient, headers: dict[str, str], pid: str, timeout: float = 120
) -> list[dict[str, Any]]:
    """Every document of the project (up to 500), once none is waiting to be parsed."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(
            f"/api/v1/projects/{pid}/documents", params={"limit": 500}, headers=headers
        )
        items: list[dict[str, Any]] = response.json()["items"]
        if all(d["status"] in ("ready", "failed") for d in items):
            return items
        assert time.monotonic() < deadline, [d["status"] for d in items]
        await asyncio.sleep(0.05)


async def test_a_hundred_files_in_one_upload_are_each_their_own_document(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str], settings: Settings
) -> None:
    headers, pid = owner
    kept = await upload(client, headers, pid, [("kept.txt", TEXT, "text/plain")])
    files: list[tuple[str, bytes, str]] = []
    for n in range(96):
        line = f"Document number {n} of the batch."
        if n % 3 == 0:
            files.append((f"n{n}.txt", line.encode() + b"\n", "text/plain"))
        elif n % 3 == 1:
            files.append((f"n{n}.pdf", make_pdf([line]), "application/pdf"))
        else:
            files.append((f"n{n}.docx", make_docx([line]), "application/octet-stream"))
    # Larger than what is gathered in memory before it is written, among the small ones.
    large = b"A long report of the trial.\n" * 12_000
    files[40:40] = [("large.txt", large, "text/plain")]
    # Bytes already in the project, and bytes twice in this upload: one document each.
    files += [("kept-again.txt", TEXT, ""), ("n0-again.txt", files[0][1], "")]
    files.append(("empty-ish.txt", b" \n", "text/plain"))

    response = await upload(client, headers, pid, files)
    assert response.status_code == 201, response.text
    items = response.json()["items"]
    assert [item["filename"] for item in items[:-3]] == [name for name, _, _ in files[:-3]]
    assert items[-3]["id"] == kept.json()["items"][0]["id"]
    assert items[-2]["id"] == items[0]["id"]
    assert [item["sha256"] for item in items] == [
        hashlib.sha256(data).hexdigest() for _, data, _ in files
    ]
    assert [item["size_bytes"] for item in items] == [len(data) for _, data, _ in files]
    assert blob_path(settings, items[40]["sha256"]).read_bytes() == large
    assert stored_files(settings).count("tmp") == 1
    assert not list((settings.storage_dir / "tmp").iterdir())

    documents = await all_settled(client, headers, pid)
    assert len(documents) == 99
    by_name = {d["filename"]: d for d in documents}
    assert by_name["empty-ish.txt"]["status"] == "failed"
    for n in (0, 1, 2, 50, 94, 95):
        name = next(name for name, _, _ in files if name.startswith(f"n{n}."))
        text = await client.get(
            f"/api/v1/projects/{pid}/documents/{by_name[name]['id']}/text", headers=headers
        )
        assert text.json()["pages"][0]["text"] == f"Document number {n} of the batch."


async def test_the_same_file_uploaded_concurrently_is_still_one_document(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    """A double-click on "upload": the requests race, none fails with a server error."""
    headers, pid = owner
    data = b"The same report, sent four times at once.\n" * 2000
    responses = await asyncio.gather(
        *(upload(client, headers, pid, [("report.txt", data, "text/plain")]) for _ in range(4))
    )
    statuses = [r.status_code for r in responses]
    # One request stores it (201); one that starts after that commit finds it (200,
    # a duplicate); one that overlaps it is told to try again (409).
    assert set(statuses) <= {200, 201, 409}, statuses
    assert statuses.count(201) == 1, statuses
    ids = {r.json()["items"][0]["id"] for r in responses if r.status_code in (200, 201)}
    assert len(ids) == 1
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "conflict", "again")
    documents = await documents_in(client, headers, pid)
    assert [d["id"] for d in documents] == list(ids)
    # Uploading again after the race returns the stored document.
    again = await upload(client, headers, pid, [("report.txt", data, "text/plain")])
    assert again.status_code == 200 and again.json()["items"][0]["id"] in ids
    assert again.json()["items"][0]["duplicate_of"] in ids


async def test_a_docx_keeps_its_pages_and_tables(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    data = make_docx(
        [
            "Cohort study of statins.",
            [["Participants", "87"], ["Mean age", "47"]],
            "Recruitment started in May 2019.",
        ],
        page_break_after={0},
    )
    response = await upload(client, headers, pid, [("study.docx", data, "")])
    assert response.status_code == 201, response.text
    [document] = await wait_for_documents(client, headers, pid)
    assert document["status"] == "ready", document
    assert document["content_type"].endswith("wordprocessingml.document")

    response = await client.get(
        f"/api/v1/projects/{pid}/documents/{document['id']}/text", headers=headers
    )
    body = response.json()
    pages = body["pages"]
    assert body["page_count"] == len(pages) == document["page_count"] == 2
    assert [p["number"] for p in pages] == [1, 2]
    assert "Cohort study of statins." in pages[0]["text"]
    assert "Participants | 87" in pages[1]["text"] and "Mean age | 47" in pages[1]["text"]
    assert "Recruitment started in May 2019." in pages[1]["text"]
    # Offsets place each page in the document's whole text, in order.
    assert pages[0]["char_start"] == 0
    for page in pages:
        assert page["char_end"] - page["char_start"] == len(page["text"])
    assert pages[0]["char_end"] <= pages[1]["char_start"]


async def test_a_name_that_promises_another_format_is_read_by_content_and_says_so(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    files = [
        ("minutes.docx", b"Minutes of the trial steering committee.\n", ""),
        ("paper.pdf", b"Preprint: 120 patients were randomised.\n", ""),
        ("scan.docx", make_pdf(["A PDF under a Word name."]), ""),
        ("notes.txt", TEXT, ""),
        ("study.docx", make_docx(["A real Word document."]), ""),
    ]
    response = await upload(client, headers, pid, files)
    assert response.status_code == 201, response.text
    expected = {
        "minutes.docx": ["Read as plain text: the file is not a Word document."],
        "paper.pdf": ["Read as plain text: the file is not a PDF."],
        "scan.docx": ["Read as a PDF: the file is not a Word document."],
        "notes.txt": [],
        "study.docx": [],
    }
    assert {d["filename"]: d["notes"] for d in response.json()["items"]} == expected
    # The note stays on the document, however it is read back, and it is still ready.
    documents = await wait_for_documents(client, headers, pid)
    assert {d["filename"]: d["notes"] for d in documents} == expected
    assert all(d["status"] == "ready" for d in documents), documents
    [minutes] = [d for d in documents if d["filename"] == "minutes.docx"]
    assert minutes["content_type"] == "text/plain"
    one = await client.get(f"/api/v1/projects/{pid}/documents/{minutes['id']}", headers=headers)
    assert one.json()["notes"] == expected["minutes.docx"]


async def test_a_deleted_document_is_gone_with_its_file(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str], settings: Settings
) -> None:
    headers, pid = owner
    response = await upload(client, headers, pid, [("trial.txt", TEXT, "text/plain")])
    document = response.json()["items"][0]
    await wait_for_documents(client, headers, pid)
    blob = blob_path(settings, document["sha256"])
    assert blob.read_bytes() == TEXT

    url = f"/api/v1/projects/{pid}/documents/{document['id']}"
    response = await client.delete(url, headers=headers)
    assert response.status_code == 204, response.text

    assert_error(await client.get(url, headers=headers), 404, "not_found")
    assert_error(await client.get(f"{url}/text", headers=headers), 404, "not_found")
    assert_error(await client.delete(url, headers=headers), 404, "not_found")
    assert await documents_in(client, headers, pid) == []
    assert not blob.exists()


async def test_deleting_a_document_keeps_the_file_another_project_still_uses(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str], settings: Settings
) -> None:
    headers, pid = owner
    other = (await create_project(client, headers, "Other"))["id"]
    first = (await upload(client, headers, pid, [("a.txt", TEXT, "")])).json()["items"][0]
    second = (await upload(client, headers, other, [("b.txt", TEXT, "")])).json()["items"][0]
    await wait_for_documents(client, headers, pid)
    await wait_for_documents(client, headers, other)

    response = await client.delete(
        f"/api/v1/projects/{pid}/documents/{first['id']}", headers=headers
    )
    assert response.status_code == 204, response.text

    assert blob_path(settings, first["sha256"]).exists()
    response = await client.get(
        f"/api/v1/projects/{other}/documents/{second['id']}/text", headers=headers
    )
    assert "120 patients" in response.json()["pages"][0]["text"]
