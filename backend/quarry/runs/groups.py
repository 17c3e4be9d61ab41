"""Grouping: several variables of one document asked in one LLM call (a project's `group_size`).

A run still has one task row — and one job — per (document, variable). When a run's snapshot
says `group_size` k > 1, the job that claims a task claims, in the same transaction, up to
k − 1 sibling tasks of the same run and document that are still pending (in codebook order,
under the same compare-and-set conditions as any claim); the siblings' own jobs then find them
taken and do nothing. This job holds every lease (one heartbeat renews them all), makes one
grouped call, checks each variable's part exactly as a single answer is checked (its type,
"not stated", grounding), and stores each outcome under the task's own lease. Variables whose
part is missing, malformed or invalid are then asked on their own — single calls, still in
this job, still holding their leases, with the usual re-asks.

Not sent in a group:
- answers the result cache holds (reused, no call): a group is what is left after them, and a
  group of one is a single call;
- documents longer than the context budget: each variable is shown the excerpts chosen for
  it, so there is no shared text to ask about — their tasks are not grouped at all.

Tokens: the grouped call's are split evenly across its variables (the remainder to the first),
so a run's totals stay exact; a variable that fell back adds its single calls' tokens. A
grouped answer used counts as one attempt. The job keeps the task deadline of a single
extraction for the whole group, fall-backs included (they run side by side).

Claims take turns per document on PostgreSQL. The jobs of a document's tasks tend to start
together (they sit side by side in the queue); if each claimed its own row at once, every
sibling would already be taken and nothing would be grouped. So in a grouped run each claim
first takes a transaction-scoped advisory lock for its (run, document): the first job claims
its task and its siblings, the next ones find theirs taken. SQLite needs no such thing: a
process's job transactions already take turns (`job_write_scope`), and it has one process.

The queries live here rather than in repository.py because nothing else needs them.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.documents.parsing import PAGE_SEPARATOR
from quarry.jobs import JobContext
from quarry.llm.client import ChatModel, StopCheck
from quarry.models import DocumentPage, Extraction, ExtractionStatus, Run, Variable
from quarry.models.base import utcnow
from quarry.runs.engine import GroupInput, PairInput, PairOutcome, extract_group, extract_pair
from quarry.runs.inputs import RunConfig, TaskInputs
from quarry.runs.repository import ClaimedTask
from quarry.runs.tasks import (
    PairWork,
    failure_outcome,
    lease_heartbeat,
    prepare_pair,
    reuse_cached,
    store_outcome,
)

log = structlog.get_logger(__name__)

#: A claimed task: its id and what it is about.
Member = tuple[uuid.UUID, ClaimedTask]


def group_size(run_settings: dict[str, Any]) -> int:
    """Variables per call for the run (1: grouping off; runs from before grouping have none)."""
    size = run_settings.get("group_size")
    return size if isinstance(size, int) and size > 1 else 1


#: Every claim on PostgreSQL runs it, grouped run or not: built once (see repository.py).
_TASK_RUN_SETTINGS = (
    select(Extraction.run_id, Extraction.document_id, Run.settings)
    .join(Run, Run.id == Extraction.run_id)
    .where(Extraction.id == bindparam("task_id"))
)


async def take_claim_turn(session: AsyncSession, task_id: uuid.UUID) -> None:
    """PostgreSQL, grouped runs: wait for this document's other claims to commit (see the
    module docstring); the lock is held until this transaction ends. Call before claiming."""
    if session.get_bind().dialect.name != "postgresql":
        return
    row = (await session.execute(_TASK_RUN_SETTINGS, {"task_id": task_id})).one_or_none()
    if row is None or group_size(row.settings) <= 1:
        return
    digest = hashlib.sha256(b"quarry.runs.groups" + row.run_id.bytes + row.document_id.bytes)
    key = int.from_bytes(digest.digest()[:8], "big", signed=True)
    await session.execute(select(func.pg_advisory_xact_lock(key)))


async def claim_siblings(
    session: AsyncSession,
    ctx: JobContext,
    inputs: TaskInputs,
    task_id: uuid.UUID,
    claimed: ClaimedTask,
    config: RunConfig,
) -> list[Member]:
    """In the transaction that claimed `task_id`: claim up to group_size − 1 pending tasks of
    the same run and document, in codebook order. None when grouping is off or the document
    is past the context budget.

    The conditions are `claim_extraction`'s (pending, or running with an expired lease); the
    task's own claim has just checked that the run is active. On PostgreSQL, rows another
    transaction is claiming are skipped rather than waited for, so two jobs of one document
    never wait on each other (nor deadlock): each simply groups fewer.
    """
    size = group_size(config.settings)
    if size <= 1:
        return []
    max_chars = int(config.settings.get("max_document_chars", ctx.settings.llm_max_document_chars))
    if await _is_long(session, inputs, claimed.document_id, max_chars):
        return []
    now = utcnow()
    claimable = (Extraction.status == ExtractionStatus.PENDING) | (
        (Extraction.status == ExtractionStatus.RUNNING) & (Extraction.lease_expires_at < now)
    )
    candidates = list(
        (
            await session.execute(
                select(Extraction.id)
                .join(Variable, Variable.id == Extraction.variable_id)
                .where(
                    Extraction.run_id == claimed.run_id,
                    Extraction.document_id == claimed.document_id,
                    Extraction.id != task_id,
                    claimable,
                )
                .order_by(Variable.position, Variable.created_at, Variable.id)
                .limit(size - 1)
                .with_for_update(of=Extraction, skip_locked=True)
            )
        ).scalars()
    )
    if not candidates:
        return []
    lease = timedelta(seconds=ctx.settings.task_lease_seconds)
    result = await session.execute(
        update(Extraction)
        .where(Extraction.id.in_(candidates), claimable)
        .values(
            status=ExtractionStatus.RUNNING,
            lease_owner=ctx.worker_id,
            lease_expires_at=now + lease,
            started_at=now,
        )
        .returning(
            Extraction.id,
            Extraction.run_id,
            Extraction.document_id,
            Extraction.variable_id,
            Extraction.prompt_version_id,
        )
        .execution_options(synchronize_session=False)
    )
    taken = {row[0]: ClaimedTask(*row[1:]) for row in result.all()}
    return [(i, taken[i]) for i in candidates if i in taken]


async def _is_long(
    session: AsyncSession, inputs: TaskInputs, document_id: uuid.UUID, max_chars: int
) -> bool:
    """Whether the document is past the context budget (`DocumentText.chunked`), from the
    process's cache or else from its pages' lengths, without loading its text."""
    text = inputs.documents.get((document_id, max_chars))
    if text is not None:
        return text.chunked
    chars, pages = (
        await session.execute(
            select(func.coalesce(func.sum(func.length(DocumentPage.text)), 0), func.count()).where(
                DocumentPage.document_id == document_id
            )
        )
    ).one()
    return int(chars) + len(PAGE_SEPARATOR) * max(int(pages) - 1, 0) > max_chars


async def run_group(
    ctx: JobContext,
    inputs: TaskInputs,
    config: RunConfig,
    members: Sequence[Member],
    cancelled: StopCheck,
    stop_reason: Callable[[], str | None],
) -> None:
    """Extract the claimed tasks of one document together and store each one's outcome.

    `cancelled` is the job's stop check (asked before every call); `stop_reason` says why it
    stopped the run (cancelled by the user, or its budget spent)."""
    works = [
        await prepare_pair(ctx, inputs, task_id, claimed, config) for task_id, claimed in members
    ]
    fresh = [work for work in works if not await reuse_cached(ctx, config, work)]
    if not fresh:
        return
    pairs = [work.build_input() for work in fresh]
    held = {work.task.task_id for work in fresh}
    stored: set[uuid.UUID] = set()
    grouped: dict[uuid.UUID, PairOutcome] = {}  # each variable's part of the grouped call
    lease = timedelta(seconds=ctx.settings.task_lease_seconds)
    deadline = asyncio.timeout(ctx.settings.task_timeout)

    async def store(
        work: PairWork, outcome: PairOutcome, events: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        task_id = work.task.task_id
        outcome = _with_cost_of(grouped.get(task_id), outcome)
        if outcome.status == ExtractionStatus.CANCELLED and stop_reason():
            outcome.error = stop_reason()  # cancelled by the user, or the run's budget spent
        held.discard(task_id)  # storing ends the lease: the heartbeat stops renewing it
        stored.add(task_id)
        await store_outcome(work, outcome, events)

    async def ask_alone(chat: ChatModel, work: PairWork, inp: PairInput, reason: str) -> None:
        try:
            outcome = await extract_pair(chat, inp, cancelled)
        except Exception as exc:  # this variable's failure; the others go on
            outcome = failure_outcome(ctx, exc, deadline, work.task.task_id)
        note = (
            f"its part of the grouped answer could not be used ({reason}); it was asked on its own."
        )
        await store(work, outcome, [("task.group_fallback", "warning", note)])

    try:
        async with lease_heartbeat(ctx, held, lease), deadline:
            chat = ctx.llm.get(config.model, fresh[0].temperature)
            if len(fresh) == 1:  # the others were cached: a single call
                await store(fresh[0], await extract_pair(chat, pairs[0], cancelled))
                return
            group = GroupInput(names=[work.name for work in fresh], pairs=pairs)
            answers = await extract_group(chat, group, cancelled)
            for work, answer in zip(fresh, answers, strict=True):
                grouped[work.task.task_id] = answer.outcome
            for work, answer in zip(fresh, answers, strict=True):
                if answer.fallback is None:
                    grouped.pop(work.task.task_id)  # the answer used: it is the outcome
                    await store(work, answer.outcome)
            fallbacks = [
                (work, inp, answer.fallback)
                for work, inp, answer in zip(fresh, pairs, answers, strict=True)
                if answer.fallback is not None
            ]
            if fallbacks:
                log.info(
                    "runs.group.fallback",
                    run_id=str(fresh[0].task.run_id),
                    variables=len(fallbacks),
                    group=len(fresh),
                )
                async with asyncio.TaskGroup() as calls:  # side by side, within the deadline
                    for work, inp, reason in fallbacks:
                        calls.create_task(ask_alone(chat, work, inp, reason))
    except Exception as exc:
        failure = failure_outcome(ctx, exc, deadline, fresh[0].task.task_id)
        for work in fresh:
            if work.task.task_id not in stored:
                await store(work, PairOutcome(status=failure.status, error=failure.error))


def _with_cost_of(grouped: PairOutcome | None, outcome: PairOutcome) -> PairOutcome:
    """`outcome` (of a variable asked alone) plus its share of the grouped call before it."""
    if grouped is not None:
        outcome.attempts += grouped.attempts
        outcome.tokens_in += grouped.tokens_in
        outcome.tokens_out += grouped.tokens_out
        outcome.latency_ms += grouped.latency_ms
        outcome.model = outcome.model or grouped.model
    return outcome
