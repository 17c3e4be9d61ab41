"""Every state transition of a run and of its tasks, in one place (the database is the queue).

A run's tasks are rows of `extractions`; workers claim them in batches with leases, and the
run row keeps what they add up to (counts per status, tokens, the budget reserved), changed
in the same transaction as the rows, so progress is one row to read and "is this the last
task?" is exact. Nothing else writes a run's or a task's status.

Runs (active = preparing, queued or running)

    ==========  ======================  ===================================  ================
    from        to                      when                                 function
    ==========  ======================  ===================================  ================
    —           queued | preparing      created: its plan and first chunk    create_run
                                        of task rows (preparing while more
                                        are to come)
    preparing   preparing               a chunk of task rows is created      prepare_chunk
    preparing   queued | running        its last chunk (running once a       prepare_chunk
                                        task has started)
    queued      running                 its first task is claimed            claim_tasks
    active      completed |             no task running, none pending (or    finish_if_done,
                completed_with_errors   the run was stopped)                 after each change
                | failed
    active      cancelled               the user cancels: one row; pending   cancel_run
                                        tasks are simply never claimed
    active      active, stop_reason     its budget is reached: no new task   stop_for_budget
                set                     starts, those in flight finish
    final       preparing | queued |    a retry                              retry_run
                running
    ==========  ======================  ===================================  ================

    A run's final status and its budget stop write their webhook deliveries (run.finished,
    run.failed, run.budget_reached; webhooks/lifecycle.py) in the same transaction.

    A run finishes failed when every pair failed, completed_with_errors when some failed or
    were cancelled — a stopped or cancelled run's pending tasks and uncreated pairs count as
    cancelled — and completed otherwise.

Tasks

    ==================  =================  ======================================  ===============
    from                to                 when                                    function
    ==================  =================  ======================================  ===============
    —                   pending            the run's rows are created, set-based   create_run,
                                                                                   prepare_chunk
    pending             running            claimed in a batch, with a lease        claim_tasks
    running             running            the lease is renewed (heartbeat)        renew_leases
    running             succeeded |        its outcome is stored, only while the   store_outcomes
                        not_found |        lease is held (a late duplicate is
                        failed | cancelled dropped)
    running             pending            its lease expired (the worker died)     reclaim_expired
    running             pending            its worker stops before finishing it    release_tasks
                                           (or its provider batch ended without
                                           answering it: batches/)
    running             running            its lease moves to a provider batch     hand_to_batch
                                           (batch mode), until the batch's
                                           deadline
    failed | cancelled  pending            a retry                                 retry_run
    any                 (deleted)          its document or variable is deleted     forget_*
    ==================  =================  ======================================  ===============

Concurrency. Every transition that changes task rows also updates the run row, after the task
rows, in one transaction; several runs' rows in id order. On PostgreSQL the run row's lock
therefore orders the transactions of a run: the one whose update leaves nothing pending or
running sees every other's and finishes the run, exactly once (its UPDATE is conditional on
the run being active). Claims skip rows another claim has locked (`FOR UPDATE SKIP LOCKED`).
On SQLite writers take turns (runs under `db.job_write_scope`), which gives the same.

Two profiles. A two-profile run asks each pair of both of its profiles: the pair p has two
task rows, seq 2p (slot 0, the first profile) and 2p + 1 (slot 1, the second), created
together, claimed, leased, stored and retried like any others (each profile's tokens are
counted on the run row too: `second_tokens_*`). Once both rows of a pair are finished,
`store_outcomes` writes their verdict — agree, disagree or one_missing (runs/agreement.py)
— on the slot-0 row. It does so after the run row's update, which on PostgreSQL waits for
the run's lock: of two transactions storing the two rows of a pair at once, the later sees
the earlier's row committed and writes the verdict, so it is written exactly once. The pair's
other row is locked with SKIP LOCKED, never waited for: a transaction holding it (storing
it, and so waiting for the run's lock this one holds; or deleting it) would otherwise wait
for this one while this one waits for it. Skipping it is safe: a store of it sees this one's
row once it has the run's lock, and writes the verdict itself. A retry clears the
one_missing verdicts (their missing answer is asked again).

Dialect differences live in this module only: time-ordered ids are built from
`gen_random_uuid()` on PostgreSQL and `randomblob()` on SQLite (which stores a UUID as 32 hex
digits), and only PostgreSQL locks rows.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Integer,
    String,
    Table,
    Uuid,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from quarry.models import (
    ACTIVE_RUN_STATUSES,
    Agreement,
    Document,
    DocumentStatus,
    Extraction,
    ExtractionStatus,
    PromptVersion,
    Run,
    RunDocument,
    RunEvent,
    RunStatus,
    RunVariable,
)
from quarry.models.base import UTCDateTime, status_is, utcnow
from quarry.models.extraction import FINISHED_EXTRACTION_STATUSES
from quarry.reflists.matches import match_stored
from quarry.runs.agreement import agreement_of
from quarry.runs.wording import counted
from quarry.variables.types import TypeSpec, VariableType
from quarry.webhooks import lifecycle as outbox
from quarry.webhooks.events import Event

_TASKS = cast(Table, Extraction.__table__)
_RUNS = cast(Table, Run.__table__)
_EVENTS = cast(Table, RunEvent.__table__)

#: Task rows created with the run, in the request (its first chunk: the POST answers in
#: well under a second and the first tasks can start at once).
CHUNK_ROWS = 20_000
#: Task rows created per transaction by the preparer afterwards. Larger, because each
#: chunk's fixed costs (its run-row update, commit and wake-up) were a third of its time at
#: 20,000 rows once the workers shared the cores: a 5M-pair run materialised at 61k rows/s
#: with 20,000-row chunks and at 92k with 100,000 (benchmarks/RESULTS.md). The INSERT takes
#: no lock that claims or stores wait for, so a longer one holds nobody up.
PREPARE_CHUNK_ROWS = 100_000
#: Expired leases handed back per sweep query (the sweep repeats while it finds this many).
RECLAIM_BATCH = 2_000
#: Ids per statement where a list of ids is sent (well under both drivers' parameter limits).
_ID_BATCH = 500
CANCELLED_REASON = "The run was cancelled."

_COUNT_COLUMN = {
    ExtractionStatus.PENDING: "pending_count",
    ExtractionStatus.RUNNING: "running_count",
    ExtractionStatus.SUCCEEDED: "succeeded_count",
    ExtractionStatus.NOT_FOUND: "not_found_count",
    ExtractionStatus.FAILED: "failed_count",
    ExtractionStatus.CANCELLED: "cancelled_count",
}
#: Result columns an outcome adds to rather than sets: a task's attempts and tokens count
#: every time it ran (a retried run included), like the run's token totals.
ADDED_COLUMNS = ("attempts", "tokens_in", "tokens_out")
#: The result columns every stored outcome sets.
RESULT_COLUMNS = (
    "status",
    "value",
    "raw_output",
    "evidence",
    "page",
    "char_start",
    "char_end",
    "grounded",
    "grounding_method",
    "grounding_score",
    "support",
    "confidence",
    "boxes",
    "ocr_confidence",
    "attempts",
    "tokens_in",
    "tokens_out",
    "latency_ms",
    "model",
    "error",
    "cached",
    "cache_key",
    "pages_sent",
)


def _is_postgres(session: AsyncSession) -> bool:
    return bool(session.get_bind().dialect.name == "postgresql")


def _rowcount(result: Any) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0


def _chunks(items: Sequence[Any], size: int = _ID_BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- log lines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """A line for a run's processing log, written with the transition that caused it."""

    event: str
    message: str
    level: str = "info"
    document_id: uuid.UUID | None = None
    variable_id: uuid.UUID | None = None
    data: dict[str, Any] = field(default_factory=dict)


