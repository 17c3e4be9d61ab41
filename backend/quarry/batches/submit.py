"""Submitting a batch run's calls as provider batches.

The executor (runs/executor.py) claims a batch run's pending tasks as it claims a live run's,
answers what the result cache holds, and cuts the rest into units (runs/groups.py) — then,
instead of calling, hands the units here. Each unit becomes one request line whose body is
the one its first live call would send; the lines go into batches of at most
`batch_max_requests` lines and `batch_max_bytes` bytes (OpenAI's limits: 50,000 and 200 MB).

For each batch, in this order: its row is created and its tasks' leases move to it (one
transaction: from then on a restart finds them by the batch, and nothing hands them out
again); its file is uploaded and recorded; the batch is created with a marker in its metadata
and recorded. A process that dies between the upload and recording the batch leaves a
`submitting` row that the next poller completes: it finds the batch by its marker, or
creates it from the recorded file (batches/poller.py) — never a second batch of the same
tasks, short of the provider losing its own list.

A unit whose prompt cannot fit the model's context is not batched: it is asked live at once,
where it is cut to fit. A provider that refuses the batch (no batch API, bad file) gets no
second try: the batch's tasks go back to pending and the run's calls are made live from then
on, saying why in the run's log (batches/repository.py `fallback_reason`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.batches import lifecycle, repository
from quarry.db import job_write_scope
from quarry.jobs import POLL_BATCH, WORK_ON_RUN, JobContext
from quarry.llm.batch import BatchCallError, BatchClient
from quarry.llm.client import (
    GROUP_RESPONSE_FORMAT,
    RESPONSE_FORMAT,
    ContextTooLong,
    PreparedRequest,
)
from quarry.models import batch_owner
from quarry.models.base import utcnow
from quarry.runs import lifecycle as runs_lifecycle
from quarry.runs.engine import (
    GroupInput,
    answer_tokens,
    build_group_messages,
    build_messages,
    group_answer_tokens,
)
from quarry.runs.inputs import RunConfig
from quarry.runs.lifecycle import LogLine
from quarry.runs.tasks import PairWork

log = structlog.get_logger(__name__)

#: A batch's tasks are leased to it for the completion window and this margin: past that
#: (the batch never heard of again) the sweeper hands them out again.
DEADLINE_MARGIN = timedelta(hours=2)
COMPLETION_WINDOW = timedelta(hours=24)
#: The status of a batch whose submission was interrupted before its file was uploaded (its
#: tasks went back to pending; no provider batch exists).
SUBMITTING_ABANDONED = "cancelled"


def custom_id(unit: Sequence[PairWork]) -> str:
    """A request's id in its batch: its tasks' places in the run (`seq`), in ask order."""
    return "q" + ",".join(str(work.task.seq) for work in unit)


def unit_seqs(custom: str) -> list[int]:
    """The task places a `custom_id` names ([] for one Quarry did not write)."""
    if not custom.startswith("q"):
        return []
    try:
        return [int(part) for part in custom[1:].split(",")]
    except ValueError:
        return []


def poll_lease(ctx: JobContext) -> timedelta:
    """How long a poller's lease lasts: past its longest sleep between two polls."""
    s = ctx.settings
    return timedelta(seconds=2 * s.batch_poll_max_seconds + s.task_lease_seconds)


def request_of(client: BatchClient, config: RunConfig, unit: Sequence[PairWork]) -> PreparedRequest:
    """The first request a live unit would send (`ContextTooLong` when it cannot fit)."""
    snapshot = config.snapshot
    if len(unit) == 1:
        inp = unit[0].build_input(snapshot)
        return client.prepare(build_messages(inp), RESPONSE_FORMAT, answer_tokens(inp.type_spec))
    pairs = [work.build_input(snapshot) for work in unit]
    group = GroupInput(names=[work.name for work in unit], pairs=pairs)
    return client.prepare(
        build_group_messages(group),
        GROUP_RESPONSE_FORMAT,
        group_answer_tokens([p.type_spec for p in pairs]),
    )


@dataclass
class Submitted:
    """What became of the units handed over."""

    #: Units to ask live now (their prompt needs cutting to fit the context).
    live: list[list[PairWork]] = field(default_factory=list)
    #: The batches created (a wake-up starts each one's poller).
    batches: list[uuid.UUID] = field(default_factory=list)


