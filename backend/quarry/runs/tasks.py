"""`runs.extract_pair`: what a worker executes for one (run, document, variable) task.

Delivery is at least once, so the task claims its row with a lease (compare-and-set), makes
the LLM calls with no transaction open, and writes its result only while it holds the lease.
Running it twice, or on two workers at once, stores exactly one result.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.db import job_write_scope
from quarry.jobs import JobContext
from quarry.llm.client import LLMCallError
from quarry.models import (
    Extraction,
    ExtractionStatus,
)
from quarry.runs import repository
from quarry.runs.engine import PairInput, PairOutcome, extract_pair
from quarry.runs.inputs import TaskInputs
from quarry.variables.types import TypeSpec, VariableType

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def _lease_heartbeat(
    ctx: JobContext, task_id: uuid.UUID, lease: timedelta
) -> AsyncIterator[None]:
    """Renew the task's lease every third of its length while the body runs.

    The lease can then be short (a killed worker's task comes back soon) without a long LLM
    call being handed to a second worker while the first is still waiting for its answer.
    """

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                async with job_write_scope(ctx.sessionmaker) as session:
                    held = await repository.renew_lease(session, task_id, ctx.worker_id, lease)
            except Exception:
                log.warning("runs.task.lease_renewal_failed", extraction_id=str(task_id))
                continue  # a database blip: try again; the lease has two more beats of slack
            if not held:  # taken over after an expiry; our result will not be stored
                log.info("runs.task.lease_lost", extraction_id=str(task_id))
                return

    renewer = asyncio.create_task(renew(), name=f"lease-{task_id}")
    try:
        yield
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer


def _outcome_values(outcome: PairOutcome) -> dict[str, object]:
    return {
        "status": outcome.status,
        "value": outcome.value,
        "raw_output": outcome.raw_output,
        "evidence": outcome.evidence,
        "page": outcome.page,
        "char_start": outcome.char_start,
        "char_end": outcome.char_end,
        "grounded": outcome.grounded,
        "confidence": outcome.confidence,
        "attempts": Extraction.attempts + outcome.attempts,
        # Summed over every attempt of the task (retries of a failed run included): the run's
        # token totals are the sum of its tasks'.
        "tokens_in": Extraction.tokens_in + outcome.tokens_in,
        "tokens_out": Extraction.tokens_out + outcome.tokens_out,
        "latency_ms": outcome.latency_ms,
        "model": outcome.model,
        "error": outcome.error,
        "cached": False,
    }


async def run_extract_pair(ctx: JobContext, extraction_id: str) -> None:
    """Claim, extract, store; then finish the run if this was its last task."""
    task_id = uuid.UUID(extraction_id)
    lease = timedelta(seconds=ctx.settings.task_lease_seconds)
    inputs = TaskInputs.for_context(ctx)
    async with job_write_scope(ctx.sessionmaker) as session:
        claimed = await repository.claim_extraction(session, task_id, ctx.worker_id, lease)
        if claimed is None:
            return  # done, cancelled, or held by another worker: nothing to do
        run_id, document_id, variable_id = claimed.run_id, claimed.document_id, claimed.variable_id
        config, first_sight = await inputs.run(session, run_id)
        if first_sight and await repository.mark_run_started(session, run_id):
            repository.add_event(session, run_id, "run.started", "The run started.")
    model, settings = config.model, config.settings
    variable = await inputs.prompt(ctx, claimed.prompt_version_id)
    spec, prompt = variable.spec, variable.prompt
    text = await inputs.document(ctx, document_id)
    filename = text.filename

    inp = PairInput(
        document_block=text.block,
        document_text=text.text,
        page_starts=text.page_starts,
        variable_prompt=prompt,
        type_spec=TypeSpec(
            type=VariableType(spec["type"]),
            allowed_values=tuple(spec.get("allowed_values") or ()),
            unit=spec.get("unit"),
        ),
        repair_attempts=int(settings.get("repair_attempts", ctx.settings.llm_repair_attempts)),
    )

    async def cancelled() -> bool:
        return await inputs.run_stopped(ctx, run_id)

    # The deadline sits inside the transport's own job timeout, so a task that runs too long
    # ends failed with a reason instead of being killed, found by the sweeper and re-run forever.
    deadline = asyncio.timeout(ctx.settings.task_timeout)
    try:
        async with _lease_heartbeat(ctx, task_id, lease), deadline:
            chat = ctx.llm.get(model, float(settings.get("temperature", 0.0)))
            outcome = await extract_pair(chat, inp, cancelled)
    except LLMCallError as exc:  # e.g. misconfiguration discovered at call time
        outcome = PairOutcome(status=ExtractionStatus.FAILED, error=exc.reason)
    except Exception as exc:
        if isinstance(exc, TimeoutError) and deadline.expired():
            error = f"The extraction did not finish within {ctx.settings.task_timeout:g} s."
        else:
            log.exception("runs.task.crashed", extraction_id=extraction_id)
            error = f"Internal error: {type(exc).__name__}."
        outcome = PairOutcome(status=ExtractionStatus.FAILED, error=error)

    async with job_write_scope(ctx.sessionmaker) as session:
        if not await repository.store_outcome(
            session, task_id, ctx.worker_id, _outcome_values(outcome)
        ):
            log.info("runs.task.lease_lost", extraction_id=extraction_id)
            return
        where = f"{filename} × {spec['name']}"
        for note in outcome.notes:
            repository.add_event(
                session,
                run_id,
                "task.reasked",
                f"{where}: the answer failed validation and was re-asked ({note})",
                level="warning",
                document_id=document_id,
                variable_id=variable_id,
            )
        if outcome.status == ExtractionStatus.FAILED:
            repository.add_event(
                session,
                run_id,
                "task.failed",
                f"{where}: {outcome.error}",
                level="error",
                document_id=document_id,
                variable_id=variable_id,
            )
        if text.truncated and outcome.attempts:
            repository.add_event(
                session,
                run_id,
                "task.truncated",
                f"{where}: the document was longer than the context budget and was cut.",
                level="warning",
                document_id=document_id,
                variable_id=variable_id,
            )
    # After the commit, so that of two tasks finishing at once the later one sees both done.
    # Usually a read of one index entry; the write happens only for the run's last task.
    async with job_write_scope(ctx.sessionmaker) as session:
        if not await repository.has_unfinished_tasks(session, run_id):
            await finish_run_if_done(session, run_id)


async def finish_run_if_done(session: AsyncSession, run_id: uuid.UUID) -> None:
    """Give the run its final status once no task is left, logging it exactly once.

    Called after every task, and by the sweeper for a worker that died in between."""
    final = await repository.finish_run_if_done(session, run_id)
    if final is not None:
        repository.add_event(session, run_id, "run.finished", f"The run finished: {final}.")
        log.info("runs.finished", run_id=str(run_id), status=final)