async def _log(session: AsyncSession, run_id: uuid.UUID, lines: Sequence[LogLine]) -> None:
    if not lines:
        return
    now = utcnow()
    await session.execute(
        insert(_EVENTS),
        [
            {
                "run_id": run_id,
                "created_at": now,
                "level": line.level,
                "event": line.event,
                "message": line.message,
                "document_id": line.document_id,
                "variable_id": line.variable_id,
                "data": line.data,
            }
            for line in lines
        ],
    )


async def log_events(session: AsyncSession, run_id: uuid.UUID, lines: Sequence[LogLine]) -> None:
    """Lines that go with no transition (e.g. what a run was created with)."""
    await _log(session, run_id, lines)


# -- the counters on the run row ---------------------------------------------------------------


@dataclass
class _Delta:
    """A change to a run's counters."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tokens_in: int = 0
    tokens_out: int = 0
    #: Of those, a two-profile run's second-profile tasks'.
    second_tokens_in: int = 0
    second_tokens_out: int = 0
    reserved: float = 0.0
    task_count: int = 0

    def add_tokens(self, slot: int, tokens_in: int, tokens_out: int) -> None:
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        if slot:
            self.second_tokens_in += tokens_in
            self.second_tokens_out += tokens_out

    def move(self, source: str | None, target: str | None, n: int = 1) -> None:
        if source is not None:
            self.counts[_COUNT_COLUMN[ExtractionStatus(source)]] -= n
        if target is not None:
            self.counts[_COUNT_COLUMN[ExtractionStatus(target)]] += n

    def params(self, run_id: uuid.UUID) -> dict[str, Any]:
        """The parameters of `_COUNTERS` for this change of `run_id`'s counters."""
        params: dict[str, Any] = {f"d_{name}": self.counts.get(name, 0) for name in _COUNTS}
        params.update(
            run_id=run_id,
            d_tokens_in=self.tokens_in,
            d_tokens_out=self.tokens_out,
            d_second_tokens_in=self.second_tokens_in,
            d_second_tokens_out=self.second_tokens_out,
            d_reserved=self.reserved,
            d_task_count=self.task_count,
        )
        return params

    def values(self) -> dict[str, Any]:
        """The same change as SET values (for a statement that sets more)."""
        columns = _RUNS.c
        values: dict[str, Any] = {
            name: columns[name] + change for name, change in self.counts.items() if change
        }
        if self.task_count:
            values["task_count"] = columns.task_count + self.task_count
        return values

    @property
    def empty(self) -> bool:
        return not (
            any(self.counts.values())
            or self.tokens_in
            or self.tokens_out
            or self.second_tokens_in
            or self.second_tokens_out
            or self.reserved
            or self.task_count
        )


_COUNTS = tuple(_COUNT_COLUMN.values())
#: Every counter change in one statement, built once (a claim or store runs it per batch; a
#: statement built afresh costs more to compile than to run). Adding 0 changes nothing.
_COUNTERS = (
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("run_id"))
    .values(
        **{name: _RUNS.c[name] + bindparam(f"d_{name}") for name in _COUNTS},
        tokens_in=_RUNS.c.tokens_in + bindparam("d_tokens_in"),
        tokens_out=_RUNS.c.tokens_out + bindparam("d_tokens_out"),
        second_tokens_in=_RUNS.c.second_tokens_in + bindparam("d_second_tokens_in"),
        second_tokens_out=_RUNS.c.second_tokens_out + bindparam("d_second_tokens_out"),
        task_count=_RUNS.c.task_count + bindparam("d_task_count"),
        # Never below zero: float sums of reservations and releases need not cancel exactly.
        reserved_usd=case(
            (
                _RUNS.c.reserved_usd + bindparam("d_reserved") > 0,
                _RUNS.c.reserved_usd + bindparam("d_reserved"),
            ),
            else_=0.0,
        ),
    )
    .returning(
        _RUNS.c.status,
        _RUNS.c.running_count,
        _RUNS.c.pending_count,
        _RUNS.c.stop_reason,
        _RUNS.c.profile_count,
    )
)


async def _apply(
    session: AsyncSession,
    deltas: dict[uuid.UUID, _Delta],
    compared: set[uuid.UUID] | None = None,
) -> set[uuid.UUID]:
    """Update the runs' counters, in run id order (see the module docstring); returns the
    runs this may have left without work — only those need `finish_if_done` — and adds the
    two-profile runs among them to `compared`. The counts come back from the update itself,
    which on PostgreSQL waited for the row lock: they include every transaction committed
    before this one."""
    maybe_done: set[uuid.UUID] = set()
    for run_id in sorted(deltas):
        delta = deltas[run_id]
        if delta.empty:
            continue
        result = await session.execute(_COUNTERS, delta.params(run_id))
        row = result.one_or_none()
        if row is not None and row.profile_count > 1 and compared is not None:
            compared.add(run_id)
        if row is None or row.status not in ACTIVE_RUN_STATUSES or row.running_count:
            continue
        if row.stop_reason is not None or (
            row.pending_count == 0 and row.status != RunStatus.PREPARING
        ):
            maybe_done.add(run_id)
    return maybe_done


