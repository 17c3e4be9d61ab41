"""Each transition of a delivery (webhooks/lifecycle.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.db import job_write_scope, session_scope
from quarry.models import Delivery, Project, User, Webhook
from quarry.models.base import utcnow
from quarry.webhooks import lifecycle
from quarry.webhooks.events import Event
from tests.support.api import schema_sessions

Sessions = async_sessionmaker[AsyncSession]
LEASE = timedelta(seconds=60)
WINDOW = timedelta(hours=1)


@pytest.fixture
async def sessions(both_backends: str) -> AsyncIterator[Sessions]:
    async with schema_sessions(both_backends) as made:
        yield made


async def _project_with_hooks(sessions: Sessions, *events: list[str]) -> uuid.UUID:
    async with session_scope(sessions) as session:
        user = User(email=f"{uuid.uuid4().hex}@example.org", password_hash="x")
        session.add(user)
        await session.flush()
        project = Project(owner_id=user.id, name="p")
        session.add(project)
        await session.flush()
        for n, names in enumerate(events):
            session.add(
                Webhook(
                    project_id=project.id,
                    url=f"http://127.0.0.1:9/{n}",
                    secret="s" * 20,
                    events=names,
                )
            )
        return project.id


async def _event(
    sessions: Sessions, project_id: uuid.UUID, event: Event = Event.RUN_FINISHED
) -> int:
    async with session_scope(sessions) as session:
        return await lifecycle.record_event(session, project_id, event, {"run": {"id": "r"}})


async def _claim(
    sessions: Sessions, owner: str, limit: int = 10, lease: timedelta = LEASE
) -> list[lifecycle.ClaimedDelivery]:
    async with job_write_scope(sessions) as session:
        return await lifecycle.claim_due(session, owner, lease, limit, WINDOW)


async def _rows(sessions: Sessions) -> list[Delivery]:
    async with sessions() as session:
        return list(
            (await session.execute(select(Delivery).order_by(Delivery.created_at))).scalars()
        )


async def _expire_leases(sessions: Sessions) -> None:
    """Move every lease into the past, as time passing would (no sleeping in tests)."""
    async with session_scope(sessions) as session:
        await session.execute(
            update(Delivery).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


async def test_an_event_is_written_once_per_webhook_that_receives_it(sessions: Sessions) -> None:
    pid = await _project_with_hooks(
        sessions, ["run.finished"], ["run.finished", "run.failed"], ["document.failed"]
    )
    assert await _event(sessions, pid) == 2
    assert await _event(sessions, pid, Event.RUN_BUDGET_REACHED) == 0
    rows = await _rows(sessions)
    assert [r.status for r in rows] == ["pending", "pending"]
    assert rows[0].payload["id"] == rows[1].payload["id"]  # one event, two deliveries
    assert rows[0].give_up_at is None and rows[0].attempts == 0


async def test_an_event_rolled_back_leaves_no_delivery(sessions: Sessions) -> None:
    pid = await _project_with_hooks(sessions, ["run.finished"])
    with pytest.raises(RuntimeError):
        async with session_scope(sessions) as session:
            await lifecycle.record_event(session, pid, Event.RUN_FINISHED, {})
            raise RuntimeError("the run's transaction fails")
    assert await _rows(sessions) == []


async def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_expires(
    sessions: Sessions,
) -> None:
    pid = await _project_with_hooks(sessions, ["run.finished"])
    await _event(sessions, pid)
    [first] = await _claim(sessions, "a")
    assert first.attempts == 1 and first.url == "http://127.0.0.1:9/0"
    assert await _claim(sessions, "b") == []
    await _expire_leases(sessions)  # sender "a" died: its lease ran out
    [again] = await _claim(sessions, "b")
    assert again.id == first.id and again.attempts == 2
    # "a" comes back too late: what it records is dropped, "b" holds it.
    async with session_scope(sessions) as session:
        assert not await lifecycle.record_delivered(session, first.id, "a", 200)
        assert await lifecycle.record_delivered(session, first.id, "b", 200)
    [row] = await _rows(sessions)
    assert row.status == "delivered" and row.lease_owner is None


async def test_a_failed_attempt_waits_then_gives_up_past_the_window(sessions: Sessions) -> None:
    pid = await _project_with_hooks(sessions, ["run.finished"])
    await _event(sessions, pid)
    [claimed] = await _claim(sessions, "a")
    later = utcnow() + timedelta(minutes=5)
    async with session_scope(sessions) as session:
        status = await lifecycle.record_failed(
            session, claimed.id, "a", response_status=500, error="500", next_attempt_at=later
        )
    assert status == "pending"
    assert await _claim(sessions, "a") == []  # not due yet
    [row] = await _rows(sessions)
    assert row.next_attempt_at == later and row.give_up_at is not None
    async with session_scope(sessions) as session:
        await session.execute(
            Delivery.__table__.update().values(next_attempt_at=utcnow())  # type: ignore[attr-defined]
        )
    [claimed] = await _claim(sessions, "a")
    async with session_scope(sessions) as session:
        status = await lifecycle.record_failed(
            session,
            claimed.id,
            "a",
            response_status=None,
            error="refused",
            next_attempt_at=utcnow() + WINDOW * 2,
        )
    assert status == "failed"
    [row] = await _rows(sessions)
    assert row.status == "failed" and row.attempts == 2 and row.error == "refused"
    async with session_scope(sessions) as session:
        assert await lifecycle.send_again(session, row.id)
        assert not await lifecycle.send_again(session, row.id)  # pending already
    [claimed] = await _claim(sessions, "a")
    assert claimed.attempts == 3


async def test_a_stopping_sender_hands_its_claims_back(sessions: Sessions) -> None:
    pid = await _project_with_hooks(sessions, ["run.finished"])
    await _event(sessions, pid)
    [claimed] = await _claim(sessions, "a")
    async with session_scope(sessions) as session:
        await lifecycle.release(session, [claimed.id], "a")
    [again] = await _claim(sessions, "b")
    assert again.id == claimed.id and again.attempts == 1


async def test_concurrent_senders_never_take_one_delivery_twice(sessions: Sessions) -> None:
    pid = await _project_with_hooks(sessions, ["run.finished"], ["run.finished"])
    for _ in range(25):
        await _event(sessions, pid)
    claims = await asyncio.gather(*(_claim(sessions, f"s{n}", limit=7) for n in range(8)))
    taken = [d.id for batch in claims for d in batch]
    assert len(taken) == len(set(taken)) == 50
