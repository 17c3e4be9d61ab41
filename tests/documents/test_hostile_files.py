"""The hostile-file corpus through the API: every file ends as a clear 4xx or as a document
`ready` or `failed` with its reason — never a 500, never another document's problem.

The files that meet the parser's resource limits (seconds each) are exercised here only
through `test_parse_isolation.py`; `test_hostile_corpus_server.py` sends the whole corpus,
those included, to a real server at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from quarry.documents.parsing import isolation
from quarry.settings import Settings
from tests.conftest import make_settings
from tests.documents.hostile_corpus import (
    CORPUS,
    CORPUS_LIMITS,
    PASSWD_LINE,
    Hostile,
    mismatches,
)
from tests.support.api import create_project, sign_up, upload, wait_for_documents
from tests.support.fake_llm import FakeLLM

FAST = [hostile for hostile in CORPUS if not hostile.slow]


@pytest.fixture(autouse=True)
def _fault_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "CHILD_MODULE", "tests.documents.fault_child")


@pytest.fixture
def settings(tmp_path: Path, fake_llm: FakeLLM) -> Settings:
    return make_settings(tmp_path, fake_llm, **CORPUS_LIMITS)


async def _no_server_errors(response: httpx.Response) -> None:
    if response.status_code >= 500:
        await response.aread()
        raise AssertionError(f"{response.request.url} answered {response.status_code}")


@pytest.fixture
async def client(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    client.event_hooks["response"].append(_no_server_errors)
    yield client
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text


@pytest.fixture
async def owner(app: FastAPI, client: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    headers = await sign_up(app, client, "hostile@example.org")
    project = await create_project(client, headers, "Hostile files")
    return headers, project["id"]


async def document_text(
    client: httpx.AsyncClient, headers: dict[str, str], pid: str, document_id: str
) -> str:
    response = await client.get(
        f"/api/v1/projects/{pid}/documents/{document_id}/text", headers=headers
    )
    assert response.status_code == 200, response.text
    return "\n\n".join(page["text"] for page in response.json()["pages"])


async def upload_one(
    client: httpx.AsyncClient, headers: dict[str, str], pid: str, hostile: Hostile
) -> httpx.Response:
    return await upload(client, headers, pid, [(hostile.filename, hostile.data, "")])


async def test_every_fast_hostile_file_ends_as_it_should(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    responses = await asyncio.gather(*(upload_one(client, headers, pid, h) for h in FAST))
    documents = {d["filename"]: d for d in await wait_for_documents(client, headers, pid, 90)}

    problems: list[str] = []
    for hostile, response in zip(FAST, responses, strict=True):
        document = documents.get(hostile.filename)
        text = ""
        if document is not None and document["status"] == "ready":
            text = await document_text(client, headers, pid, document["id"])
            assert "\x00" not in text
        problems += mismatches(hostile, response, document, text)
    assert not problems, "\n".join(problems)

    rejected = {h.filename for h in FAST if h.outcome == "rejected"}
    assert set(documents) == {h.filename for h in FAST} - rejected


async def test_an_external_entity_never_reaches_the_text(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    [xxe] = [h for h in CORPUS if h.filename == "xxe.docx"]
    assert (await upload_one(client, headers, pid, xxe)).status_code == 201
    [document] = await wait_for_documents(client, headers, pid)

    assert document["status"] == "failed"
    assert PASSWD_LINE not in str(document)
    assert PASSWD_LINE not in await document_text(client, headers, pid, document["id"])
    if Path("/etc/passwd").is_file():
        assert PASSWD_LINE in Path("/etc/passwd").read_text()  # the test would have seen it


async def test_a_pdf_named_docx_is_stored_and_served_as_a_pdf(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    [misnamed] = [h for h in CORPUS if h.filename == "actually-a-pdf.docx"]
    response = await upload_one(client, headers, pid, misnamed)
    assert response.json()["items"][0]["content_type"] == "application/pdf"


async def test_three_thousand_pages_keep_their_numbers_and_offsets(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    [long] = [h for h in CORPUS if h.filename == "long.pdf"]
    assert (await upload_one(client, headers, pid, long)).status_code == 201
    [document] = await wait_for_documents(client, headers, pid, 60)
    assert document["status"] == "ready" and document["page_count"] == 3000

    response = await client.get(
        f"/api/v1/projects/{pid}/documents/{document['id']}/text", headers=headers
    )
    pages = response.json()["pages"]
    assert [p["number"] for p in pages] == list(range(1, 3001))
    assert pages[1234]["text"] == "Page 1235 of the long report."
    assert all(b["char_start"] == a["char_end"] + 2 for a, b in itertools.pairwise(pages))
    assert document["char_count"] == pages[-1]["char_end"]


async def test_one_crashing_document_in_a_batch_fails_alone(
    client: httpx.AsyncClient, owner: tuple[dict[str, str], str]
) -> None:
    headers, pid = owner
    batch = [h for h in CORPUS if h.filename in ("segfault.txt", "ordinary.txt", "xxe.docx")]
    response = await upload(client, headers, pid, [(h.filename, h.data, "") for h in batch])
    assert response.status_code == 201, response.text
    documents = {d["filename"]: d for d in await wait_for_documents(client, headers, pid)}
    assert {name: d["status"] for name, d in documents.items()} == {
        "segfault.txt": "failed",
        "ordinary.txt": "ready",
        "xxe.docx": "failed",
    }
    assert "crashed" in documents["segfault.txt"]["error"]