_FINAL_STATUS = case(
    (
        (_RUNS.c.failed_count > 0)
        & (
            _RUNS.c.failed_count
            == _RUNS.c.task_count  # every pair failed (none pending, none uncreated)
        ),
        literal(RunStatus.FAILED.value),
    ),
    (
        (_RUNS.c.failed_count > 0)
        | (_RUNS.c.cancelled_count > 0)
        | (_RUNS.c.pending_count > 0)
        | (
            _RUNS.c.succeeded_count
            + _RUNS.c.not_found_count
            + _RUNS.c.failed_count
            + _RUNS.c.cancelled_count
            + _RUNS.c.pending_count
            < _RUNS.c.task_count
        ),
        literal(RunStatus.COMPLETED_WITH_ERRORS.value),
    ),
    else_=literal(RunStatus.COMPLETED.value),
)


_FINISH = (
    update(_RUNS)
    .where(
        _RUNS.c.id == bindparam("run_id"),
        _RUNS.c.status.in_(ACTIVE_RUN_STATUSES),
        _RUNS.c.running_count == 0,
        ((_RUNS.c.pending_count == 0) & (_RUNS.c.status != RunStatus.PREPARING))
        | _RUNS.c.stop_reason.is_not(None),
    )
    .values(
        status=_FINAL_STATUS,
        finished_at=bindparam("now", type_=UTCDateTime()),
        lease_owner=None,
        lease_expires_at=None,
    )
    .returning(_RUNS.c.status)
)


async def finish_if_done(session: AsyncSession, run_id: uuid.UUID) -> str | None:
    """Give the run its final status if no task is running and none may still start (none
    pending, or the run was stopped); returns the status when this call set it."""
    result = await session.execute(_FINISH, {"run_id": run_id, "now": utcnow()})
    final: str | None = result.scalar_one_or_none()
    if final is not None:
        await _log(session, run_id, [LogLine("run.finished", f"The run finished: {final}.")])
        # The webhooks' outbox, in this same transaction: the event is sent iff it happened.
        failed = final == RunStatus.FAILED.value
        event = Event.RUN_FAILED if failed else Event.RUN_FINISHED
        await outbox.record_run_event(session, run_id, event)
    return final


# -- creating a run's task rows -----------------------------------------------------------------


#: Hex digits of a task id that carry its sequence number (40 bits: a trillion pairs a run).
_SEQ_HEX_DIGITS = 10


def _task_id(session: AsyncSession, seq: ColumnElement[Any]) -> ColumnElement[Any]:
    """A UUIDv7-shaped id per task row: this moment's milliseconds, version 7, 34 random bits
    drawn once per statement, then the row's sequence number (a counter, as UUIDv7 allows).

    Rows created together sort together and in `seq` order, so inserting a chunk appends to
    the id index rather than writing all over it. Per-row random bits (tried first) cost
    twice: building them (≈ 2 µs a row on PostgreSQL) and, worse, scattering a chunk's
    inserts across the primary-key index — 500k rows took 6.3 s that way and 3.0 s this
    way (benchmarks/RESULTS.md). Two statements can only make the same id if they run in
    the same millisecond, draw the same 34 bits and cover the same `seq` — and the primary
    key refuses it rather than mixing two tasks up."""
    millis = f"{int(time.time() * 1000):012x}"
    bits = secrets.randbits(34)
    variant = "89ab"[bits >> 32]
    prefix = f"{millis}7{bits >> 20 & 0xFFF:03x}{variant}{bits & 0xFFFFF:05x}"
    if _is_postgres(session):
        digits = func.lpad(func.to_hex(seq), _SEQ_HEX_DIGITS, "0")
        return sql_cast(literal(prefix, String) + digits, Uuid)
    # SQLite stores a UUID as its 32 hex digits.
    return literal(prefix, String) + func.printf(f"%0{_SEQ_HEX_DIGITS}x", seq)


async def _insert_tasks(
    session: AsyncSession, run_id: uuid.UUID, width: int, first: int, end: int, slots: int = 1
) -> int:
    """Create the task rows of run documents `first` ≤ ordinal < `end`: one INSERT … SELECT
    per profile slot (a two-profile run's pair p gets seq 2p and 2p + 1)."""
    created = 0
    for slot in range(slots):
        created += await _insert_slot_tasks(session, run_id, width, first, end, slots, slot)
    return created


async def _insert_slot_tasks(
    session: AsyncSession,
    run_id: uuid.UUID,
    width: int,
    first: int,
    end: int,
    slots: int,
    slot: int,
) -> int:
    now = utcnow()
    documents = RunDocument.__table__.alias("d")
    variables = RunVariable.__table__.alias("v")
    seq = documents.c.ordinal * literal(width, Integer) + variables.c.ordinal
    if slots > 1:
        seq = seq * literal(slots, Integer) + literal(slot, Integer)
    rows = (
        select(
            _task_id(session, seq),
            literal(run_id, Uuid),
            documents.c.document_id,
            variables.c.variable_id,
            variables.c.prompt_version_id,
            seq,
            literal(ExtractionStatus.PENDING.value, String),
            literal(0, Integer),
            literal(0, Integer),
            literal(0, Integer),
            literal(False),
            literal(slot, Integer),
            literal(now, UTCDateTime()),
            literal(now, UTCDateTime()),
        )
        .select_from(documents.join(variables, variables.c.run_id == documents.c.run_id))
        .where(
            documents.c.run_id == run_id,
            documents.c.ordinal >= first,
            documents.c.ordinal < end,
        )
    )
    result = await session.execute(
        insert(_TASKS).from_select(
            [
                "id",
                "run_id",
                "document_id",
                "variable_id",
                "prompt_version_id",
                "seq",
                "status",
                "attempts",
                "tokens_in",
                "tokens_out",
                "cached",
                "slot",
                "created_at",
                "updated_at",
            ],
            rows,
        )
    )
    return _rowcount(result)


