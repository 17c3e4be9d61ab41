"""What a worker does with the tasks it claimed: prepare each pair, answer the ones the result
cache holds, make the calls — one per pair, or one per group of a document's variables
(runs/groups.py) — and turn every answer into the outcome to store.

Nothing here writes a task's row: the executor (runs/executor.py) claims the tasks, hands
them here, and stores the outcomes in batches (runs/lifecycle.py). The one write is the
budget reservation a call makes just before it is sent (`TaskGate.admit`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from quarry.db import job_write_scope
from quarry.jobs import JobContext
from quarry.llm.client import EXPECTED_OUTPUT_TOKENS, ChatModel, LLMCallError, OutputMode
from quarry.llm.pricing import cost_usd, format_usd
from quarry.models import Extraction, ExtractionStatus
from quarry.profiles import repository as profiles_repository
from quarry.runs import lifecycle, repository
from quarry.runs.costs import budget_reason, spent_usd
from quarry.runs.engine import PairInput, PairOutcome, extract_pair
from quarry.runs.inputs import DocumentGone, DocumentText, RunConfig, TaskInputs
from quarry.runs.lifecycle import ClaimedTask, LogLine, Outcome
from quarry.runs.snapshot import RunSnapshot, cache_key
from quarry.runs.support import cue_words
from quarry.variables.prompts import SYSTEM_PROMPT
from quarry.variables.types import TypeSpec, VariableType

log = structlog.get_logger(__name__)

#: The answer's columns a cache hit copies.
ANSWER_COLUMNS = (
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
    "model",
    "pages_sent",
)


@dataclass
class PairWork:
    """A claimed task made ready: what it asks, its cache key, and what it is about."""

    task: ClaimedTask
    spec: dict[str, Any]
    prompt: str
    key: str
    text: DocumentText
    pages: list[int] | None = None  # the pages shown, once `build_input` chose them
    shrunk: bool = False  # the document was cut further to fit the model's context

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def where(self) -> str:
        return f"{self.text.filename} × {self.name}"

    def build_input(self, snapshot: RunSnapshot) -> PairInput:
        """The engine's input (for a long document, the excerpts chosen for this variable)."""
        spec = self.spec
        block, self.pages = self.text.block_for(spec)

        def shrink(max_chars: int) -> str | None:
            smaller, pages = self.text.block_within(spec, max_chars)
            self.pages, self.shrunk = pages, True
            return smaller

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
            repair_attempts=snapshot.repair_attempts,
            fuzzy_threshold=snapshot.grounding_fuzzy_threshold,
            cues=cue_words(str(spec.get("name") or ""), str(spec.get("label") or "")),
            shrink=shrink,
            geometry=self.text.geometry if self.text.has_geometry else None,
        )

    def line(self, event: str, level: str, message: str) -> LogLine:
        return LogLine(
            event,
            f"{self.where}: {message}",
            level=level,
            document_id=self.task.document_id,
            variable_id=self.task.variable_id,
        )


async def prepare(
    ctx: JobContext, inputs: TaskInputs, config: RunConfig, tasks: Sequence[ClaimedTask]
) -> tuple[list[PairWork], list[Outcome]]:
    """Load what each task asks about (from the process's cache) and its cache key. A task
    whose document was deleted meanwhile gets a failed outcome (its row is gone with the
    document, so storing it finds nothing to write)."""
    snapshot = config.snapshot
    works: list[PairWork] = []
    gone: list[Outcome] = []
    for task in tasks:
        variable = await inputs.prompt(ctx, task.prompt_version_id)
        try:
            text = await inputs.document(ctx, task.document_id, snapshot.max_document_chars)
        except DocumentGone:
            gone.append(Outcome(task, ExtractionStatus.FAILED, error="The document was deleted."))
            continue
        key = cache_key(
            snapshot,
            system_prompt=SYSTEM_PROMPT,
            document_sha256=text.sha256,
            variable_prompt=variable.prompt,
        )
        works.append(PairWork(task, variable.spec, variable.prompt, key, text))
    return works, gone


async def answer_from_cache(
    ctx: JobContext, config: RunConfig, works: Sequence[PairWork]
) -> tuple[list[Outcome], list[PairWork]]:
    """The outcomes the result cache gives (no call, no tokens), and the works left to ask.

    One query for the whole batch, and none at all when the project had no answers (every
    first run) or the run is `force_fresh`."""
    if config.snapshot.force_fresh or not config.has_answers or not works:
        return [], list(works)
    async with ctx.sessionmaker() as session:
        hits = await repository.cached_answers(session, config.project_id, [w.key for w in works])
    reused = [_reused(work, hits[work.key]) for work in works if work.key in hits]
    return reused, [work for work in works if work.key not in hits]


