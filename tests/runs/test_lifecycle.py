"""Each run and task transition of runs/lifecycle.py on its own, on SQLite and PostgreSQL.

No end-to-end run: each test puts the rows in the state the transition starts from, makes the
transition, and checks what a user (or the next worker) would see — statuses, the run's
counts, the log — and what must not happen (a claim of a cancelled run, a store without the
lease, a run finished twice).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.db import job_write_scope, session_scope
from quarry.models import (
    Document,
    DocumentStatus,
    Extraction,
    Project,
    PromptVersion,
    Run,
    RunEvent,
    RunStatus,
    User,
    Variable,
)
from quarry.models.base import utcnow
from quarry.runs import lifecycle
from quarry.runs.lifecycle import ClaimedTask, LogLine, Outcome
from tests.support.api import schema_sessions
from tests.support.postgres import temporary_postgres_database

LEASE = timedelta(seconds=60)
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/quarry.db"
    else:
        with temporary_postgres_database("quarry_lifecycle") as url:
            yield url


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[Sessions]:
    async with schema_sessions(database_url) as made:
        yield made


class World:
    """A project with ready documents and variables, for runs over them."""

    def __init__(self, sessions: Sessions, project_id: uuid.UUID, documents: list[uuid.UUID]):
        self.sessions = sessions
        self.project_id = project_id
        self.documents = documents
        self.variables: list[tuple[uuid.UUID, uuid.UUID]] = []


async def make_world(sessions: Sessions, documents: int = 3, variables: int = 2) -> World:
    async with session_scope(sessions) as session:
        user = User(email=f"{uuid.uuid4().hex}@example.org", password_hash="x")
        session.add(user)
        await session.flush()
        project = Project(owner_id=user.id, name="p")
        session.add(project)
        await session.flush()
        docs = []
        for n in range(documents):
            doc = Document(
                project_id=project.id,
                filename=f"d{n}.txt",
                content_type="text/plain",
                kind="text",
                size_bytes=1,
                sha256=uuid.uuid4().hex * 2,
                storage_key="k",
                status=DocumentStatus.READY,
                created_at=utcnow() + timedelta(microseconds=n),
            )
            session.add(doc)
            docs.append(doc)
        world = World(sessions, project.id, [])
        for n in range(variables):
            variable = Variable(
                project_id=project.id, name=f"v{n}", label="v", description="d", type="text"
            )
            session.add(variable)
            await session.flush()
            version = PromptVersion(
                variable_id=variable.id, version=1, spec={}, spec_hash="h", prompt="p"
            )
            session.add(version)
            await session.flush()
            world.variables.append((variable.id, version.id))
        await session.flush()
        world.documents = [d.id for d in docs]
    return world


async def new_run(world: World, **fields: Any) -> Run:
    async with session_scope(world.sessions) as session:
        planned = await lifecycle.create_run(
            session,
            Run(project_id=world.project_id, model="m", settings={}, **fields),
            project_id=world.project_id,
            document_ids=None,
            variables=world.variables,
        )
        return planned.run


async def run_row(sessions: Sessions, run_id: uuid.UUID) -> Run:
    async with sessions() as session:
        return (await session.execute(select(Run).where(Run.id == run_id))).scalar_one()


async def statuses(sessions: Sessions, run_id: uuid.UUID) -> dict[str, int]:
    async with sessions() as session:
        rows = await session.execute(
            select(Extraction.status, func.count())
            .where(Extraction.run_id == run_id)
            .group_by(Extraction.status)
        )
        return {status: count for status, count in rows.all()}


def counts(run: Run) -> dict[str, int]:
    """The run row's counters, in the form of `statuses`."""
    found = {
        "pending": run.pending_count,
        "running": run.running_count,
        "succeeded": run.succeeded_count,
        "not_found": run.not_found_count,
        "failed": run.failed_count,
        "cancelled": run.cancelled_count,
    }
    return {k: v for k, v in found.items() if v}


async def events(sessions: Sessions, run_id: uuid.UUID) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(
            select(RunEvent.event).where(RunEvent.run_id == run_id).order_by(RunEvent.id)
        )
        return list(rows.scalars())


async def claim(
    sessions: Sessions, run_id: uuid.UUID, owner: str = "w1", limit: int = 100
) -> list[ClaimedTask]:
    async with job_write_scope(sessions) as session:
        return await lifecycle.claim_tasks(session, run_id, owner, LEASE, limit)