def documents_per_chunk(variable_count: int, rows: int) -> int:
    return max(1, rows // max(variable_count, 1))


@dataclass(frozen=True)
class PlannedRun:
    """A run row just created with its plan; `prepared` says whether every task row exists."""

    run: Run
    prepared: bool


async def create_run(
    session: AsyncSession,
    run: Run,
    *,
    project_id: uuid.UUID,
    document_ids: Sequence[uuid.UUID] | None,
    variables: Sequence[tuple[uuid.UUID, uuid.UUID]],
    profile_count: int = 1,
) -> PlannedRun:
    """Insert `run` (status `preparing`), its plan — the project's ready documents in upload
    order, or `document_ids` in that order; `variables` as (variable id, prompt version id)
    in codebook order; `profile_count` profiles per pair — and its first chunk of task rows.
    The run is `queued` if that was all.

    The caller has checked that the documents exist and are ready; what this creates is
    counted from the rows inserted, not assumed."""
    run.status = RunStatus.PREPARING
    run.profile_count = profile_count
    session.add(run)
    await session.flush()
    await session.execute(
        insert(RunVariable),
        [
            {"run_id": run.id, "ordinal": n, "variable_id": v, "prompt_version_id": p}
            for n, (v, p) in enumerate(variables)
        ],
    )
    order = func.row_number().over(order_by=(Document.created_at, Document.id)) - 1
    chosen = select(literal(run.id, Uuid), order, Document.id).where(
        Document.project_id == project_id, Document.status == DocumentStatus.READY
    )
    documents = 0
    if document_ids is None:
        result = await session.execute(
            insert(RunDocument).from_select(["run_id", "ordinal", "document_id"], chosen)
        )
        documents = _rowcount(result)
    else:
        ids = sorted(set(document_ids))
        found: list[tuple[datetime, uuid.UUID]] = []
        for batch in _chunks(ids):
            found += [
                (row.created_at, row.id)
                for row in await session.execute(
                    select(Document.created_at, Document.id).where(
                        Document.project_id == project_id,
                        Document.status == DocumentStatus.READY,
                        Document.id.in_(batch),
                    )
                )
            ]
        found.sort()
        if found:
            await session.execute(
                insert(RunDocument),
                [
                    {"run_id": run.id, "ordinal": n, "document_id": document_id}
                    for n, (_, document_id) in enumerate(found)
                ],
            )
        documents = len(found)
    width = len(variables)
    first_end = min(documents, documents_per_chunk(width * profile_count, CHUNK_ROWS))
    created = await _insert_tasks(session, run.id, width, 0, first_end, profile_count)
    prepared = first_end >= documents
    values: dict[str, Any] = {
        "document_count": documents,
        "variable_count": width,
        "documents_prepared": first_end,
        "task_count": documents * width * profile_count,
        "pending_count": created,
    }
    if prepared:
        values["status"] = RunStatus.QUEUED
    await session.execute(update(_RUNS).where(_RUNS.c.id == run.id).values(**values))
    await session.refresh(run)
    return PlannedRun(run, prepared)


async def take_preparation(
    session: AsyncSession, run_id: uuid.UUID, owner: str, lease: timedelta
) -> bool:
    """Lease the creation of a preparing run's remaining task rows (one preparer at a time;
    an expired lease may be taken over)."""
    now = utcnow()
    result = await session.execute(
        update(_RUNS)
        .where(
            _RUNS.c.id == run_id,
            _RUNS.c.status == RunStatus.PREPARING,
            _RUNS.c.lease_owner.is_(None)
            | (_RUNS.c.lease_owner == owner)
            | (_RUNS.c.lease_expires_at < now),
        )
        .values(lease_owner=owner, lease_expires_at=now + lease)
    )
    return _rowcount(result) == 1


@dataclass(frozen=True)
class ChunkResult:
    created: int
    #: False once the run is prepared, stopped, cancelled, or the lease was lost.
    more: bool


async def prepare_chunk(
    session: AsyncSession, run_id: uuid.UUID, owner: str, lease: timedelta
) -> ChunkResult:
    """Create the next chunk of a preparing run's task rows, under the preparation lease;
    the last chunk makes the run queued (or running, if a task has started).

    The run row is read without a lock and updated only after the chunk's INSERT: the lease
    already makes this the only preparer, and a lock taken first would hold every claim and
    store of the run (they move its counters) for the whole INSERT — workers stood still for
    each chunk of a large run while it was being materialised. The closing update checks that
    nothing changed meanwhile (cancelled, stopped, lease taken over); if something did, the
    chunk is rolled back."""
    now = utcnow()
    row = (
        await session.execute(
            select(
                _RUNS.c.documents_prepared,
                _RUNS.c.document_count,
                _RUNS.c.variable_count,
                _RUNS.c.profile_count,
            ).where(
                _RUNS.c.id == run_id,
                _RUNS.c.status == RunStatus.PREPARING,
                _RUNS.c.stop_reason.is_(None),
                _RUNS.c.lease_owner == owner,
            )
        )
    ).one_or_none()
    if row is None:
        return ChunkResult(0, more=False)
    first, documents, width = row.documents_prepared, row.document_count, row.variable_count
    slots = row.profile_count
    end = min(documents, first + documents_per_chunk(width * slots, PREPARE_CHUNK_ROWS))
    created = await _insert_tasks(session, run_id, width, first, end, slots)
    done = end >= documents
    values: dict[str, Any] = {
        "documents_prepared": end,
        "pending_count": _RUNS.c.pending_count + created,
        "lease_expires_at": now + lease,
    }
    if done:
        values.update(
            status=case(
                (_RUNS.c.started_at.is_not(None), literal(RunStatus.RUNNING.value)),
                else_=literal(RunStatus.QUEUED.value),
            ),
            lease_owner=None,
            lease_expires_at=None,
        )
    moved = await session.execute(
        update(_RUNS)
        .where(
            _RUNS.c.id == run_id,
            _RUNS.c.status == RunStatus.PREPARING,
            _RUNS.c.stop_reason.is_(None),
            _RUNS.c.lease_owner == owner,
            _RUNS.c.documents_prepared == first,
        )
        .values(**values)
    )
    if _rowcount(moved) != 1:
        await session.rollback()  # cancelled, stopped or taken over while inserting
        return ChunkResult(0, more=False)
    if done:
        await finish_if_done(session, run_id)  # its tasks may all have run meanwhile
    return ChunkResult(created, more=not done)


async def runs_to_prepare(session: AsyncSession, now: datetime) -> list[uuid.UUID]:
    """Preparing runs nobody is preparing (never started, or the preparer's lease expired)."""
    result = await session.execute(
        select(_RUNS.c.id).where(
            _RUNS.c.status == RunStatus.PREPARING,
            _RUNS.c.stop_reason.is_(None),
            _RUNS.c.lease_owner.is_(None) | (_RUNS.c.lease_expires_at < now),
        )
    )
    return list(result.scalars())


# -- claiming, renewing, storing ----------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedTask:
    """A task this worker holds the lease of: what it is about."""

    id: uuid.UUID
    run_id: uuid.UUID
    document_id: uuid.UUID
    variable_id: uuid.UUID
    prompt_version_id: uuid.UUID
    seq: int
    #: The run's profile that answers it (0: the first or only one; 1: the second).
    slot: int = 0


_CLAIM_COLUMNS = (
    _TASKS.c.id,
    _TASKS.c.run_id,
    _TASKS.c.document_id,
    _TASKS.c.variable_id,
    _TASKS.c.prompt_version_id,
    _TASKS.c.seq,
    _TASKS.c.slot,
)


def _claim_statement(postgres: bool) -> Any:
    candidates = (
        select(_TASKS.c.id)
        .where(
            _TASKS.c.run_id == bindparam("b_run", type_=Uuid()),
            status_is(_TASKS.c.status, ExtractionStatus.PENDING),
        )
        .order_by(_TASKS.c.seq)
        .limit(bindparam("limit", type_=Integer()))
    )
    claim = update(_TASKS).values(
        status=ExtractionStatus.RUNNING,
        lease_owner=bindparam("owner", type_=String()),
        lease_expires_at=bindparam("expires", type_=UTCDateTime()),
        started_at=bindparam("now", type_=UTCDateTime()),
    )
    if postgres:
        # A CTE, which runs once: as `id IN (subquery)` PostgreSQL may run a locking
        # subquery more than once and update more rows than its LIMIT. The rows it returns are
        # locked, so the update needs no second status check — and must not have one: with
        # `status = 'pending'` there, the planner may (when its statistics still describe a
        # small table, as while a large run is being materialised) read the update's rows by
        # walking the whole pending index and matching each against the CTE instead of looking
        # them up by id: 40,000 rows read to claim 12, measured.
        locked = candidates.with_for_update(skip_locked=True).cte("claimable")
        return claim.where(_TASKS.c.id == locked.c.id).returning(*_CLAIM_COLUMNS)
    claim = claim.where(_TASKS.c.id.in_(candidates.scalar_subquery()))
    return claim.where(status_is(_TASKS.c.status, ExtractionStatus.PENDING)).returning(
        *_CLAIM_COLUMNS
    )


#: Built once each (see `_COUNTERS`).
_CLAIM_POSTGRES = _claim_statement(postgres=True)
_CLAIM_SQLITE = _claim_statement(postgres=False)
_START = (
    update(_RUNS)
    .where(
        _RUNS.c.id == bindparam("run_id"),
        _RUNS.c.status.in_(ACTIVE_RUN_STATUSES),
        _RUNS.c.stop_reason.is_(None),
    )
    .values(
        pending_count=_RUNS.c.pending_count - bindparam("claimed"),
        running_count=_RUNS.c.running_count + bindparam("claimed"),
        status=case(
            (_RUNS.c.status == RunStatus.QUEUED, literal(RunStatus.RUNNING.value)),
            else_=_RUNS.c.status,
        ),
        started_at=func.coalesce(_RUNS.c.started_at, bindparam("now", type_=UTCDateTime())),
    )
    .returning(_RUNS.c.started_at)
)


async def claim_tasks(
    session: AsyncSession, run_id: uuid.UUID, owner: str, lease: timedelta, limit: int
) -> list[ClaimedTask]:
    """Take up to `limit` pending tasks of an active, unstopped run, in order, with a lease.

    The run's counters move in the same transaction; a queued run becomes running. Returns
    nothing (and changes nothing) when the run may not start tasks."""
    now = utcnow()
    statement = _CLAIM_POSTGRES if _is_postgres(session) else _CLAIM_SQLITE
    result = await session.execute(
        statement,
        {"b_run": run_id, "limit": limit, "owner": owner, "expires": now + lease, "now": now},
    )
    claimed = [ClaimedTask(*row) for row in result.all()]
    if not claimed:
        return []
    moved = await session.execute(_START, {"run_id": run_id, "claimed": len(claimed), "now": now})
    started = moved.scalar_one_or_none()
    if started is None:
        # Cancelled or stopped meanwhile: the claim must not happen. Undo it in place (the
        # caller's transaction also commits other things, so no rollback here).
        await session.execute(
            update(_TASKS)
            .where(_TASKS.c.id.in_([t.id for t in claimed]))
            .values(status=ExtractionStatus.PENDING, lease_owner=None, lease_expires_at=None)
        )
        return []
    if started == now:
        await _log(session, run_id, [LogLine("run.started", "The run started.")])
    return claimed


_RENEW = (
    update(_TASKS)
    .where(
        _TASKS.c.id.in_(bindparam("ids", expanding=True)),
        _TASKS.c.lease_owner == bindparam("owner"),
        _TASKS.c.status == ExtractionStatus.RUNNING,
    )
    .values(lease_expires_at=bindparam("expires", type_=UTCDateTime()))
    .returning(_TASKS.c.id)
)


async def renew_leases(
    session: AsyncSession, task_ids: Sequence[uuid.UUID], owner: str, lease: timedelta
) -> set[uuid.UUID]:
    """Heartbeat: extend this worker's leases; returns the ids it still holds."""
    held: set[uuid.UUID] = set()
    expires = utcnow() + lease
    for batch in _chunks(list(task_ids)):
        result = await session.execute(
            _RENEW, {"ids": list(batch), "owner": owner, "expires": expires}
        )
        held.update(result.scalars())
    return held


@dataclass
class Outcome:
    """What a task came to, as stored: every result column (`ADDED_COLUMNS` are added)."""

    task: ClaimedTask
    status: str
    value: Any = None
    raw_output: Any = None
    evidence: str | None = None
    page: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    grounded: bool | None = None
    grounding_method: str | None = None
    grounding_score: float | None = None
    support: str | None = None
    confidence: float | None = None
    boxes: list[dict[str, Any]] | None = None
    ocr_confidence: float | None = None
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: int | None = None
    model: str | None = None
    error: str | None = None
    cached: bool = False
    cache_key: str | None = None
    pages_sent: list[int] | None = None
    #: Log lines about this task (re-asks, failure, excerpts sent).
    events: list[LogLine] = field(default_factory=list)
    #: The prompts' size (characters, messages) its calls sent, and where that usage is
    #: summed (not stored on the row: runs/executor.py adds it to `llm_usage`).
    prompt_chars: int = 0
    prompt_messages: int = 0
    usage_key: str | None = None


def _store_statement() -> Any:
    values: dict[str, Any] = {
        column: (
            _TASKS.c[column] + bindparam(f"v_{column}")
            if column in ADDED_COLUMNS
            else bindparam(f"v_{column}", type_=_TASKS.c[column].type)
        )
        for column in RESULT_COLUMNS
    }
    return (
        update(_TASKS)
        .where(_TASKS.c.id == bindparam("task_id"))
        .values(
            **values,
            lease_owner=None,
            lease_expires_at=None,
            reserved_usd=None,
            finished_at=bindparam("finished", type_=UTCDateTime()),
            updated_at=bindparam("finished", type_=UTCDateTime()),
        )
    )


#: Built once: building a statement costs more than running it (thousands a run).
_STORE = _store_statement()


@dataclass(frozen=True)
class StoreResult:
    stored: int
    #: Tasks whose lease this worker no longer held: their outcome was dropped.
    lost: list[uuid.UUID]
    #: Runs this store finished, with their final status.
    finished: dict[uuid.UUID, str]


def _held_statement(postgres: bool) -> Any:
    query = (
        select(_TASKS.c.id, _TASKS.c.reserved_usd)
        .where(
            _TASKS.c.id.in_(bindparam("ids", expanding=True)),
            _TASKS.c.lease_owner == bindparam("owner"),
            _TASKS.c.status == ExtractionStatus.RUNNING,
        )
        .order_by(_TASKS.c.id)
    )
    return query.with_for_update() if postgres else query


_HELD_POSTGRES = _held_statement(postgres=True)
_HELD_SQLITE = _held_statement(postgres=False)


async def _held(
    session: AsyncSession, task_ids: Sequence[uuid.UUID], owner: str
) -> dict[uuid.UUID, float]:
    """Of `task_ids`, those this worker holds a lease on, with what each has reserved;
    locked on PostgreSQL (in id order) until the transaction ends."""
    held: dict[uuid.UUID, float] = {}
    statement = _HELD_POSTGRES if _is_postgres(session) else _HELD_SQLITE
    for batch in _chunks(sorted(task_ids)):
        rows = await session.execute(statement, {"ids": list(batch), "owner": owner})
        held.update({row.id: row.reserved_usd or 0.0 for row in rows})
    return held


async def store_outcomes(
    session: AsyncSession, owner: str, outcomes: Sequence[Outcome]
) -> StoreResult:
    """Write the outcomes of tasks this worker holds (dropping the others'), with their log
    lines; move the runs' counters; finish the runs this leaves without work."""
    if not outcomes:
        return StoreResult(0, [], {})
    held = await _held(session, [o.task.id for o in outcomes], owner)
    kept = [o for o in outcomes if o.task.id in held]
    lost = [o.task.id for o in outcomes if o.task.id not in held]
    if kept:
        now = utcnow()
        await session.execute(
            _STORE,
            [
                {
                    "task_id": o.task.id,
                    "finished": now,
                    **{f"v_{column}": getattr(o, column) for column in RESULT_COLUMNS},
                }
                for o in kept
            ],
        )
        # Values matched to a reference list are matched as they are stored (one query
        # for the batch when no variable of it is matched; no LLM call either way).
        await match_stored(
            session, [(o.task.id, o.task.variable_id, o.status, o.value) for o in kept]
        )
    deltas: dict[uuid.UUID, _Delta] = defaultdict(_Delta)
    lines: dict[uuid.UUID, list[LogLine]] = defaultdict(list)
    for o in kept:
        delta = deltas[o.task.run_id]
        delta.move(ExtractionStatus.RUNNING, o.status)
        delta.add_tokens(o.task.slot, o.tokens_in, o.tokens_out)
        delta.reserved -= held[o.task.id]
        lines[o.task.run_id] += o.events
    compared: set[uuid.UUID] = set()
    maybe_done = await _apply(session, deltas, compared)
    if compared:
        # After the run rows' update: see "Two profiles" in the module docstring.
        await _record_agreement(session, [o.task for o in kept if o.task.run_id in compared])
    finished: dict[uuid.UUID, str] = {}
    for run_id in sorted(deltas):
        await _log(session, run_id, lines[run_id])
        if run_id in maybe_done:
            final = await finish_if_done(session, run_id)
            if final is not None:
                finished[run_id] = final
    return StoreResult(len(kept), lost, finished)


#: Prompt versions' type specs, by id (a version never changes; bounded by `_SPEC_CACHE`).
_SPECS: dict[uuid.UUID, TypeSpec] = {}
_SPEC_CACHE = 4096


async def _type_specs(
    session: AsyncSession, version_ids: set[uuid.UUID]
) -> dict[uuid.UUID, TypeSpec]:
    missing = [v for v in version_ids if v not in _SPECS]
    if missing:
        if len(_SPECS) + len(missing) > _SPEC_CACHE:
            _SPECS.clear()
        rows = await session.execute(
            select(PromptVersion.id, PromptVersion.spec).where(PromptVersion.id.in_(missing))
        )
        for version_id, spec in rows.all():
            _SPECS[version_id] = TypeSpec(
                type=VariableType(spec["type"]),
                allowed_values=tuple(spec.get("allowed_values") or ()),
                unit=spec.get("unit"),
            )
    return {v: _SPECS[v] for v in version_ids if v in _SPECS}


_SET_AGREEMENT = (
    update(_TASKS)
    .where(_TASKS.c.id == bindparam("t_id"))
    .values(agreement=bindparam("v_agreement", type_=String()))
)


async def _record_agreement(session: AsyncSession, tasks: Sequence[ClaimedTask]) -> None:
    """Write the verdict of each two-profile pair among `tasks` on its slot-0 row: agree,
    disagree or one_missing once both rows are finished, else none (yet)."""
    pairs: dict[uuid.UUID, set[int]] = defaultdict(set)
    for task in tasks:
        pairs[task.run_id].add(task.seq // 2)
    postgres = _is_postgres(session)
    for run_id in sorted(pairs):
        seqs = sorted(seq for pair in pairs[run_id] for seq in (2 * pair, 2 * pair + 1))
        rows: list[Any] = []
        for batch in _chunks(seqs):
            query = select(
                _TASKS.c.id,
                _TASKS.c.seq,
                _TASKS.c.status,
                _TASKS.c.value,
                _TASKS.c.prompt_version_id,
            ).where(_TASKS.c.run_id == run_id, _TASKS.c.seq.in_(batch))
            if postgres:  # this transaction's own rows are never skipped
                query = query.with_for_update(skip_locked=True)
            rows += (await session.execute(query)).all()
        by_seq = {row.seq: row for row in rows}
        specs = await _type_specs(session, {row.prompt_version_id for row in rows})
        verdicts = []
        for pair in sorted(pairs[run_id]):
            first, second = by_seq.get(2 * pair), by_seq.get(2 * pair + 1)
            if first is None:  # skipped: its holder writes the verdict
                continue
            verdict: Agreement | None = None
            spec = specs.get(first.prompt_version_id)
            if (
                second is not None
                and spec is not None
                and first.status in FINISHED_EXTRACTION_STATUSES
                and second.status in FINISHED_EXTRACTION_STATUSES
            ):
                verdict = agreement_of(
                    spec, (first.status, first.value), (second.status, second.value)
                )
            verdicts.append({"t_id": first.id, "v_agreement": verdict})
        if verdicts:
            await session.execute(_SET_AGREEMENT, verdicts)


async def _back_to_pending(
    session: AsyncSession, rows: Sequence[Any], reason: str | None
) -> set[uuid.UUID]:
    """Put running tasks (id, run_id, reserved_usd rows, locked) back to pending; returns the
    runs they belong to."""
    if not rows:
        return set()
    for batch in _chunks([row.id for row in rows]):
        await session.execute(
            update(_TASKS)
            .where(_TASKS.c.id.in_(batch), _TASKS.c.status == ExtractionStatus.RUNNING)
            .values(
                status=ExtractionStatus.PENDING,
                lease_owner=None,
                lease_expires_at=None,
                reserved_usd=None,
            )
        )
    deltas: dict[uuid.UUID, _Delta] = defaultdict(_Delta)
    for row in rows:
        delta = deltas[row.run_id]
        delta.move(ExtractionStatus.RUNNING, ExtractionStatus.PENDING)
        delta.reserved -= row.reserved_usd or 0.0
    for run_id in sorted(await _apply(session, deltas)):
        # A stopped run may have been waiting only for these.
        await finish_if_done(session, run_id)
    return set(deltas)


async def reclaim_expired(
    session: AsyncSession, now: datetime, limit: int = RECLAIM_BATCH
) -> tuple[int, set[uuid.UUID]]:
    """Hand back up to `limit` tasks whose lease expired (their worker died): an index range
    over running tasks by expiry, so its cost follows what expired, not what is pending.
    Returns how many, and the runs that have work again."""
    query = (
        select(_TASKS.c.id, _TASKS.c.run_id, _TASKS.c.reserved_usd)
        .where(
            status_is(_TASKS.c.status, ExtractionStatus.RUNNING), _TASKS.c.lease_expires_at < now
        )
        .order_by(_TASKS.c.lease_expires_at)
        .limit(limit)
    )
    if _is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    rows = (await session.execute(query)).all()
    runs = await _back_to_pending(session, rows, "lease expired")
    return len(rows), runs


async def release_tasks(
    session: AsyncSession, task_ids: Sequence[uuid.UUID], owner: str
) -> set[uuid.UUID]:
    """A stopping worker hands back the tasks it holds and will not finish, at once rather
    than after their lease. Returns the runs that have work again."""
    rows: list[Any] = []
    for batch in _chunks(sorted(task_ids)):
        query = (
            select(_TASKS.c.id, _TASKS.c.run_id, _TASKS.c.reserved_usd)
            .where(
                _TASKS.c.id.in_(batch),
                _TASKS.c.lease_owner == owner,
                _TASKS.c.status == ExtractionStatus.RUNNING,
            )
            .order_by(_TASKS.c.id)
        )
        if _is_postgres(session):
            query = query.with_for_update()
        rows += (await session.execute(query)).all()
    return await _back_to_pending(session, rows, "released")


async def hand_to_batch(
    session: AsyncSession,
    task_ids: Sequence[uuid.UUID],
    owner: str,
    batch_owner: str,
    until: datetime,
) -> int:
    """Move the leases this worker holds on `task_ids` to a provider batch (`batch_owner`,
    ``batch:<id>``) until `until`: the batch's poller stores their outcomes, and a restart
    finds them by that owner instead of handing them out again. Returns how many moved."""
    moved = 0
    for batch in _chunks(sorted(task_ids)):
        result = await session.execute(
            update(_TASKS)
            .where(
                _TASKS.c.id.in_(batch),
                _TASKS.c.lease_owner == owner,
                _TASKS.c.status == ExtractionStatus.RUNNING,
            )
            .values(lease_owner=batch_owner, lease_expires_at=until)
        )
        moved += _rowcount(result)
    return moved


# -- the budget ---------------------------------------------------------------------------------


async def reserve_budget(
    session: AsyncSession,
    task: ClaimedTask,
    owner: str,
    amount: float,
    price_in: float,
    price_out: float,
    second_price: tuple[float, float] | None = None,
) -> bool:
    """Hold `amount` USD of the run's budget for a call about to be sent: only if what the
    run has spent plus what is held for calls in flight plus this stays within the budget.
    So a run can overspend only by what its calls in flight cost beyond their estimates.
    A two-profile run's spending counts its second profile's tokens at `second_price`.

    False when the run may start no call (its budget would be passed, or it was stopped)."""
    if second_price is None:
        spent = (_RUNS.c.tokens_in * price_in + _RUNS.c.tokens_out * price_out) / 1_000_000
    else:
        spent = (
            (_RUNS.c.tokens_in - _RUNS.c.second_tokens_in) * price_in
            + (_RUNS.c.tokens_out - _RUNS.c.second_tokens_out) * price_out
            + _RUNS.c.second_tokens_in * second_price[0]
            + _RUNS.c.second_tokens_out * second_price[1]
        ) / 1_000_000
    result = await session.execute(
        update(_RUNS)
        .where(
            _RUNS.c.id == task.run_id,
            _RUNS.c.status.in_(ACTIVE_RUN_STATUSES),
            _RUNS.c.stop_reason.is_(None),
            _RUNS.c.budget_usd.is_(None)
            | (spent + _RUNS.c.reserved_usd + amount <= _RUNS.c.budget_usd),
        )
        .values(reserved_usd=_RUNS.c.reserved_usd + amount)
    )
    if _rowcount(result) != 1:
        return False
    await session.execute(
        update(_TASKS)
        .where(_TASKS.c.id == task.id, _TASKS.c.lease_owner == owner)
        .values(reserved_usd=func.coalesce(_TASKS.c.reserved_usd, 0.0) + amount)
    )
    return True


async def settle_budget(
    session: AsyncSession, task: ClaimedTask, owner: str, change: float
) -> None:
    """A reserved call is over: replace its estimate by what it cost (`change` = cost −
    estimate), still held until the task's outcome (and its tokens) is stored."""
    if not change:
        return
    await session.execute(
        update(_RUNS)
        .where(_RUNS.c.id == task.run_id)
        .values(
            reserved_usd=case(
                (_RUNS.c.reserved_usd + change > 0, _RUNS.c.reserved_usd + change), else_=0.0
            )
        )
    )
    await session.execute(
        update(_TASKS)
        .where(_TASKS.c.id == task.id, _TASKS.c.lease_owner == owner)
        .values(reserved_usd=func.coalesce(_TASKS.c.reserved_usd, 0.0) + change)
    )


async def stop_for_budget(
    session: AsyncSession, run_id: uuid.UUID, reason: str, line: LogLine
) -> bool:
    """Stop the run from starting tasks (its budget is reached), once: True for the call
    that did. Its tasks in flight finish; then it finishes (maybe now)."""
    result = await session.execute(
        update(_RUNS)
        .where(
            _RUNS.c.id == run_id,
            _RUNS.c.status.in_(ACTIVE_RUN_STATUSES),
            _RUNS.c.stop_reason.is_(None),
        )
        .values(stop_reason=reason, error=reason, lease_owner=None, lease_expires_at=None)
    )
    if _rowcount(result) != 1:
        return False
    await _log(session, run_id, [line])
    await outbox.record_run_event(session, run_id, Event.RUN_BUDGET_REACHED)
    await finish_if_done(session, run_id)
    return True


# -- cancel and retry ----------------------------------------------------------------------------


async def cancel_run(session: AsyncSession, run_id: uuid.UUID, line: LogLine) -> bool:
    """Cancel an active run in one row: its pending tasks are never claimed (they read as
    cancelled), its preparation stops, calls in flight finish and are kept."""
    result = await session.execute(
        update(_RUNS)
        .where(_RUNS.c.id == run_id, _RUNS.c.status.in_(ACTIVE_RUN_STATUSES))
        .values(
            status=RunStatus.CANCELLED,
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    if _rowcount(result) != 1:
        return False
    await _log(session, run_id, [line])
    return True


@dataclass(frozen=True)
class RetryResult:
    #: Pairs that will run again: failed, cancelled, never started, never created.
    pairs: int
    #: Whether task rows remain to be created (the run is preparing again).
    preparing: bool


async def retry_run(
    session: AsyncSession, run_id: uuid.UUID, budget: float | None, *, set_budget: bool
) -> RetryResult:
    """Run again what a run did not finish: its failed and cancelled tasks go back to
    pending; its never-started tasks and uncreated pairs go on. Stopping is undone."""
    run = (
        await session.execute(
            select(Run)
            .where(Run.id == run_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    delta = _Delta()
    for status in (ExtractionStatus.FAILED, ExtractionStatus.CANCELLED):
        result = await session.execute(
            update(_TASKS)
            .where(_TASKS.c.run_id == run_id, status_is(_TASKS.c.status, status))
            .values(
                status=ExtractionStatus.PENDING,
                error=None,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=None,
            )
        )
        delta.move(status, ExtractionStatus.PENDING, _rowcount(result))
    if run.profile_count > 1:
        # The missing answer of these pairs is asked again; the verdict follows its outcome.
        await session.execute(
            update(_TASKS)
            .where(_TASKS.c.run_id == run_id, _TASKS.c.agreement == Agreement.ONE_MISSING)
            .values(agreement=None)
        )
    # A run that is over or stopped will also start the tasks it never started.
    stopped = run.status not in ACTIVE_RUN_STATUSES or run.stop_reason is not None
    again = -delta.counts.get("failed_count", 0) - delta.counts.get("cancelled_count", 0)
    if stopped:
        again += run.pending_count + run.unprepared_count
    if again == 0:
        return RetryResult(0, preparing=False)
    preparing = run.documents_prepared < run.document_count
    if preparing:
        next_status = RunStatus.PREPARING
    else:
        next_status = RunStatus.RUNNING if run.started_at is not None else RunStatus.QUEUED
    values: dict[str, Any] = {
        **delta.values(),
        "status": next_status,
        "finished_at": None,
        "error": None,
        "stop_reason": None,
    }
    if set_budget:
        values["budget_usd"] = budget
    await session.execute(update(_RUNS).where(_RUNS.c.id == run_id).values(**values))
    await _log(
        session, run_id, [LogLine("run.retried", f"Retrying {counted(again, 'extraction')}.")]
    )
    return RetryResult(again, preparing)


# -- deleting what tasks refer to ---------------------------------------------------------------


async def _delete_tasks(
    session: AsyncSession, where: ColumnElement[bool]
) -> dict[uuid.UUID, _Delta]:
    """Delete the task rows matching `where`; the change to each run's counters."""
    result = await session.execute(
        delete(_TASKS)
        .where(where)
        .returning(
            _TASKS.c.run_id,
            _TASKS.c.status,
            _TASKS.c.tokens_in,
            _TASKS.c.tokens_out,
            _TASKS.c.slot,
        )
    )
    deltas: dict[uuid.UUID, _Delta] = defaultdict(_Delta)
    for row in result.all():
        delta = deltas[row.run_id]
        delta.move(row.status, None)
        delta.add_tokens(row.slot, -row.tokens_in, -row.tokens_out)
    return deltas


async def _forget(
    session: AsyncSession, deltas: dict[uuid.UUID, _Delta], plan_shares: Iterable[Any]
) -> None:
    """Take deleted pairs out of their runs: `plan_shares` are (run id, tasks of the plan
    that go); runs left with nothing to do finish."""
    for run_id, pairs in plan_shares:
        deltas[run_id].task_count -= int(pairs)
    for run_id in sorted(await _apply(session, deltas)):
        await finish_if_done(session, run_id)


async def forget_document(session: AsyncSession, document_id: uuid.UUID) -> None:
    """Before a document is deleted: its task rows go, and it leaves the plans of the runs
    over it (its pairs not created yet included)."""
    width = (
        select(func.count())
        .select_from(RunVariable)
        .where(RunVariable.run_id == RunDocument.run_id)
        .scalar_subquery()
    )
    shares = (
        await session.execute(
            select(RunDocument.run_id, width * Run.profile_count)
            .join(Run, Run.id == RunDocument.run_id)
            .where(RunDocument.document_id == document_id)
        )
    ).all()
    deltas = await _delete_tasks(session, _TASKS.c.document_id == document_id)
    await _forget(session, deltas, shares)


async def forget_variable(
    session: AsyncSession, project_id: uuid.UUID, variable_id: uuid.UUID
) -> None:
    """Before a variable is deleted: its task rows go (found through the project's documents,
    by the document × variable index), and it leaves the plans of the runs over it."""
    height = (
        select(func.count())
        .select_from(RunDocument)
        .where(RunDocument.run_id == RunVariable.run_id)
        .scalar_subquery()
    )
    shares = (
        await session.execute(
            select(RunVariable.run_id, height * Run.profile_count)
            .join(Run, Run.id == RunVariable.run_id)
            .where(RunVariable.variable_id == variable_id)
        )
    ).all()
    documents = select(Document.id).where(Document.project_id == project_id).scalar_subquery()
    deltas = await _delete_tasks(
        session, _TASKS.c.document_id.in_(documents) & (_TASKS.c.variable_id == variable_id)
    )
    await _forget(session, deltas, shares)


async def forget_project(session: AsyncSession, project_id: uuid.UUID) -> None:
    """Before a project is deleted: every task row of its runs (its runs go with it)."""
    runs = select(Run.id).where(Run.project_id == project_id).scalar_subquery()
    await session.execute(delete(_TASKS).where(_TASKS.c.run_id.in_(runs)))