def _reused(work: PairWork, hit: Extraction) -> Outcome:
    values: dict[str, Any] = {column: getattr(hit, column) for column in ANSWER_COLUMNS}
    return Outcome(work.task, cached=True, cache_key=work.key, latency_ms=0, **values)


def outcome_of(work: PairWork, result: PairOutcome, events: Sequence[LogLine] = ()) -> Outcome:
    """The outcome to store for an extraction's result, with its log lines (re-asks,
    failure, excerpts sent)."""
    pages = work.pages or []
    lines = [
        *events,
        *(
            work.line(
                "task.reasked", "warning", f"the answer failed validation and was re-asked ({n})"
            )
            for n in result.reasked
        ),
    ]
    if result.status == ExtractionStatus.FAILED:
        lines.append(work.line("task.failed", "error", str(result.error)))
    if work.shrunk and result.attempts:
        lines.append(
            work.line(
                "task.context_exceeded",
                "warning",
                f"the prompt did not fit the model's context; {_pages_sent(pages)}, "
                "chosen for this variable.",
            )
        )
    elif work.text.chunked and result.attempts:
        lines.append(
            work.line(
                "task.chunked",
                "info",
                f"the document is longer than the context budget; {_pages_sent(pages)}, "
                "chosen for this variable.",
            )
        )
    return Outcome(
        work.task,
        result.status,
        value=result.value,
        raw_output=result.raw_output,
        evidence=result.evidence,
        page=result.page,
        char_start=result.char_start,
        char_end=result.char_end,
        grounded=result.grounded,
        grounding_method=result.grounding_method,
        grounding_score=result.grounding_score,
        support=result.support,
        confidence=result.confidence,
        boxes=result.boxes,
        ocr_confidence=result.ocr_confidence,
        attempts=result.attempts,
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        latency_ms=result.latency_ms,
        model=result.model,
        error=result.error,
        cache_key=work.key,
        pages_sent=pages if result.attempts else None,
        events=lines,
        prompt_chars=result.prompt_chars,
        prompt_messages=result.prompt_messages,
    )


def failure_of(
    ctx: JobContext,
    exc: BaseException,
    deadline: asyncio.Timeout,
    work: PairWork,
    limit: float | None = None,
) -> PairOutcome:
    """The result of an extraction that raised `exc` (called in the `except` block)."""
    if isinstance(exc, LLMCallError):  # e.g. misconfiguration discovered at call time
        error = exc.reason
    elif isinstance(exc, TimeoutError) and deadline.expired():
        seconds = ctx.settings.task_timeout if limit is None else limit
        error = f"The extraction did not finish within {seconds:g} s."
    else:
        log.exception("runs.task.crashed", extraction_id=str(work.task.id))
        error = f"Internal error: {type(exc).__name__}."
    return PairOutcome(status=ExtractionStatus.FAILED, error=error)


def task_timeout(ctx: JobContext, snapshot: RunSnapshot) -> float:
    """Seconds one unit of work may take: derived from the profile's call timeout."""
    return ctx.settings.task_timeout_for(snapshot.timeout_seconds)


def chat_model(ctx: JobContext, snapshot: RunSnapshot) -> ChatModel:
    """The chat model of the run's profile (the environment's unless the run named one)."""
    return ctx.llm.for_profile(snapshot.llm_profile(ctx.llm.default_profile()))


#: Profiles whose learned output mode this process has stored (a write per profile at most).
_STORED_MODES: dict[str, str] = {}


async def remember_mode(ctx: JobContext, snapshot: RunSnapshot, chat: ChatModel) -> None:
    """Store on the profile's row the output mode `auto` found to work, once per process,
    so later runs (and other workers) start with it."""
    if snapshot.profile_id is None or snapshot.output_mode != OutputMode.AUTO:
        return
    learned = ctx.llm.modes.get(snapshot.llm_profile(ctx.llm.default_profile()))
    if learned is None or _STORED_MODES.get(snapshot.profile_id) == learned:
        return
    _STORED_MODES[snapshot.profile_id] = learned
    if learned == snapshot.learned_mode:
        return
    try:
        async with job_write_scope(ctx.sessionmaker) as session:
            await profiles_repository.set_learned_mode(
                session, uuid.UUID(snapshot.profile_id), str(learned)
            )
    except Exception as exc:  # only a hint for later runs: never fail the task for it
        _STORED_MODES.pop(snapshot.profile_id, None)
        log.warning("runs.learned_mode_not_stored", error=repr(exc))