async def store(
    sessions: Sessions, tasks: list[ClaimedTask], status: str = "succeeded", owner: str = "w1"
) -> lifecycle.StoreResult:
    outcomes = [
        Outcome(t, status, value="x", attempts=1, tokens_in=10, tokens_out=2) for t in tasks
    ]
    async with job_write_scope(sessions) as session:
        return await lifecycle.store_outcomes(session, owner, outcomes)


async def expire_leases(sessions: Sessions, run_id: uuid.UUID) -> None:
    async with session_scope(sessions) as session:
        await session.execute(
            update(Extraction)
            .where(Extraction.run_id == run_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


# -- creating a run ----------------------------------------------------------------------------


async def test_a_small_run_is_created_queued_with_every_task_row_in_order(
    sessions: Sessions,
) -> None:
    world = await make_world(sessions, documents=3, variables=2)
    run = await new_run(world)
    run = await run_row(sessions, run.id)
    assert run.status == RunStatus.QUEUED
    assert (run.task_count, run.document_count, run.variable_count) == (6, 3, 2)
    assert counts(run) == {"pending": 6} == await statuses(sessions, run.id)
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Extraction.seq, Extraction.document_id, Extraction.variable_id)
                .where(Extraction.run_id == run.id)
                .order_by(Extraction.seq)
            )
        ).all()
    # Document-major, documents in upload order, variables in codebook order.
    assert [(r.document_id, r.variable_id) for r in rows] == [
        (d, v) for d in world.documents for v, _ in world.variables
    ]
    assert [r.seq for r in rows] == list(range(6))


async def test_a_large_run_is_prepared_chunk_by_chunk_under_a_lease(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "CHUNK_ROWS", 4)  # two documents × two variables a chunk
    monkeypatch.setattr(lifecycle, "PREPARE_CHUNK_ROWS", 4)
    world = await make_world(sessions, documents=5, variables=2)
    run = await new_run(world)
    run = await run_row(sessions, run.id)
    assert run.status == RunStatus.PREPARING and run.documents_prepared == 2
    assert counts(run) == {"pending": 4} and run.unprepared_count == 6

    async with job_write_scope(sessions) as session:
        assert await lifecycle.take_preparation(session, run.id, "p1", LEASE)
    async with job_write_scope(sessions) as session:  # held: nobody else may prepare it
        assert not await lifecycle.take_preparation(session, run.id, "p2", LEASE)
    # A task may start while the run is preparing; the run stays preparing.
    started = await claim(sessions, run.id, limit=1)
    assert len(started) == 1 and (await run_row(sessions, run.id)).status == RunStatus.PREPARING

    chunks = []
    while True:
        async with job_write_scope(sessions) as session:
            chunk = await lifecycle.prepare_chunk(session, run.id, "p1", LEASE)
        chunks.append(chunk.created)
        if not chunk.more:
            break
    assert chunks == [4, 2]
    run = await run_row(sessions, run.id)
    # Its last chunk makes it running (a task has started), and every pair has its row.
    assert run.status == RunStatus.RUNNING and run.lease_owner is None
    assert counts(run) == {"pending": 9, "running": 1} == await statuses(sessions, run.id)
    assert run.unprepared_count == 0


async def test_task_ids_are_uuid7_unique_across_runs_and_in_seq_order_within_a_chunk(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "CHUNK_ROWS", 6)  # three documents × two variables a chunk
    monkeypatch.setattr(lifecycle, "PREPARE_CHUNK_ROWS", 6)
    world = await make_world(sessions, documents=5, variables=2)
    runs = [await new_run(world) for _ in range(3)]  # created within the same few milliseconds
    async with job_write_scope(sessions) as session:
        assert await lifecycle.take_preparation(session, runs[0].id, "p1", LEASE)
    async with job_write_scope(sessions) as session:
        await lifecycle.prepare_chunk(session, runs[0].id, "p1", LEASE)
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Extraction.run_id, Extraction.seq, Extraction.id).order_by(
                    Extraction.run_id, Extraction.seq
                )
            )
        ).all()
    ids = [r.id for r in rows]
    assert len(rows) == 10 + 6 + 6 and len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {7} and {i.variant for i in ids} == {uuid.RFC_4122}
    # UUIDv7: the creation time in milliseconds comes first.
    assert all(abs((i.int >> 80) - utcnow().timestamp() * 1000) < 600_000 for i in ids)
    first_run = [r.id for r in rows if r.run_id == runs[0].id]
    # Each chunk's ids ascend with seq (inserts append to the id index); ids and seq agree
    # within the first chunk (seq 0-5) and within the second (6-9).
    assert first_run[:6] == sorted(first_run[:6]) and first_run[6:] == sorted(first_run[6:])


