"""Polling provider batches, and ingesting what they answered.

One asyncio task per batch this process polls (`BatchPoller.watch`), never blocking the loop:
it leases the batch's row (batches/lifecycle.py `take_poll`), asks the provider for its
status, records it, and sleeps — `batch_poll_min_seconds` first, ×1.5 after each poll up to
`batch_poll_max_seconds` — or less when woken (`runs.poll_batch`: the run was cancelled).
A batch whose run was cancelled or stopped is cancelled at the provider. The process that
submitted a batch polls it; if that process stops, it gives the lease up, and if it dies,
the lease expires: either way the sweeper (runner.py) wakes another process, which resumes
polling the same batch — nothing is submitted twice.

Ingesting a finished batch (completed, expired, cancelled or failed): its output and error
files are read, and each answered request goes through the very path of a live answer —
runs/tasks.py `run_single` or runs/groups.py `run_group`, with a chat model whose first
answer is the batch's line (batches/replay.py) — so it is parsed, validated, grounded and
support-checked as a live answer is, and stored by runs/lifecycle.py `store_outcomes` (the
batch owning the leases), in batches. Follow-up calls are made **live**, at once: re-asks of
an answer that failed validation, the single calls of a grouped answer's unusable parts, a
cut-off answer asked with more room, and requests the batch answered with an error (a 5xx,
say): a follow-up batch would add up to a day per round for a few pairs. Requests a batch
never answered (it expired, or was cancelled) go back to pending: the run submits them in its
next batch, or, once `MAX_UNFINISHED_BATCHES` of its batches ended so (or the provider refused
one), asks them live, saying why in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog

from quarry.batches import lifecycle, repository
from quarry.batches.replay import ReplayedChatModel
from quarry.batches.submit import SUBMITTING_ABANDONED, poll_lease, refuse, unit_seqs
from quarry.db import job_write_scope
from quarry.jobs import WORK_ON_RUN, JobContext
from quarry.llm.batch import BatchCallError, BatchClient, BatchLine, BatchState
from quarry.models import ExtractionStatus, LlmBatch, batch_owner
from quarry.models.base import utcnow
from quarry.profiles import repository as profiles_repository
from quarry.runs import lifecycle as runs_lifecycle
from quarry.runs.executor import STORE_BATCH, usage_rows
from quarry.runs.groups import run_group
from quarry.runs.inputs import RunConfig, TaskInputs
from quarry.runs.lifecycle import ClaimedTask, LogLine, Outcome
from quarry.runs.tasks import PairWork, TaskGate, chat_model, prepare, run_single

log = structlog.get_logger(__name__)

_POLLER_KEY = "batches.poller"
#: Provider statuses as the run's log tells them.
_STATUS_WORDS = {
    "validating": "is being validated by the provider",
    "in_progress": "is in progress",
    "finalizing": "is being finalised",
    "cancelling": "is being cancelled",
}


class BatchPoller:
    """This process's batch pollers (see the module docstring); one per job context."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._inputs = TaskInputs.for_context(ctx)
        self._watches: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._pokes: dict[uuid.UUID, asyncio.Event] = {}
        self._stopping = False

    @classmethod
    def for_context(cls, ctx: JobContext) -> BatchPoller:
        poller = ctx.extras.get(_POLLER_KEY)
        if not isinstance(poller, BatchPoller):
            poller = ctx.extras[_POLLER_KEY] = BatchPoller(ctx)
        return poller

    @property
    def watching(self) -> set[uuid.UUID]:
        return set(self._watches)

    def watch(self, batch_id: uuid.UUID) -> None:
        """Poll `batch_id` until it is ingested (at once, if this process already does)."""
        if self._stopping:
            return
        task = self._watches.get(batch_id)
        if task is not None and not task.done():
            self._pokes[batch_id].set()
            return
        self._pokes[batch_id] = asyncio.Event()
        self._watches[batch_id] = asyncio.create_task(
            self._poll_forever(batch_id), name=f"quarry-batch-{batch_id}"
        )

    async def stop(self) -> None:
        """Stop polling and give the leases up at once (another process resumes)."""
        self._stopping = True
        watched = list(self._watches)
        for task in self._watches.values():
            task.cancel()
        await asyncio.gather(*self._watches.values(), return_exceptions=True)
        for batch_id in watched:
            with contextlib.suppress(Exception):
                async with job_write_scope(self._ctx.sessionmaker) as session:
                    await lifecycle.release_poll(session, batch_id, self._ctx.worker_id)

    async def _poll_forever(self, batch_id: uuid.UUID) -> None:
        ctx = self._ctx
        settings = ctx.settings
        lease = poll_lease(ctx)
        interval = settings.batch_poll_min_seconds
        try:
            while not self._stopping:
                async with job_write_scope(ctx.sessionmaker) as session:
                    row = await lifecycle.take_poll(session, batch_id, ctx.worker_id, lease)
                if row is None:
                    return  # ingested, or another process polls it
                config = await self._inputs.run(ctx, row.run_id)
                if config is None:
                    return
                interval = max(interval, row.poll_interval or 0.0)
                try:
                    client = ctx.llm.batch_client(
                        config.snapshot.llm_profile(ctx.llm.default_profile())
                    )
                    state = await self._look(row, client)
                except BatchCallError as exc:
                    log.warning("batches.poll_failed", batch_id=str(batch_id), error=exc.reason)
                    state = None
                if state is not None:
                    if state.final:
                        await ingest(ctx, self._inputs, config, row, client, state, lease)
                        return
                    await self._record(row, state, interval)
                await self._sleep(batch_id, interval)
                interval = min(interval * 1.5, settings.batch_poll_max_seconds)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A database outage, say: the lease expires and the sweeper wakes a poller again.
            log.exception("batches.poller_failed", batch_id=str(batch_id))
        finally:
            if self._watches.get(batch_id) is asyncio.current_task():
                del self._watches[batch_id]
                self._pokes.pop(batch_id, None)

    async def _sleep(self, batch_id: uuid.UUID, seconds: float) -> None:
        poke = self._pokes.get(batch_id)
        if poke is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await poke.wait()
        poke.clear()

    async def _look(self, row: LlmBatch, client: BatchClient) -> BatchState | None:
        """The batch's state now: completing an interrupted submission, and cancelling the
        batch at the provider when its run may start no more calls."""
        if row.provider_batch_id is None:
            return await self._resume_submission(row, client)
        status = await self._inputs.run_status(self._ctx, row.run_id)
        if status.stop_reason is not None and row.status not in ("cancelling", "cancelled"):
            state = await client.cancel(row.provider_batch_id)
            async with job_write_scope(self._ctx.sessionmaker) as session:
                await runs_lifecycle.log_events(
                    session,
                    row.run_id,
                    [
                        LogLine(
                            "run.batch_cancelled",
                            f"The provider batch {row.provider_batch_id} was cancelled "
                            f"({status.stop_reason.rstrip('.')}); what it answered already "
                            "is kept.",
                            data={"batch_id": str(row.id)},
                        )
                    ],
                )
            return state
        return await client.retrieve(row.provider_batch_id)

    async def _resume_submission(self, row: LlmBatch, client: BatchClient) -> BatchState | None:
        """A batch whose submission its process did not finish: the batch it created (found by
        its marker), or one created now from its uploaded file; without a file, its tasks go
        back to pending for the next batch."""
        if row.input_file_id is None:
            async with job_write_scope(self._ctx.sessionmaker) as session:
                tasks = await repository.batch_tasks(session, row.run_id, batch_owner(row.id))
                await runs_lifecycle.release_tasks(
                    session, [t.id for t in tasks], batch_owner(row.id)
                )
                await lifecycle.finish_batch(
                    session, row.id, status=SUBMITTING_ABANDONED, error="submission interrupted"
                )
            await self._ctx.queue.enqueue(WORK_ON_RUN, [str(row.run_id)])
            return None
        try:
            found = await client.find(str(row.id))
            return found or await client.create(row.input_file_id, str(row.id))
        except BatchCallError as exc:
            if exc.transient:
                raise
            await refuse(self._ctx, row.run_id, row.id, exc.reason)
            return None

    async def _record(self, row: LlmBatch, state: BatchState, interval: float) -> None:
        async with job_write_scope(self._ctx.sessionmaker) as session:
            before = await lifecycle.record_state(
                session,
                row.id,
                state,
                interval=interval,
                next_poll_at=utcnow() + timedelta(seconds=interval),
            )
            changed = before is not None and (
                before != state.status
                or (state.completed + state.failed) != (row.completed_count + row.failed_count)
            )
            if changed and state.status in _STATUS_WORDS:
                done = state.completed + state.failed
                await runs_lifecycle.log_events(
                    session,
                    row.run_id,
                    [
                        LogLine(
                            "run.batch_progress",
                            f"The provider batch {state.id} {_STATUS_WORDS[state.status]}: "
                            f"{done} of {state.total or row.requests} requests answered.",
                            data={"batch_id": str(row.id), "status": state.status},
                        )
                    ],
                )


