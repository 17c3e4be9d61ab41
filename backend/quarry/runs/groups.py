"""Grouping: several variables of one document asked in one LLM call (a run's `group_size`).

A run still has one task row per (document, variable). Tasks are claimed in batches in the
run's order — document by document, each document's variables in codebook order — so the
batch itself gives the groups: `plan_units` cuts each document's claimed tasks (less those
the result cache answered) into groups of up to `group_size`; a group of one is a single
call. One grouped call is made per group; each variable's part is checked exactly as a single
answer is (its type, "not stated", grounding); the variables whose part is missing, malformed
or invalid are then asked on their own — single calls, side by side, with the usual re-asks,
still within the group's deadline.

Not grouped: documents longer than the context budget — each variable is shown the excerpts
chosen for it, so there is no shared text to ask about.

Tokens: the grouped call's are split evenly across its variables (the remainder to the first),
so a run's totals stay exact; a variable that fell back adds its single calls' tokens. A
grouped answer used counts as one attempt. A batch boundary can cut a document's variables in
two: the two parts are then asked in two smaller groups (the estimate cannot foresee that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from quarry.jobs import JobContext
from quarry.llm.client import ChatModel
from quarry.runs.engine import GroupInput, PairInput, PairOutcome, extract_group, extract_pair
from quarry.runs.inputs import RunConfig
from quarry.runs.lifecycle import Outcome
from quarry.runs.snapshot import RunSnapshot
from quarry.runs.tasks import (
    PairWork,
    TaskGate,
    chat_model,
    failure_of,
    outcome_of,
    remember_mode,
    task_timeout,
)

log = structlog.get_logger(__name__)


def plan_units(snapshot: RunSnapshot, works: Sequence[PairWork]) -> list[list[PairWork]]:
    """The calls to make for `works` (in claim order): groups of a document's variables when
    the run groups them, single pairs otherwise."""
    size = snapshot.group_size
    if size <= 1:
        return [[work] for work in works]
    units: list[list[PairWork]] = []
    current: list[PairWork] = []
    for work in works:
        if work.text.chunked:
            units.append([work])
            continue
        if current and (
            current[0].task.document_id != work.task.document_id or len(current) == size
        ):
            units.append(current)
            current = []
        current.append(work)
    if current:
        units.append(current)
    return units


async def run_group(
    ctx: JobContext,
    config: RunConfig,
    works: Sequence[PairWork],
    gate: TaskGate,
    chat: ChatModel | None = None,
) -> list[Outcome]:
    """Extract a document's variables together; an outcome for each (`chat`: as
    `run_single`'s)."""
    snapshot = config.snapshot
    pairs = [work.build_input(snapshot) for work in works]
    outcomes: dict[int, Outcome] = {}
    grouped: dict[int, PairOutcome] = {}  # each variable's part of the grouped call
    deadline = asyncio.timeout(task_timeout(ctx, snapshot))

    async def ask_alone(model: ChatModel, n: int, inp: PairInput, reason: str) -> None:
        work = works[n]
        try:
            result = await extract_pair(model, inp, gate)
        except Exception as exc:  # this variable's failure; the others go on
            result = failure_of(ctx, exc, deadline, work, task_timeout(ctx, snapshot))
        note = (
            f"its part of the grouped answer could not be used ({reason}); it was asked on its own."
        )
        result = _with_cost_of(grouped.get(n), result)
        outcomes[n] = outcome_of(work, result, [work.line("task.group_fallback", "warning", note)])

    try:
        async with deadline:
            model = chat or chat_model(ctx, snapshot)
            group = GroupInput(names=[work.name for work in works], pairs=pairs)
            answers = await extract_group(model, group, gate)
            fallbacks = []
            for n, answer in enumerate(answers):
                if answer.fallback is None:
                    outcomes[n] = outcome_of(works[n], answer.outcome)
                else:
                    grouped[n] = answer.outcome
                    fallbacks.append((n, answer.fallback))
            if fallbacks:
                log.info(
                    "runs.group.fallback",
                    run_id=str(works[0].task.run_id),
                    variables=len(fallbacks),
                    group=len(works),
                )
                async with asyncio.TaskGroup() as calls:  # side by side, within the deadline
                    for n, reason in fallbacks:
                        calls.create_task(ask_alone(model, n, pairs[n], reason))
            await remember_mode(ctx, snapshot, model)
    except Exception as exc:
        failure = failure_of(ctx, exc, deadline, works[0], task_timeout(ctx, snapshot))
        for n, work in enumerate(works):
            if n not in outcomes:
                result = PairOutcome(status=failure.status, error=failure.error)
                outcomes[n] = outcome_of(work, _with_cost_of(grouped.get(n), result))
    return [outcomes[n] for n in range(len(works))]


def _with_cost_of(grouped: PairOutcome | None, outcome: PairOutcome) -> PairOutcome:
    """`outcome` (of a variable asked alone) plus its share of the grouped call before it."""
    if grouped is not None:
        outcome.attempts += grouped.attempts
        outcome.tokens_in += grouped.tokens_in
        outcome.tokens_out += grouped.tokens_out
        outcome.prompt_chars += grouped.prompt_chars
        outcome.prompt_messages += grouped.prompt_messages
        outcome.latency_ms += grouped.latency_ms
        outcome.model = outcome.model or grouped.model
    return outcome