async def test_an_expired_preparation_lease_is_taken_over(sessions: Sessions) -> None:
    world = await make_world(sessions, documents=2, variables=1)
    run = await new_run(world)
    async with session_scope(sessions) as session:
        await session.execute(
            update(Run)
            .where(Run.id == run.id)
            .values(
                status=RunStatus.PREPARING,
                lease_owner="dead",
                lease_expires_at=utcnow() - timedelta(seconds=1),
            )
        )
    async with sessions() as session:
        assert await lifecycle.runs_to_prepare(session, utcnow()) == [run.id]
    async with job_write_scope(sessions) as session:
        assert await lifecycle.take_preparation(session, run.id, "p2", LEASE)


async def test_cancelling_a_preparing_run_stops_its_preparation(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "CHUNK_ROWS", 2)
    monkeypatch.setattr(lifecycle, "PREPARE_CHUNK_ROWS", 2)
    world = await make_world(sessions, documents=4, variables=2)
    run = await new_run(world)
    async with job_write_scope(sessions) as session:
        assert await lifecycle.take_preparation(session, run.id, "p1", LEASE)
        assert await lifecycle.cancel_run(session, run.id, LogLine("run.cancelled", "c"))
    async with job_write_scope(sessions) as session:
        chunk = await lifecycle.prepare_chunk(session, run.id, "p1", LEASE)
    assert (chunk.created, chunk.more) == (0, False)
    row = await run_row(sessions, run.id)
    assert row.status == RunStatus.CANCELLED and row.unprepared_count == 6


