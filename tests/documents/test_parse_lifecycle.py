"""Each transition of a document's parse (documents/lifecycle.py), on SQLite and PostgreSQL,
and a parse slower than the sweep interval running once, end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.db import job_write_scope, session_scope
from quarry.documents import lifecycle
from quarry.documents.parsing import build_document
from quarry.models import Document, DocumentPage, DocumentStatus, Project, User
from quarry.models.base import utcnow
from tests.conftest import make_settings
from tests.support.api import (
    create_project,
    running_app,
    schema_sessions,
    sign_up,
    upload,
    wait_for_documents,
)
from tests.support.postgres import temporary_postgres_database

LEASE = timedelta(seconds=60)
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/quarry.db"
    else:
        with temporary_postgres_database("quarry_parse") as url:
            yield url


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    async with schema_sessions(database_url) as made:
        yield made


async def add_documents(sessions: Sessions, count: int) -> list[uuid.UUID]:
    async with session_scope(sessions) as session:
        user = User(email=f"{uuid.uuid4().hex}@example.org", password_hash="x")
        session.add(user)
        await session.flush()
        project = Project(owner_id=user.id, name="p")
        session.add(project)
        await session.flush()
        documents = [
            Document(
                project_id=project.id,
                filename=f"d{n}.txt",
                content_type="text/plain",
                kind="text",
                size_bytes=1,
                sha256=uuid.uuid4().hex * 2,
                storage_key=f"k{n}",
                status=DocumentStatus.UPLOADED,
                created_at=utcnow() + timedelta(microseconds=n),
            )
            for n in range(count)
        ]
        session.add_all(documents)
        await session.flush()
        return [d.id for d in documents]


async def status_of(sessions: Sessions, document_id: uuid.UUID) -> Document:
    async with sessions() as session:
        found = await session.execute(select(Document).where(Document.id == document_id))
        return found.scalar_one()


async def claim(sessions: Sessions, owner: str, limit: int) -> list[lifecycle.ClaimedDocument]:
    async with job_write_scope(sessions) as session:
        return await lifecycle.claim_documents(session, owner, LEASE, limit)


async def test_a_claim_takes_the_oldest_waiting_documents_with_a_lease(
    sessions: Sessions,
) -> None:
    ids = await add_documents(sessions, 3)
    first = await claim(sessions, "w1", 2)
    assert [d.id for d in first] == ids[:2]
    assert [d.id for d in await claim(sessions, "w2", 5)] == ids[2:]
    assert await claim(sessions, "w3", 5) == []  # all held
    document = await status_of(sessions, ids[0])
    assert (document.status, document.lease_owner, document.parse_attempts) == (
        DocumentStatus.PARSING,
        "w1",
        1,
    )


async def test_a_parse_whose_lease_expired_is_claimed_again_then_given_up(
    sessions: Sessions,
) -> None:
    (doc_id,) = await add_documents(sessions, 1)
    for attempt in range(1, lifecycle.MAX_PARSE_ATTEMPTS + 1):
        assert [d.id for d in await claim(sessions, f"w{attempt}", 1)] == [doc_id]
        async with session_scope(sessions) as session:  # its worker died
            await session.execute(
                update(Document).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
    assert await claim(sessions, "w9", 1) == []
    document = await status_of(sessions, doc_id)
    assert document.status == DocumentStatus.FAILED
    assert document.error == lifecycle.GAVE_UP_REASON.format(n=lifecycle.MAX_PARSE_ATTEMPTS)


async def test_results_are_stored_only_with_the_lease(sessions: Sessions) -> None:
    ready, failed = await add_documents(sessions, 2)
    await claim(sessions, "w1", 2)
    parsed = build_document(["Page one.", "Page two."])
    async with job_write_scope(sessions) as session:
        assert not await lifecycle.store_parsed(session, ready, "someone-else", parsed)
        assert await lifecycle.store_parsed(session, ready, "w1", parsed)
        assert await lifecycle.store_failed(session, failed, "w1", "It is damaged.")
    async with job_write_scope(sessions) as session:  # a second delivery finds them done
        assert not await lifecycle.store_failed(session, ready, "w1", "late")
    document = await status_of(sessions, ready)
    assert (document.status, document.page_count) == (DocumentStatus.READY, 2)
    async with sessions() as session:
        pages = (
            await session.execute(
                select(DocumentPage.text).where(DocumentPage.document_id == ready)
            )
        ).scalars()
        assert list(pages) == ["Page one.", "Page two."]
    assert (await status_of(sessions, failed)).error == "It is damaged."


async def test_renewing_and_releasing_parses(sessions: Sessions) -> None:
    ids = await add_documents(sessions, 2)
    await claim(sessions, "w1", 2)
    async with job_write_scope(sessions) as session:
        assert await lifecycle.renew_leases(session, ids, "w1", LEASE) == set(ids)
        assert await lifecycle.renew_leases(session, ids, "w2", LEASE) == set()
        await lifecycle.release_documents(session, ids[:1], "w1")
    released = await status_of(sessions, ids[0])
    # Handed back by a worker that stopped: waiting again, and not counted as an attempt.
    assert (released.status, released.parse_attempts) == (DocumentStatus.UPLOADED, 0)


async def test_a_parse_slower_than_the_sweep_interval_runs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quarry.documents.parsing import isolation

    parses = 0
    real_parse = isolation.IsolatedParser.parse

    async def slow_parse(self: isolation.IsolatedParser, path: Path, kind: object) -> object:
        nonlocal parses
        parses += 1
        await asyncio.sleep(2.0)  # four sweeps and three lease renewals
        return await real_parse(self, path, kind)  # type: ignore[arg-type]

    monkeypatch.setattr(isolation.IsolatedParser, "parse", slow_parse)
    settings = make_settings(tmp_path, None, sweep_interval_seconds=0.5, task_lease_seconds=2)
    async with running_app(settings) as (app, client):
        headers = await sign_up(app, client, "slow@example.org")
        pid = (await create_project(client, headers))["id"]
        response = await upload(client, headers, pid, [("a.txt", b"Some text.", "text/plain")])
        assert response.status_code == 201
        (document,) = await wait_for_documents(client, headers, pid, timeout=60)
    assert document["status"] == "ready"
    assert parses == 1