async def run_single(
    ctx: JobContext,
    config: RunConfig,
    work: PairWork,
    gate: TaskGate,
    chat: ChatModel | None = None,
) -> list[Outcome]:
    """Extract one pair, within the task's deadline (`chat`: another model than the run's,
    e.g. one whose first answer came in a provider batch: batches/replay.py)."""
    snapshot = config.snapshot
    inp = work.build_input(snapshot)
    # The deadline ends a task that runs too long failed, with a reason, instead of letting
    # its lease expire and the sweeper hand it out again forever.
    deadline = asyncio.timeout(task_timeout(ctx, snapshot))
    try:
        async with deadline:
            chat = chat or chat_model(ctx, snapshot)
            result = await extract_pair(chat, inp, gate)
            await remember_mode(ctx, snapshot, chat)
    except Exception as exc:
        result = failure_of(ctx, exc, deadline, work, task_timeout(ctx, snapshot))
    return [outcome_of(work, result)]


def _pages_sent(pages: list[int]) -> str:
    """[1] → "page 1 was sent"; [1, 2, 7] → "pages 1-2, 7 were sent"."""
    if len(pages) == 1:
        return f"page {pages[0]} was sent"
    return f"pages {_page_ranges(pages)} were sent"


def _page_ranges(pages: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] → "1-3, 7, 9-10"."""
    runs: list[list[int]] = []
    for page in pages:
        if runs and page == runs[-1][-1] + 1:
            runs[-1].append(page)
        else:
            runs.append([page])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


class TaskGate:
    """What the calls of a unit of work ask before each attempt (`llm.client.CallGate`):
    whether their run may still start calls, and, for a run with a budget, a reservation of
    the attempt's estimated cost, replaced by its real cost when it ends — held on `task`'s
    row until its outcome is stored (runs/lifecycle.py)."""

    def __init__(
        self, ctx: JobContext, inputs: TaskInputs, config: RunConfig, task: ClaimedTask
    ) -> None:
        self._ctx, self._inputs, self._config, self._task = ctx, inputs, config, task
        self._reserved: float | None = None

    async def check(self) -> str | None:
        return (await self._inputs.run_status(self._ctx, self._task.run_id)).stop_reason

    async def admit(self, prompt_tokens: int) -> str | None:
        run_id = self._task.run_id
        status = await self._inputs.run_status(self._ctx, run_id)
        if status.stop_reason is not None or status.budget_usd is None:
            return status.stop_reason
        price = self._config.snapshot.model_price  # this profile's: what the call costs
        whole = self._config.run_snapshot  # the run's: what its spending is counted at
        first = whole.model_price
        second = whole.second_profile.model_price if whole.second_profile else None
        if price is None or first is None:  # a budget is refused without a price (service)
            return None
        # The answer's length is guessed from this run's answers so far (in this process).
        tokens_out = self._inputs.output_guess(run_id, EXPECTED_OUTPUT_TOKENS)
        amount = cost_usd(price, prompt_tokens, tokens_out) or 0.0
        ctx = self._ctx
        async with job_write_scope(ctx.sessionmaker) as session:
            if await lifecycle.reserve_budget(
                session,
                self._task,
                ctx.worker_id,
                amount,
                first.input,
                first.output,
                (second.input, second.output) if second is not None else None,
            ):
                self._reserved = amount
                return None
            state = await repository.run_state(session, run_id)
            if state is None or state.stop_reason is not None or state.budget_usd is None:
                reason = state.stop_reason if state is not None else None
                return reason or lifecycle.CANCELLED_REASON
            reason = budget_reason(state.budget_usd)
            spent = spent_usd(whole, await repository.run_tokens(session, run_id)) or 0.0
            stopped = await lifecycle.stop_for_budget(
                session,
                run_id,
                reason,
                LogLine(
                    "run.budget_reached",
                    f"{reason} The run has cost {format_usd(spent)}; no new call starts (calls "
                    "in flight finish), and the extractions not yet started will not run.",
                    level="warning",
                    data={"budget_usd": state.budget_usd, "cost_usd": spent},
                ),
            )
        if stopped:
            log.info("runs.budget_reached", run_id=str(run_id), cost_usd=spent)
        self._inputs.forget_status(run_id)
        return reason

    async def settle(self, tokens_in: int, tokens_out: int) -> None:
        if tokens_out:
            self._inputs.record_output(self._task.run_id, tokens_out)
        if self._reserved is None:
            return
        price = self._config.snapshot.model_price
        cost = cost_usd(price, tokens_in, tokens_out) or 0.0
        change, self._reserved = cost - self._reserved, None
        async with job_write_scope(self._ctx.sessionmaker) as session:
            await lifecycle.settle_budget(session, self._task, self._ctx.worker_id, change)