@pytest.mark.postgres
async def test_workers_claim_and_store_while_a_chunk_is_being_inserted(
    pg_sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preparer holds no lock on the run while it inserts a chunk: claims and stores (which
    move the run's counters) go on meanwhile, and the chunk's counts add up once it commits."""
    monkeypatch.setattr(lifecycle, "CHUNK_ROWS", 4)
    monkeypatch.setattr(lifecycle, "PREPARE_CHUNK_ROWS", 4)
    sessions = pg_sessions
    world = await make_world(sessions, documents=6, variables=2)
    run = await new_run(world)
    async with job_write_scope(sessions) as session:
        assert await lifecycle.take_preparation(session, run.id, "p1", LEASE)
    real_insert = lifecycle._insert_tasks
    taken: list[ClaimedTask] = []

    async def insert_then_work(session: AsyncSession, *args: Any) -> int:
        created = await real_insert(session, *args)  # the chunk's transaction is still open
        # Hang guard only: before, a claim waited for the preparer's lock on the run row.
        taken.extend(await asyncio.wait_for(claim(sessions, run.id, limit=3), timeout=30))
        await asyncio.wait_for(store(sessions, taken), timeout=30)
        return created

    monkeypatch.setattr(lifecycle, "_insert_tasks", insert_then_work)
    async with job_write_scope(sessions) as session:
        chunk = await lifecycle.prepare_chunk(session, run.id, "p1", LEASE)
    assert chunk.created == 4 and len(taken) == 3
    row = await run_row(sessions, run.id)
    assert counts(row) == {"pending": 5, "succeeded": 3} and row.unprepared_count == 4
    assert await statuses(sessions, run.id) == {"pending": 5, "succeeded": 3}


async def test_a_run_cancelled_while_a_chunk_is_inserted_keeps_none_of_it(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "CHUNK_ROWS", 2)
    monkeypatch.setattr(lifecycle, "PREPARE_CHUNK_ROWS", 2)
    world = await make_world(sessions, documents=4, variables=2)
    run = await new_run(world)
    async with job_write_scope(sessions) as session:
        assert await lifecycle.take_preparation(session, run.id, "p1", LEASE)
    real_insert = lifecycle._insert_tasks

    async def insert_then_cancelled(session: AsyncSession, *args: Any) -> int:
        created = await real_insert(session, *args)
        # The cancel lands between the chunk's INSERT and its closing update.
        await session.execute(
            update(Run).where(Run.id == run.id).values(status=RunStatus.CANCELLED)
        )
        return created

    monkeypatch.setattr(lifecycle, "_insert_tasks", insert_then_cancelled)
    async with job_write_scope(sessions) as session:
        chunk = await lifecycle.prepare_chunk(session, run.id, "p1", LEASE)
    assert (chunk.created, chunk.more) == (0, False)
    assert await statuses(sessions, run.id) == {"pending": 2}  # only the run's first chunk
    assert (await run_row(sessions, run.id)).documents_prepared == 1


# -- claiming ----------------------------------------------------------------------------------


async def test_a_claim_takes_pending_tasks_in_order_and_starts_the_run_once(
    sessions: Sessions,
) -> None:
    world = await make_world(sessions, documents=3, variables=2)
    run = await new_run(world)
    first = await claim(sessions, run.id, limit=4)
    assert [t.seq for t in first] == [0, 1, 2, 3]
    second = await claim(sessions, run.id, limit=4)
    assert [t.seq for t in second] == [4, 5]
    assert await claim(sessions, run.id) == []
    row = await run_row(sessions, run.id)
    assert row.status == RunStatus.RUNNING and row.started_at is not None
    assert counts(row) == {"running": 6} == await statuses(sessions, run.id)
    assert (await events(sessions, run.id)).count("run.started") == 1


@pytest.mark.parametrize("stop", ["cancel", "budget"])
async def test_a_cancelled_or_stopped_run_gives_no_task(sessions: Sessions, stop: str) -> None:
    world = await make_world(sessions)
    run = await new_run(world)
    async with job_write_scope(sessions) as session:
        if stop == "cancel":
            assert await lifecycle.cancel_run(session, run.id, LogLine("run.cancelled", "c"))
        else:
            assert await lifecycle.stop_for_budget(
                session, run.id, "spent", LogLine("run.budget_reached", "b")
            )
    assert await claim(sessions, run.id) == []
    assert await statuses(sessions, run.id) == {"pending": 6}  # nothing was touched


@pytest.fixture
async def pg_sessions() -> AsyncIterator[Sessions]:
    with temporary_postgres_database("quarry_lifecycle") as url:
        async with schema_sessions(url) as made:
            yield made


@pytest.mark.postgres
async def test_concurrent_claims_on_postgresql_take_disjoint_tasks(pg_sessions: Sessions) -> None:
    sessions = pg_sessions
    world = await make_world(sessions, documents=20, variables=5)
    run = await new_run(world)
    claims = await asyncio.gather(
        *(claim(sessions, run.id, owner=f"w{n}", limit=15) for n in range(8))
    )
    taken = [t.id for batch in claims for t in batch]
    assert len(taken) == len(set(taken)) == 100
    assert counts(await run_row(sessions, run.id)) == {"running": 100}


@pytest.mark.postgres
async def test_a_claim_reads_the_pending_index_even_in_a_generic_plan(
    pg_sessions: Sessions,
) -> None:
    """asyncpg prepares every statement, and PostgreSQL may plan a prepared statement once for
    any parameters (a generic plan). The claim must still read the partial index of pending
    tasks — with the status as a parameter it scanned past every task already done, a cost that
    grew with the run."""
    world = await make_world(pg_sessions, documents=40, variables=5)
    run = await new_run(world)
    await store(pg_sessions, await claim(pg_sessions, run.id, limit=150))
    async with pg_sessions() as session:
        connection = await session.connection()
        compiled = lifecycle._CLAIM_POSTGRES.compile(dialect=connection.dialect)
        values = {"b_run": f"'{run.id}'", "limit": "16", "owner": "'w'"}
        arguments = ", ".join(values.get(name, "now()") for name in compiled.positiontup or [])
        await connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        await connection.exec_driver_sql(f"PREPARE quarry_claim AS {compiled}")
        plan = "\n".join(
            row[0]
            for row in await connection.exec_driver_sql(
                f"EXPLAIN EXECUTE quarry_claim({arguments})"
            )
        )
        await session.rollback()
    # The pending index finds the candidates; the update looks each one up by id (not a walk
    # of the pending index matched against the candidates, once chosen while a big run was
    # being materialised and the statistics still described a small table).
    assert plan.count("ix_extractions_pending") == 1, plan
    assert "Index Scan using pk_extractions on extractions " in plan, plan


# -- leases ------------------------------------------------------------------------------------


async def test_renewing_keeps_only_the_leases_still_held(sessions: Sessions) -> None:
    world = await make_world(sessions, documents=1, variables=2)
    run = await new_run(world)
    mine = await claim(sessions, run.id, limit=2)
    await expire_leases(sessions, run.id)
    async with job_write_scope(sessions) as session:  # the sweeper hands one back…
        await lifecycle.reclaim_expired(session, utcnow(), limit=1)
    taken = await claim(sessions, run.id, owner="w2")  # …and another worker takes it
    assert len(taken) == 1
    async with job_write_scope(sessions) as session:
        held = await lifecycle.renew_leases(session, [t.id for t in mine], "w1", LEASE)
    assert held == {t.id for t in mine} - {taken[0].id}


async def test_expired_leases_are_handed_back_in_bounded_batches(sessions: Sessions) -> None:
    world = await make_world(sessions, documents=3, variables=2)
    run = await new_run(world)
    await claim(sessions, run.id, limit=5)
    await expire_leases(sessions, run.id)
    async with job_write_scope(sessions) as session:
        count, runs = await lifecycle.reclaim_expired(session, utcnow(), limit=3)
    assert (count, runs) == (3, {run.id})
    async with job_write_scope(sessions) as session:
        count, _ = await lifecycle.reclaim_expired(session, utcnow(), limit=3)
    assert count == 2
    assert counts(await run_row(sessions, run.id)) == {"pending": 6}
    async with job_write_scope(sessions) as session:  # nothing expired: nothing to do
        assert (await lifecycle.reclaim_expired(session, utcnow()))[0] == 0


async def test_a_stopping_worker_hands_its_tasks_back(sessions: Sessions) -> None:
    world = await make_world(sessions)
    run = await new_run(world)
    tasks = await claim(sessions, run.id, limit=4)
    async with job_write_scope(sessions) as session:
        runs = await lifecycle.release_tasks(session, [t.id for t in tasks], "w1")
    assert runs == {run.id}
    assert counts(await run_row(sessions, run.id)) == {"pending": 6}


# -- storing -----------------------------------------------------------------------------------


async def test_an_outcome_is_stored_only_while_the_lease_is_held(sessions: Sessions) -> None:
    world = await make_world(sessions, documents=1, variables=2)
    run = await new_run(world)
    tasks = await claim(sessions, run.id)
    result = await store(sessions, tasks, owner="someone-else")
    assert (result.stored, set(result.lost)) == (0, {t.id for t in tasks})
    result = await store(sessions, tasks[:1])
    assert (result.stored, result.lost) == (1, [])
    again = await store(sessions, tasks[:1])  # a duplicate delivery: already stored
    assert again.stored == 0
    row = await run_row(sessions, run.id)
    assert counts(row) == {"running": 1, "succeeded": 1}
    assert (row.tokens_in, row.tokens_out) == (10, 2)


@pytest.mark.parametrize(
    ("outcomes", "final"),
    [
        (["succeeded", "not_found"], RunStatus.COMPLETED),
        (["succeeded", "failed"], RunStatus.COMPLETED_WITH_ERRORS),
        (["failed", "failed"], RunStatus.FAILED),
        (["succeeded", "cancelled"], RunStatus.COMPLETED_WITH_ERRORS),
    ],
)
async def test_the_last_store_finishes_the_run_with_its_status(
    sessions: Sessions, outcomes: list[str], final: RunStatus
) -> None:
    world = await make_world(sessions, documents=1, variables=2)
    run = await new_run(world)
    tasks = await claim(sessions, run.id)
    first = await store(sessions, tasks[:1], outcomes[0])
    assert first.finished == {}
    last = await store(sessions, tasks[1:], outcomes[1])
    assert last.finished == {run.id: final}
    row = await run_row(sessions, run.id)
    assert row.status == final and row.finished_at is not None
    assert (await events(sessions, run.id)).count("run.finished") == 1


async def test_two_workers_storing_the_last_tasks_at_once_finish_the_run_once(
    sessions: Sessions,
) -> None:
    world = await make_world(sessions, documents=4, variables=5)
    run = await new_run(world)
    batches = [await claim(sessions, run.id, owner=f"w{n}", limit=5) for n in range(4)]
    results = await asyncio.gather(
        *(store(sessions, batch, owner=f"w{n}") for n, batch in enumerate(batches))
    )
    assert [r.finished for r in results if r.finished] == [{run.id: RunStatus.COMPLETED}]
    assert (await events(sessions, run.id)).count("run.finished") == 1
    assert counts(await run_row(sessions, run.id)) == {"succeeded": 20}


# -- the budget ---------------------------------------------------------------------------------


async def test_a_call_is_admitted_only_while_the_budget_covers_it(sessions: Sessions) -> None:
    world = await make_world(sessions, documents=1, variables=2)
    run = await new_run(world, budget_usd=1.0)
    one, two = await claim(sessions, run.id)
    async with job_write_scope(sessions) as session:
        assert await lifecycle.reserve_budget(session, one, "w1", 0.6, 0.0, 0.0)
    async with job_write_scope(sessions) as session:  # 0.6 held + 0.6 > 1.0
        assert not await lifecycle.reserve_budget(session, two, "w1", 0.6, 0.0, 0.0)
    async with job_write_scope(sessions) as session:  # it cost less than estimated
        await lifecycle.settle_budget(session, one, "w1", -0.5)
    async with job_write_scope(sessions) as session:
        assert await lifecycle.reserve_budget(session, two, "w1", 0.6, 0.0, 0.0)
    assert (await run_row(sessions, run.id)).reserved_usd == pytest.approx(0.7)
    await store(sessions, [one, two])  # stored: what was held is released
    assert (await run_row(sessions, run.id)).reserved_usd == pytest.approx(0.0)


async def test_stopping_for_the_budget_lets_tasks_in_flight_finish_then_ends_the_run(
    sessions: Sessions,
) -> None:
    world = await make_world(sessions, documents=2, variables=2)
    run = await new_run(world, budget_usd=1.0)
    in_flight = await claim(sessions, run.id, limit=1)
    line = LogLine("run.budget_reached", "the budget")
    async with job_write_scope(sessions) as session:
        assert await lifecycle.stop_for_budget(session, run.id, "The budget.", line)
    async with job_write_scope(sessions) as session:  # once only
        assert not await lifecycle.stop_for_budget(session, run.id, "The budget.", line)
    assert (await run_row(sessions, run.id)).status == RunStatus.RUNNING  # one still runs
    result = await store(sessions, in_flight)
    assert result.finished == {run.id: RunStatus.COMPLETED_WITH_ERRORS}
    row = await run_row(sessions, run.id)
    assert row.stop_reason == row.error == "The budget."
    assert counts(row) == {"succeeded": 1, "pending": 3}  # read as cancelled: runs/service.py


# -- cancel, retry ------------------------------------------------------------------------------


async def test_cancel_changes_one_row(sessions: Sessions) -> None:
    world = await make_world(sessions)
    run = await new_run(world)
    line = LogLine("run.cancelled", "cancelled")
    async with job_write_scope(sessions) as session:
        assert await lifecycle.cancel_run(session, run.id, line)
    async with job_write_scope(sessions) as session:
        assert not await lifecycle.cancel_run(session, run.id, line)  # already over
    row = await run_row(sessions, run.id)
    assert row.status == RunStatus.CANCELLED and row.finished_at is not None
    assert await statuses(sessions, run.id) == {"pending": 6}  # untouched, never claimed


async def test_retry_runs_again_what_failed_was_cancelled_or_never_started(
    sessions: Sessions,
) -> None:
    world = await make_world(sessions, documents=2, variables=2)
    run = await new_run(world)
    tasks = await claim(sessions, run.id, limit=3)
    await store(sessions, tasks[:1], "succeeded")
    await store(sessions, tasks[1:2], "failed")
    await store(sessions, tasks[2:3], "cancelled")
    async with job_write_scope(sessions) as session:
        await lifecycle.cancel_run(session, run.id, LogLine("run.cancelled", "c"))
    async with job_write_scope(sessions) as session:
        result = await lifecycle.retry_run(session, run.id, 5.0, set_budget=True)
    assert (result.pairs, result.preparing) == (3, False)  # failed, cancelled, never started
    row = await run_row(sessions, run.id)
    assert row.status == RunStatus.RUNNING and row.budget_usd == 5.0
    assert counts(row) == {"succeeded": 1, "pending": 3} == await statuses(sessions, run.id)
    async with job_write_scope(sessions) as session:  # a running run: nothing failed to retry
        assert (await lifecycle.retry_run(session, run.id, None, set_budget=False)).pairs == 0


# -- deleting what tasks are about --------------------------------------------------------------


async def test_deleting_a_document_takes_its_tasks_out_of_its_runs(sessions: Sessions) -> None:
    world = await make_world(sessions, documents=2, variables=2)
    run = await new_run(world)
    tasks = await claim(sessions, run.id, limit=2)  # the first document's
    await store(sessions, tasks)
    async with job_write_scope(sessions) as session:
        await lifecycle.forget_document(session, world.documents[1])
    row = await run_row(sessions, run.id)
    # What was left of the run was that document: it is over.
    assert (row.task_count, row.status) == (2, RunStatus.COMPLETED)
    assert counts(row) == {"succeeded": 2} == await statuses(sessions, run.id)


async def test_deleting_a_variable_takes_its_tasks_out_of_its_runs(sessions: Sessions) -> None:
    world = await make_world(sessions, documents=3, variables=2)
    run = await new_run(world)
    async with job_write_scope(sessions) as session:
        await lifecycle.forget_variable(session, world.project_id, world.variables[0][0])
    row = await run_row(sessions, run.id)
    assert row.task_count == 3 and counts(row) == {"pending": 3}
    assert await statuses(sessions, run.id) == {"pending": 3}


# -- two profiles --------------------------------------------------------------------------------


async def two_profile_run(world: World) -> Run:
    """A two-profile run over the world (its variables typed as text)."""
    async with session_scope(world.sessions) as session:
        await session.execute(
            update(PromptVersion)
            .where(PromptVersion.id.in_([version for _, version in world.variables]))
            .values(spec={"type": "text"})
        )
        planned = await lifecycle.create_run(
            session,
            Run(project_id=world.project_id, model="m", settings={}),
            project_id=world.project_id,
            document_ids=None,
            variables=world.variables,
            profile_count=2,
        )
        return planned.run


async def verdicts(sessions: Sessions, run_id: uuid.UUID) -> dict[int, str | None]:
    """The agreement stored on each pair's first-profile row, by pair."""
    async with sessions() as session:
        rows = await session.execute(
            select(Extraction.seq, Extraction.agreement).where(
                Extraction.run_id == run_id, Extraction.slot == 0
            )
        )
        return {seq // 2: agreement for seq, agreement in rows.all()}


async def store_values(
    sessions: Sessions, tasks: list[ClaimedTask], value: Any, status: str = "succeeded"
) -> None:
    outcomes = [
        Outcome(t, status, value=value(t), attempts=1, tokens_in=10 + t.slot, tokens_out=2)
        for t in tasks
    ]
    async with job_write_scope(sessions) as session:
        await lifecycle.store_outcomes(session, "w1", outcomes)


async def test_a_two_profile_run_has_a_task_per_pair_and_profile(sessions: Sessions) -> None:
    world = await make_world(sessions, documents=2, variables=3)
    run = await two_profile_run(world)
    assert (run.task_count, run.profile_count, run.status) == (12, 2, RunStatus.QUEUED)
    async with sessions() as session:
        rows = (
            await session.execute(
                select(
                    Extraction.seq, Extraction.slot, Extraction.document_id, Extraction.variable_id
                )
                .where(Extraction.run_id == run.id)
                .order_by(Extraction.seq)
            )
        ).all()
    assert [(r.seq, r.slot) for r in rows] == [(s, s % 2) for s in range(12)]
    # The two rows of a pair ask the same document and variable, document-major.
    pairs = [(world.documents[d], world.variables[v][0]) for d in range(2) for v in range(3)]
    assert [(r.document_id, r.variable_id) for r in rows] == [p for p in pairs for _ in (0, 1)]


@pytest.mark.parametrize("stores", [2, 8])
async def test_both_answers_stored_at_once_give_each_pair_its_verdict_once(
    sessions: Sessions, stores: int
) -> None:
    """Workers storing the two answers of the same pairs at the same moment (on PostgreSQL
    each waits for the run row's lock while holding its own rows) neither deadlock nor leave
    a pair without its verdict."""
    world = await make_world(sessions, documents=4, variables=5)
    run = await two_profile_run(world)
    tasks = await claim(sessions, run.id)
    # Each store holds one profile's answers of a share of the pairs, interleaved so that
    # the two rows of every pair are in different stores.
    shares = [[t for t in tasks if (t.seq // 2 + t.slot) % stores == n] for n in range(stores)]

    def said(task: ClaimedTask) -> str:
        # The second profile disagrees on every third pair, and writes the others shouted.
        pair = task.seq // 2
        return "Other" if task.slot and pair % 3 == 0 else ("X" if task.slot else "x")

    async with asyncio.timeout(60):  # a hang guard: a deadlock would stop here
        await asyncio.gather(*(store_values(sessions, share, said) for share in shares))
    found = await verdicts(sessions, run.id)
    assert found == {p: "disagree" if p % 3 == 0 else "agree" for p in range(20)}
    row = await run_row(sessions, run.id)
    assert row.status == RunStatus.COMPLETED and counts(row) == {"succeeded": 40}
    assert (row.tokens_in, row.second_tokens_in) == (20 * 10 + 20 * 11, 20 * 11)


async def test_a_pair_only_one_profile_answered_is_asked_again_on_retry(
    sessions: Sessions,
) -> None:
    world = await make_world(sessions, documents=1, variables=2)
    run = await two_profile_run(world)
    tasks = await claim(sessions, run.id)
    failing = [t for t in tasks if t.slot == 1 and t.seq // 2 == 0]
    await store_values(sessions, [t for t in tasks if t not in failing], lambda t: "x")
    assert await verdicts(sessions, run.id) == {0: None, 1: "agree"}  # pair 0 half done
    await store_values(sessions, failing, lambda t: None, status="failed")
    assert await verdicts(sessions, run.id) == {0: "one_missing", 1: "agree"}

    async with job_write_scope(sessions) as session:
        retried = await lifecycle.retry_run(session, run.id, None, set_budget=False)
    assert retried.pairs == 1
    assert await verdicts(sessions, run.id) == {0: None, 1: "agree"}
    again = await claim(sessions, run.id)
    assert [(t.seq, t.slot) for t in again] == [(1, 1)]
    await store_values(sessions, again, lambda t: "y")
    assert await verdicts(sessions, run.id) == {0: "disagree", 1: "agree"}
    assert (await run_row(sessions, run.id)).status == RunStatus.COMPLETED


async def test_deleting_a_document_takes_both_profiles_tasks_out(sessions: Sessions) -> None:
    world = await make_world(sessions, documents=2, variables=2)
    run = await two_profile_run(world)
    tasks = await claim(sessions, run.id, limit=4)  # the first document's, both profiles
    await store_values(sessions, tasks, lambda t: "x")
    async with job_write_scope(sessions) as session:
        await lifecycle.forget_document(session, world.documents[0])
    row = await run_row(sessions, run.id)
    assert (row.task_count, counts(row)) == (4, {"pending": 4})
    assert (row.tokens_in, row.second_tokens_in, row.second_tokens_out) == (0, 0, 0)


async def test_a_large_two_profile_run_is_prepared_with_both_profiles_rows(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "CHUNK_ROWS", 8)  # two documents × two variables × two
    monkeypatch.setattr(lifecycle, "PREPARE_CHUNK_ROWS", 8)
    world = await make_world(sessions, documents=3, variables=2)
    run = await run_row(sessions, (await two_profile_run(world)).id)
    assert run.status == RunStatus.PREPARING and run.documents_prepared == 2
    assert counts(run) == {"pending": 8} and run.unprepared_count == 4
    async with job_write_scope(sessions) as session:
        assert await lifecycle.take_preparation(session, run.id, "p1", LEASE)
    async with job_write_scope(sessions) as session:
        chunk = await lifecycle.prepare_chunk(session, run.id, "p1", LEASE)
    assert (chunk.created, chunk.more) == (4, False)
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Extraction.seq, Extraction.slot).where(Extraction.run_id == run.id)
            )
        ).all()
    assert sorted(rows) == [(s, s % 2) for s in range(12)]
    assert (await run_row(sessions, run.id)).status == RunStatus.QUEUED