async def submit_units(
    ctx: JobContext,
    config: RunConfig,
    units: Sequence[list[PairWork]],
    held: set[uuid.UUID],
) -> Submitted:
    """Submit `units` (this process holds their tasks' leases, `held`) as provider batches;
    tasks handed to a batch leave `held`."""
    result = Submitted()
    if not units:
        return result
    snapshot = config.snapshot
    client = ctx.llm.batch_client(snapshot.llm_profile(ctx.llm.default_profile()))
    settings = ctx.settings
    chunk: list[tuple[list[PairWork], bytes]] = []
    size = 0
    for unit in units:
        try:
            line = client.line(custom_id(unit), request_of(client, config, unit))
        except ContextTooLong:
            result.live.append(unit)
            continue
        if chunk and (
            len(chunk) >= settings.batch_max_requests or size + len(line) > settings.batch_max_bytes
        ):
            result.batches += await _submit_chunk(ctx, client, config, chunk, held)
            chunk, size = [], 0
        chunk.append((unit, line))
        size += len(line)
    if chunk:
        result.batches += await _submit_chunk(ctx, client, config, chunk, held)
    return result


async def _submit_chunk(
    ctx: JobContext,
    client: BatchClient,
    config: RunConfig,
    chunk: list[tuple[list[PairWork], bytes]],
    held: set[uuid.UUID],
) -> list[uuid.UUID]:
    task_ids = [work.task.id for unit, _ in chunk for work in unit]
    run_id = chunk[0][0][0].task.run_id
    async with job_write_scope(ctx.sessionmaker) as session:
        batch = await lifecycle.open_batch(
            session,
            run_id,
            requests=len(chunk),
            poller=ctx.worker_id,
            poll_lease=poll_lease(ctx),
            deadline=_deadline(),
        )
        batch_id, owner = batch.id, batch_owner(batch.id)
        moved = await runs_lifecycle.hand_to_batch(
            session, task_ids, ctx.worker_id, owner, batch.deadline_at
        )
        await lifecycle.set_task_count(session, batch_id, moved)
    held.difference_update(task_ids)
    try:
        file_id = await client.upload((line for _, line in chunk), f"quarry-{batch_id.hex}.jsonl")
        async with job_write_scope(ctx.sessionmaker) as session:
            await lifecycle.record_upload(session, batch_id, file_id)
        state = await client.create(file_id, str(batch_id))
    except BatchCallError as exc:
        await refuse(ctx, run_id, batch_id, exc.reason)
        return []
    async with job_write_scope(ctx.sessionmaker) as session:
        interval = ctx.settings.batch_poll_min_seconds
        await lifecycle.record_state(
            session, batch_id, state, interval=interval, next_poll_at=_after(interval)
        )
        # Any process may poll it now (the one the wake-up reaches).
        await lifecycle.release_poll(session, batch_id, ctx.worker_id)
        discount = config.snapshot.batch_discount
        await runs_lifecycle.log_events(
            session,
            run_id,
            [
                LogLine(
                    "run.batch_submitted",
                    f"{len(chunk)} requests ({moved} extractions) were submitted as the "
                    f"provider batch {state.id}; it answers within 24 h"
                    + (f", at {discount:.0%} off the price." if discount else "."),
                    data={"batch_id": str(batch_id), "provider_batch_id": state.id},
                )
            ],
        )
    log.info("batches.submitted", run_id=str(run_id), batch_id=str(batch_id), requests=len(chunk))
    await ctx.queue.enqueue(POLL_BATCH, [str(batch_id)])
    return [batch_id]


async def refuse(ctx: JobContext, run_id: uuid.UUID, batch_id: uuid.UUID, reason: str) -> None:
    """The provider refused the batch: its tasks go back to pending, the run goes live."""
    async with job_write_scope(ctx.sessionmaker) as session:
        tasks = await _held_by(session, run_id, batch_id)
        await runs_lifecycle.release_tasks(session, tasks, batch_owner(batch_id))
        await lifecycle.finish_batch(session, batch_id, status="failed", error=reason)
        await runs_lifecycle.log_events(
            session,
            run_id,
            [
                LogLine(
                    "run.batch_refused",
                    f"The provider refused the batch ({reason}); the run's remaining calls "
                    "are made live, at the full price.",
                    level="warning",
                    data={"batch_id": str(batch_id)},
                )
            ],
        )
    log.warning("batches.refused", run_id=str(run_id), batch_id=str(batch_id), reason=reason)
    await ctx.queue.enqueue(WORK_ON_RUN, [str(run_id)])


async def _held_by(
    session: AsyncSession, run_id: uuid.UUID, batch_id: uuid.UUID
) -> list[uuid.UUID]:
    return [t.id for t in await repository.batch_tasks(session, run_id, batch_owner(batch_id))]


def _deadline() -> datetime:
    return utcnow() + COMPLETION_WINDOW + DEADLINE_MARGIN


def _after(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)
