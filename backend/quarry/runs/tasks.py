"""`runs.extract_pair`: what a worker executes for one (run, document, variable) task.

Delivery is at least once, so the task claims its row with a lease (compare-and-set), makes
the LLM calls with no transaction open, and writes its result only while it holds the lease.
Running it twice, or on two workers at once, stores exactly one result.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.db import session_scope
from quarry.documents.parsing import PAGE_SEPARATOR
from quarry.jobs import JobContext
from quarry.llm.client import LLMCallError
from quarry.models import Document, DocumentPage, Extraction, ExtractionStatus, PromptVersion, Run
from quarry.runs import repository
from quarry.runs.engine import PairInput, PairOutcome, extract_pair
from quarry.variables.prompts import render_document_block
from quarry.variables.types import TypeSpec, VariableType

log = structlog.get_logger(__name__)

_TEXT_CACHE_KEY = "runs.document_text_cache"
_TEXT_CACHE_SIZE = 32


class _DocumentText:
    def __init__(self, pages: list[DocumentPage], max_chars: int) -> None:
        texts = [p.text for p in pages]
        # Documents past the budget are cut for now; chunking arrives with the quality issue.
        budget, kept = max_chars, []
        for text in texts:
            kept.append(text[: max(budget, 0)])
            budget -= len(text)
            if budget <= 0:
                break
        self.truncated = budget < 0
        self.block = render_document_block(kept)
        self.text = PAGE_SEPARATOR.join(texts)  # the offsets the pages were stored with
        self.page_starts = [p.char_start for p in pages]


async def _document_text(ctx: JobContext, document_id: uuid.UUID) -> _DocumentText:
    """Page texts are immutable once parsed, so a worker keeps the recent ones."""
    cache = ctx.extras.setdefault(_TEXT_CACHE_KEY, OrderedDict())
    assert isinstance(cache, OrderedDict)
    if document_id in cache:
        cache.move_to_end(document_id)
        return cache[document_id]  # type: ignore[no-any-return]
    async with ctx.sessionmaker() as session:
        pages = list(
            (
                await session.execute(
                    select(DocumentPage)
                    .where(DocumentPage.document_id == document_id)
                    .order_by(DocumentPage.number)
                )
            ).scalars()
        )
    text = _DocumentText(pages, ctx.settings.llm_max_document_chars)
    cache[document_id] = text
    if len(cache) > _TEXT_CACHE_SIZE:
        cache.popitem(last=False)
    return text


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
                async with session_scope(ctx.sessionmaker) as session:
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
        "tokens_in": outcome.tokens_in,
        "tokens_out": outcome.tokens_out,
        "latency_ms": outcome.latency_ms,
        "model": outcome.model,
        "error": outcome.error,
        "cached": False,
    }


async def run_extract_pair(ctx: JobContext, extraction_id: str) -> None:
    """Claim, extract, store; then finish the run if this was its last task."""
    task_id = uuid.UUID(extraction_id)
    lease = timedelta(seconds=ctx.settings.task_lease_seconds)
    async with session_scope(ctx.sessionmaker) as session:
        if not await repository.claim_extraction(session, task_id, ctx.worker_id, lease):
            return  # done, cancelled, or held by another worker: nothing to do
        task = await session.get(Extraction, task_id)
        assert task is not None
        run = await session.get(Run, task.run_id)
        version = await session.get(PromptVersion, task.prompt_version_id)
        document = await session.get(Document, task.document_id)
        assert run is not None and version is not None and document is not None
        if await repository.mark_run_started(session, run.id):
            repository.add_event(session, run.id, "run.started", "The run started.")
        run_id, model, settings = run.id, run.model, dict(run.settings)
        spec, prompt = dict(version.spec), version.prompt
        document_id, variable_id, filename = document.id, task.variable_id, document.filename

    text = await _document_text(ctx, document_id)
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
        async with ctx.sessionmaker() as s:
            return await repository.run_status(s, run_id) not in ("queued", "running")

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

    async with session_scope(ctx.sessionmaker) as session:
        if not await repository.store_outcome(
            session, task_id, ctx.worker_id, _outcome_values(outcome)
        ):
            log.info("runs.task.lease_lost", extraction_id=extraction_id)
            return
        await repository.add_run_tokens(session, run_id, outcome.tokens_in, outcome.tokens_out)
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
    async with session_scope(ctx.sessionmaker) as session:
        await finish_run_if_done(session, run_id)


async def finish_run_if_done(session: AsyncSession, run_id: uuid.UUID) -> None:
    """Give the run its final status once no task is left, logging it exactly once.

    Called after every task, and by the sweeper for a worker that died in between."""
    final = await repository.finish_run_if_done(session, run_id)
    if final is not None:
        repository.add_event(session, run_id, "run.finished", f"The run finished: {final}.")
        log.info("runs.finished", run_id=str(run_id), status=final)