def for_context(ctx: JobContext) -> BatchPoller:
    return BatchPoller.for_context(ctx)


@dataclass
class _Unit:
    tasks: list[ClaimedTask]
    line: BatchLine | None


async def ingest(
    ctx: JobContext,
    inputs: TaskInputs,
    config: RunConfig,
    row: LlmBatch,
    client: BatchClient,
    state: BatchState,
    lease: timedelta,
) -> None:
    """Store what a finished batch answered (see the module docstring)."""
    owner = batch_owner(row.id)
    async with job_write_scope(ctx.sessionmaker) as session:
        await lifecycle.record_state(session, row.id, state, interval=0.0, next_poll_at=utcnow())
    lines = [*await client.lines(state.output_file_id), *await client.lines(state.error_file_id)]
    async with ctx.sessionmaker() as session:
        tasks = await repository.batch_tasks(session, row.run_id, owner)
    by_seq = {task.seq: task for task in tasks}
    units: list[_Unit] = []
    taken: set[int] = set()
    for line in lines:
        if line.unanswered:
            continue
        seqs = [q for q in unit_seqs(line.custom_id) if q in by_seq and q not in taken]
        if seqs:
            taken.update(seqs)
            units.append(_Unit([by_seq[q] for q in seqs], line))
    leftovers = [task for task in tasks if task.seq not in taken]
    if state.status == "completed":
        # The batch is over and said nothing of these: ask them live rather than wait again.
        units += [_Unit([task], None) for task in leftovers]
        leftovers = []
    asked_live = sum(1 for unit in units if unit.line is None or unit.line.reply is None)
    chunks = [units[start : start + STORE_BATCH] for start in range(0, len(units), STORE_BATCH)]
    woken: set[uuid.UUID] = set()
    for index, chunk in enumerate(chunks or [[]]):
        results = await asyncio.gather(*(_answer(ctx, inputs, config, unit) for unit in chunk))
        outcomes = [o for unit_outcomes, _, _ in results for o in unit_outcomes]
        tokens_in = sum(t_in for _, t_in, _ in results)
        tokens_out = sum(t_out for _, _, t_out in results)
        last = index == max(len(chunks) - 1, 0)
        async with job_write_scope(ctx.sessionmaker) as session:
            if last:
                # The batch is closed in the transaction that stores its last answers, so a
                # run never reads as finished while one of its batches still reads as open.
                woken = await runs_lifecycle.release_tasks(
                    session, [t.id for t in leftovers], owner
                )
                await lifecycle.finish_batch(session, row.id)
                told = _ingested_line(row, state, len(units), asked_live, leftovers)
                await runs_lifecycle.log_events(session, row.run_id, [told])
            await runs_lifecycle.store_outcomes(session, owner, outcomes)
            await profiles_repository.add_usage(session, usage_rows(outcomes))
            await lifecycle.add_ingested(session, row.id, tokens_in, tokens_out)
            if not last:
                await lifecycle.take_poll(session, row.id, ctx.worker_id, lease)
    log.info(
        "batches.ingested",
        run_id=str(row.run_id),
        batch_id=str(row.id),
        status=state.status,
        units=len(units),
        leftovers=len(leftovers),
    )
    if woken:
        await ctx.queue.enqueue(WORK_ON_RUN, [str(r) for r in sorted(woken)])


