"""`runs.extract_pair`: what a worker executes for one (run, document, variable) task.

Delivery is at least once, so the task claims its row with a lease (compare-and-set), makes
the LLM calls with no transaction open, and writes its result only while it holds the lease.
Running it twice, or on two workers at once, stores exactly one result.

When the run groups variables (`group_size` > 1), the job that claims a task also claims
pending sibling tasks of the same document and asks about them in one call: runs/groups.py,
built on the steps below (`prepare_pair`, `reuse_cached`, `store_outcome`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.db import job_write_scope, writers_take_turns
from quarry.jobs import JobContext
from quarry.llm.client import LLMCallError
from quarry.models import (
    Extraction,
    ExtractionStatus,
)
from quarry.runs import repository
from quarry.runs.cache import ANSWER_COLUMNS, cache_key, find_cached_answer
from quarry.runs.engine import PairInput, PairOutcome, extract_pair
from quarry.runs.inputs import DocumentText, RunConfig, TaskInputs
from quarry.runs.repository import ClaimedTask
from quarry.variables.types import TypeSpec, VariableType

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def lease_heartbeat(
    ctx: JobContext, held: set[uuid.UUID], lease: timedelta
) -> AsyncIterator[None]:
    """Renew the leases of the tasks in `held` every third of their length while the body runs.

    The lease can then be short (a killed worker's task comes back soon) without a long LLM
    call being handed to a second worker while the first is still waiting for its answer.
    `held` may shrink meanwhile: a grouped job removes each task whose outcome it stores.
    """

    async def renew() -> None:
        while held:
            await asyncio.sleep(lease.total_seconds() / 3)
            lost = []
            try:
                async with job_write_scope(ctx.sessionmaker) as session:
                    for task_id in list(held):
                        if not await repository.renew_lease(session, task_id, ctx.worker_id, lease):
                            lost.append(task_id)
            except Exception:
                log.warning("runs.task.lease_renewal_failed", extraction_ids=_ids(held))
                continue  # a database blip: try again; the lease has two more beats of slack
            for task_id in lost:
                if task_id in held:  # taken over after an expiry; our result will not be stored
                    held.discard(task_id)
                    log.info("runs.task.lease_lost", extraction_id=str(task_id))

    renewer = asyncio.create_task(renew(), name=f"lease-{_ids(held)}")
    try:
        yield
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer


def _ids(task_ids: set[uuid.UUID]) -> str:
    return ",".join(sorted(str(task_id) for task_id in task_ids))


def _outcome_values(outcome: PairOutcome, cache_key: str, pages: list[int]) -> dict[str, object]:
    return {
        "status": outcome.status,
        "value": outcome.value,
        "raw_output": outcome.raw_output,
        "evidence": outcome.evidence,
        "page": outcome.page,
        "char_start": outcome.char_start,
        "char_end": outcome.char_end,
        "grounded": outcome.grounded,
        "grounding_method": outcome.grounding_method,
        "grounding_score": outcome.grounding_score,
        "confidence": outcome.confidence,
        # Added to the row's (repository.ADDED_COLUMNS): summed over every time the task ran.
        "attempts": outcome.attempts,
        "tokens_in": outcome.tokens_in,
        "tokens_out": outcome.tokens_out,
        "latency_ms": outcome.latency_ms,
        "model": outcome.model,
        "error": outcome.error,
        "cached": False,
        "cache_key": cache_key,
        "pages_sent": pages if outcome.attempts else None,
    }


def _reused_values(hit: Extraction, cache_key: str) -> dict[str, object]:
    """A cached answer: the earlier row's answer, no call, no tokens."""
    values: dict[str, object] = {column: getattr(hit, column) for column in ANSWER_COLUMNS}
    values.update(cached=True, cache_key=cache_key, error=None, latency_ms=0)
    return values


async def run_extract_pair(ctx: JobContext, extraction_id: str) -> None:
    """Claim; reuse a cached answer or extract; store; finish the run if this was its last."""
    # Imported here: groups builds on this module's steps (it imports them at its top).
    from quarry.runs import groups

    task_id = uuid.UUID(extraction_id)
    lease = timedelta(seconds=ctx.settings.task_lease_seconds)
    inputs = TaskInputs.for_context(ctx)
    async with job_write_scope(ctx.sessionmaker) as session:
        await groups.take_claim_turn(session, task_id)  # PostgreSQL, grouped runs only
        claimed = await repository.claim_extraction(session, task_id, ctx.worker_id, lease)
        if claimed is None:
            return  # done, cancelled, or held by another worker: nothing to do
        run_id = claimed.run_id
        config, first_sight = await inputs.run(session, run_id)
        if first_sight and await repository.mark_run_started(session, run_id):
            repository.add_event(session, run_id, "run.started", "The run started.")
        # In the same transaction, so the siblings' own jobs find them taken (grouping only).
        siblings = await groups.claim_siblings(session, ctx, inputs, task_id, claimed, config)

    stop_reason: str | None = None

    async def cancelled() -> bool:
        nonlocal stop_reason
        stop_reason = await inputs.run_stopped(ctx, run_id)
        return stop_reason is not None

    if siblings:
        members = [(task_id, claimed), *siblings]
        await groups.run_group(ctx, inputs, config, members, cancelled, lambda: stop_reason)
        return

    work = await prepare_pair(ctx, inputs, task_id, claimed, config)
    if await reuse_cached(ctx, config, work):
        return
    inp = work.build_input()
    # The deadline sits inside the transport's own job timeout, so a task that runs too long
    # ends failed with a reason instead of being killed, found by the sweeper and re-run forever.
    deadline = asyncio.timeout(ctx.settings.task_timeout)
    try:
        async with lease_heartbeat(ctx, {task_id}, lease), deadline:
            chat = ctx.llm.get(config.model, work.temperature)
            outcome = await extract_pair(chat, inp, cancelled)
    except Exception as exc:
        outcome = failure_outcome(ctx, exc, deadline, task_id)
    if outcome.status == ExtractionStatus.CANCELLED and stop_reason:
        outcome.error = stop_reason  # why: cancelled by the user, or the run's budget spent
    await store_outcome(work, outcome)


@dataclass
class PairWork:
    """A claimed task made ready: what it asks, its cache key, and where its outcome goes."""

    task: _Task
    spec: dict[str, Any]
    prompt: str
    key: str
    text: DocumentText
    temperature: float
    repair_attempts: int
    fuzzy_threshold: float
    pages: list[int] | None = None  # the pages shown, once `build_input` chose them

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def build_input(self) -> PairInput:
        """The engine's input (for a long document, the excerpts chosen for this variable)."""
        spec = self.spec
        block, self.pages = self.text.block_for(spec)
        return PairInput(
            document_block=block,
            document_text=self.text.text,
            page_starts=self.text.page_starts,
            variable_prompt=self.prompt,
            type_spec=TypeSpec(
                type=VariableType(spec["type"]),
                allowed_values=tuple(spec.get("allowed_values") or ()),
                unit=spec.get("unit"),
            ),
            repair_attempts=self.repair_attempts,
            fuzzy_threshold=self.fuzzy_threshold,
        )


async def prepare_pair(
    ctx: JobContext,
    inputs: TaskInputs,
    task_id: uuid.UUID,
    claimed: ClaimedTask,
    config: RunConfig,
) -> PairWork:
    """Load what a claimed task asks about (from the process's cache) and its cache key."""
    settings = config.settings
    temperature = float(settings.get("temperature", 0.0))
    max_chars = int(settings.get("max_document_chars", ctx.settings.llm_max_document_chars))
    variable = await inputs.prompt(ctx, claimed.prompt_version_id)
    spec, prompt = variable.spec, variable.prompt
    text = await inputs.document(ctx, claimed.document_id, max_chars)
    key = cache_key(
        document_sha256=text.sha256,
        max_document_chars=max_chars,
        variable_prompt=prompt,
        model=config.model,
        temperature=temperature,
    )
    task = _Task(
        ctx,
        task_id,
        claimed.run_id,
        claimed.document_id,
        claimed.variable_id,
        f"{text.filename} × {spec['name']}",
    )
    return PairWork(
        task=task,
        spec=spec,
        prompt=prompt,
        key=key,
        text=text,
        temperature=temperature,
        repair_attempts=int(settings.get("repair_attempts", ctx.settings.llm_repair_attempts)),
        fuzzy_threshold=float(
            settings.get("grounding_fuzzy_threshold", ctx.settings.grounding_fuzzy_threshold)
        ),
    )


async def reuse_cached(ctx: JobContext, config: RunConfig, work: PairWork) -> bool:
    """Store the cached answer for the task if there is one (and the run allows it)."""
    if config.settings.get("force_fresh"):
        return False
    inputs = TaskInputs.for_context(ctx)
    if work.key not in await inputs.cache_keys(ctx, config, work.task.run_id):
        return False
    async with ctx.sessionmaker() as session:
        hit = await find_cached_answer(session, config.project_id, work.key, work.task.task_id)
    if hit is None:
        return False
    await work.task.store(_reused_values(hit, work.key))
    return True


def failure_outcome(
    ctx: JobContext, exc: Exception, deadline: asyncio.Timeout, task_id: uuid.UUID
) -> PairOutcome:
    """The outcome of a task whose extraction raised `exc` (called in the `except` block)."""
    if isinstance(exc, LLMCallError):  # e.g. misconfiguration discovered at call time
        error = exc.reason
    elif isinstance(exc, TimeoutError) and deadline.expired():
        error = f"The extraction did not finish within {ctx.settings.task_timeout:g} s."
    else:
        log.exception("runs.task.crashed", extraction_id=str(task_id))
        error = f"Internal error: {type(exc).__name__}."
    return PairOutcome(status=ExtractionStatus.FAILED, error=error)


async def store_outcome(
    work: PairWork, outcome: PairOutcome, events: Sequence[tuple[str, str, str]] = ()
) -> None:
    """Store an extraction's outcome with its log lines (re-asks, failure, excerpts sent)."""
    pages = work.pages or []
    lines = [
        *events,
        *(
            ("task.reasked", "warning", f"the answer failed validation and was re-asked ({n})")
            for n in outcome.notes
        ),
    ]
    if outcome.status == ExtractionStatus.FAILED:
        lines.append(("task.failed", "error", str(outcome.error)))
    if work.text.chunked and outcome.attempts:
        lines.append(
            (
                "task.chunked",
                "info",
                f"the document is longer than the context budget; pages {_page_ranges(pages)} "
                "were sent, chosen for this variable.",
            )
        )
    await work.task.store(_outcome_values(outcome, work.key, pages), lines)


def _page_ranges(pages: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] → "1-3, 7, 9-10"."""
    runs: list[list[int]] = []
    for page in pages:
        if runs and page == runs[-1][-1] + 1:
            runs[-1].append(page)
        else:
            runs.append([page])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


class _Task:
    """The claimed task's identity, and storing its outcome while the lease is held."""

    def __init__(
        self,
        ctx: JobContext,
        task_id: uuid.UUID,
        run_id: uuid.UUID,
        document_id: uuid.UUID,
        variable_id: uuid.UUID,
        where: str,
    ) -> None:
        self.ctx, self.task_id, self.run_id = ctx, task_id, run_id
        self.document_id, self.variable_id, self.where = document_id, variable_id, where

    async def store(
        self, values: dict[str, object], events: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Write the outcome (and its log lines) if the lease is still ours, and finish the
        run if this was its last task. Usually that check reads one index entry; the write
        happens only for the run's last task.

        Of two tasks finishing at once, the later must see both done. On SQLite writers take
        turns (the store holds the write lock until it commits), so the check runs in the
        store's transaction and sees every earlier store. On PostgreSQL a transaction does
        not see another's uncommitted store, so the check runs after the commit — but only
        near the run's end: while a task of the run is still pending, its own store comes
        later and checks then (cancelling pending tasks finishes or re-checks the run)."""
        ctx = self.ctx
        async with job_write_scope(ctx.sessionmaker) as session:
            if not await repository.store_outcome(session, self.task_id, ctx.worker_id, values):
                log.info("runs.task.lease_lost", extraction_id=str(self.task_id))
                return
            for event, level, message in events:
                repository.add_event(
                    session,
                    self.run_id,
                    event,
                    f"{self.where}: {message}",
                    level=level,
                    document_id=self.document_id,
                    variable_id=self.variable_id,
                )
            if writers_take_turns(session):
                await self._finish_run_if_last(session)
                return
            if await repository.has_pending_tasks(session, self.run_id):
                return
        async with job_write_scope(ctx.sessionmaker) as session:
            await self._finish_run_if_last(session)

    async def _finish_run_if_last(self, session: AsyncSession) -> None:
        if not await repository.has_unfinished_tasks(session, self.run_id):
            await finish_run_if_done(session, self.run_id)


async def finish_run_if_done(session: AsyncSession, run_id: uuid.UUID) -> None:
    """Give the run its final status once no task is left, logging it exactly once.

    Called after every task, and by the sweeper for a worker that died in between."""
    final = await repository.finish_run_if_done(session, run_id)
    if final is not None:
        repository.add_event(session, run_id, "run.finished", f"The run finished: {final}.")
        log.info("runs.finished", run_id=str(run_id), status=final)