def _ingested_line(
    row: LlmBatch, state: BatchState, units: int, live: int, leftovers: Sequence[ClaimedTask]
) -> LogLine:
    words = {
        "completed": "completed",
        "expired": "expired before it was fully answered",
        "cancelled": "was cancelled",
        "failed": "failed",
    }
    message = f"The provider batch {state.id} {words.get(state.status, state.status)}"
    if state.errors:
        message += f" ({state.errors})"
    message += f": {units - live} answers were read from it"
    if live:
        message += f", {live} requests it did not answer were asked live"
    if leftovers:
        message += f"; {len(leftovers)} extractions it never answered go back to the queue"
    level = "info" if state.status == "completed" else "warning"
    return LogLine(
        "run.batch_ingested",
        message + ".",
        level=level,
        data={"batch_id": str(row.id), "status": state.status},
    )


async def _answer(
    ctx: JobContext, inputs: TaskInputs, config: RunConfig, unit: _Unit
) -> tuple[list[Outcome], int, int]:
    """The outcomes of one request's tasks, and the batch tokens its answer used."""
    try:
        works, gone = await prepare(ctx, inputs, config, unit.tasks)
    except Exception:
        log.exception("batches.prepare_failed", run_id=str(unit.tasks[0].run_id))
        return [_crashed(task) for task in unit.tasks], 0, 0
    if not works:
        return gone, 0, 0
    snapshot = config.snapshot
    line = unit.line
    reply = line.reply if line is not None else None
    live = chat_model(ctx, snapshot)
    chat = ReplayedChatModel(live, reply, _mode(snapshot.output_mode), snapshot.max_output_tokens)
    gate = TaskGate(ctx, inputs, config, works[0].task)
    try:
        if len(works) == 1:
            outcomes = await run_single(ctx, config, works[0], gate, chat)
        else:
            outcomes = await run_group(ctx, config, works, gate, chat)
    except Exception:
        log.exception("batches.unit_crashed", extraction_id=str(works[0].task.id))
        outcomes = [_crashed(work.task) for work in works]
    if line is not None and reply is None:
        note = f"the batch answered it with an error ({line.error}); it was asked live."
        for outcome, work in zip(outcomes, works, strict=False):
            outcome.events.insert(0, _line(work, note))
    for outcome in outcomes:
        outcome.usage_key = snapshot.usage_key
    return [*gone, *outcomes], chat.tokens_in, chat.tokens_out


def _line(work: PairWork, message: str) -> LogLine:
    return work.line("task.batch_line_failed", "warning", message)


def _mode(output_mode: str) -> str | None:
    return None if output_mode == "auto" else output_mode


def _crashed(task: ClaimedTask) -> Outcome:
    return Outcome(task, ExtractionStatus.FAILED, error="Internal error while ingesting a batch.")
