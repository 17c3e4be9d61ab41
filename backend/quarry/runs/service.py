"""Creating, reading, cancelling and retrying runs (the transitions: runs/lifecycle.py)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.batches import repository as batches_repository
from quarry.batches.repository import BatchSummary
from quarry.db import after_commit
from quarry.errors import BadRequest, Conflict, NotFound
from quarry.jobs import POLL_BATCH, PREPARE_RUN, WORK_ON_RUN, JobQueue
from quarry.llm.client import DEFAULT_TOKENS_PER_CHAR, ChatModelFactory
from quarry.llm.pricing import ModelPrice, cost_usd, find_price, price_table
from quarry.models import (
    FINAL_RUN_STATUSES,
    Agreement,
    ModelProfileRow,
    Project,
    PromptVersion,
    Run,
    RunEvent,
    RunStatus,
    User,
    Variable,
)
from quarry.profiles import service as profiles
from quarry.runs import estimate, lifecycle, repository
from quarry.runs.context import CallPart, document_budget_chars
from quarry.runs.costs import budget_reason, run_cost, run_price
from quarry.runs.lifecycle import LogLine
from quarry.runs.schemas import (
    AgreementCounts,
    RunAgreement,
    RunBatchProgress,
    RunCounts,
    RunCreate,
    RunEstimate,
    RunFailure,
    RunOut,
    RunProfileCost,
    RunRetry,
    VariableAgreement,
    VariableEstimate,
)
from quarry.runs.snapshot import ENGINE_VERSION, FrozenPrice, RunSnapshot
from quarry.runs.wording import counted, next_step
from quarry.settings import Settings
from quarry.variables.repository import list_variables
from quarry.variables.service import current_prompt_versions


@dataclass(frozen=True)
class _Plan:
    """What a run of a request would be over, and what it would freeze."""

    documents: int
    variables: list[Variable]
    versions: dict[uuid.UUID, PromptVersion]
    snapshot: RunSnapshot


async def _count_documents(
    session: AsyncSession, project: Project, ids: Sequence[uuid.UUID] | None
) -> int:
    if ids is None:
        count = await repository.count_ready_documents(session, project.id)
    else:
        choice = await repository.check_documents(session, project.id, ids)
        if choice.missing:
            raise NotFound(f"No such document in this project: {choice.missing[0]}.")
        if choice.not_ready:
            raise BadRequest(
                f"These documents are not ready for extraction: {', '.join(choice.not_ready[:5])}."
            )
        count = choice.ready
    if not count:
        raise BadRequest("There are no ready documents to process; upload documents first.")
    return count


async def _select_variables(
    session: AsyncSession, project: Project, ids: Sequence[uuid.UUID] | None
) -> list[Variable]:
    variables = list(await list_variables(session, project.id))
    if ids is not None:
        wanted = set(ids)
        missing = wanted - {v.id for v in variables}
        if missing:
            raise NotFound(f"No such variable in this project: {sorted(map(str, missing))[0]}.")
        variables = [v for v in variables if v.id in wanted]
    if not variables:
        raise BadRequest("The project has no variables to extract; define the codebook first.")
    return variables


def _model_price(settings: Settings, model: str, budget_usd: float | None) -> ModelPrice | None:
    """The model's price now; a budget cannot be kept without one."""
    price = find_price(price_table(settings.llm_prices), model)
    if price is None and budget_usd is not None:
        raise BadRequest(
            f"A budget needs the model's price, and the price of {model} is unknown; "
            "set it in QUARRY_LLM_PRICES (USD per million input and output tokens)."
        )
    return price


def _profile_fields(
    settings: Settings, project: Project, row: ModelProfileRow | None
) -> dict[str, Any]:
    """The snapshot's model-profile fields: the named profile's, or the environment's."""
    if row is None:
        return {
            "model": project.llm_model or settings.llm_model,
            "temperature": (
                project.llm_temperature
                if project.llm_temperature is not None
                else settings.llm_temperature
            ),
            "context_window": settings.llm_context_window,
            "max_output_tokens": settings.llm_max_output_tokens,
            "output_mode": settings.llm_output_mode,
        }
    return {
        "model": row.model,
        "temperature": row.temperature,
        "profile_id": str(row.id),
        "profile_name": row.name,
        "provider": row.provider,
        "base_url": row.base_url,
        "api_key_env": row.api_key_env,
        "context_window": row.context_window,
        "max_output_tokens": row.max_output_tokens,
        "output_mode": row.output_mode,
        "learned_mode": row.learned_mode,
        "concurrency": row.concurrency,
        "rpm": row.rpm,
        "tpm": row.tpm,
        "timeout_seconds": row.timeout_seconds,
        "batch": row.batch,
        "batch_discount": row.batch_discount if row.batch else 0.0,
    }


async def _profile_rows(
    session: AsyncSession, project: Project, data: RunCreate
) -> list[ModelProfileRow | None]:
    """The profiles the run asks, first first: the one it names (None: the environment's),
    or the two of a two-profile run — checked here, with a sentence for each refusal."""
    if data.profiles is None:
        if data.profile is None:
            return [None]
        return [await profiles.find_profile(session, project, data.profile)]
    if data.profile is not None:
        raise BadRequest(
            "Name the run's profile with either `profile` (one) or `profiles` (two), not both."
        )
    if len(data.profiles) != 2:
        raise BadRequest(
            f"A two-profile run names exactly two profiles in `profiles`; {len(data.profiles)} "
            "were given."
        )
    rows = [await profiles.find_profile(session, project, ref) for ref in data.profiles]
    if rows[0].id == rows[1].id:
        raise BadRequest(
            f"The two profiles of a two-profile run must differ; both name '{rows[0].name}'."
        )
    for row in rows:
        if row.batch:
            raise BadRequest(
                f"The model profile '{row.name}' submits its calls as provider batches; a "
                "two-profile run asks both profiles live, so that their answers are compared as "
                "they come. Use a profile without batch mode."
            )
    return list(rows)


async def _snapshot(
    session: AsyncSession,
    settings: Settings,
    project: Project,
    data: RunCreate,
    variables: Sequence[Variable],
    versions: Mapping[uuid.UUID, PromptVersion],
    row: ModelProfileRow | None,
) -> RunSnapshot:
    """What a run of `data` freezes for one profile (`row`; None: the environment's)."""
    fields = _profile_fields(settings, project, row)
    if row is not None and row.batch and data.budget_usd is not None:
        raise BadRequest(
            f"The model profile '{row.name}' submits its calls as provider batches, and a "
            "budget cannot be held over a batch (the provider answers and bills it as a whole). "
            "Leave budget_usd out, or use a profile without batch mode."
        )
    model = str(fields["model"])
    if row is not None and row.price_input is not None and row.price_output is not None:
        price: ModelPrice | None = ModelPrice(input=row.price_input, output=row.price_output)
    else:
        price = _model_price(settings, model, data.budget_usd)
    group_size = max(project.group_size, 1)
    key = f"profile:{row.id}" if row is not None else f"env:{model}"
    tokens_per_char = await estimate.observed_tokens_per_char(session, key)
    budget = document_budget_chars(
        [CallPart(v.name, versions[v.id].prompt, versions[v.id].spec) for v in variables],
        group_size=group_size,
        context_window=int(fields["context_window"]),
        max_output_tokens=int(fields["max_output_tokens"]),
        tokens_per_char=tokens_per_char or DEFAULT_TOKENS_PER_CHAR,
        cap=settings.llm_max_document_chars,
    )
    return RunSnapshot(
        engine_version=ENGINE_VERSION,
        max_document_chars=budget,
        grounding_fuzzy_threshold=settings.grounding_fuzzy_threshold,
        group_size=group_size,
        repair_attempts=settings.llm_repair_attempts,
        force_fresh=data.force_fresh,
        price=FrozenPrice(input=price.input, output=price.output) if price else None,
        tokens_per_char=tokens_per_char,
        **fields,
    )


async def _plan(
    session: AsyncSession, settings: Settings, project: Project, data: RunCreate
) -> _Plan:
    """What a run of `data` would extract and freeze — checked the same way for a real run
    and for an estimate."""
    documents = await _count_documents(session, project, data.document_ids)
    variables = await _select_variables(session, project, data.variable_ids)
    versions = await current_prompt_versions(session, variables)
    rows = await _profile_rows(session, project, data)
    snapshots = [
        await _snapshot(session, settings, project, data, variables, versions, row) for row in rows
    ]
    snapshot = snapshots[0]
    if len(snapshots) == 2:
        second = snapshots[1]
        if second.answer_fingerprint() == snapshot.answer_fingerprint():
            names = " and ".join(f"'{row.name}'" for row in rows if row is not None)
            raise BadRequest(
                f"The profiles {names} ask the same model the same way, so their answers "
                "would be the same; compare profiles that differ in model, server or settings."
            )
        snapshot = snapshot.model_copy(update={"second_profile": second})
    return _Plan(documents, variables, versions, snapshot)


def _add_costs(costs: Sequence[float | None]) -> float | None:
    """A sum of costs, unknown when any is."""
    if any(cost is None for cost in costs):
        return None
    return round(sum(cost for cost in costs if cost is not None), 8)


async def estimate_run(
    session: AsyncSession, settings: Settings, project: Project, data: RunCreate
) -> RunEstimate:
    """Tokens and cost a run of `data` would take, creating nothing (see `RunEstimate`).

    No LLM needs to be configured: an estimate helps decide whether to set one up. A
    two-profile run is estimated per profile (each at its own price and tokenizer rate, with
    its own cached answers) and the two added up."""
    plan = await _plan(session, settings, project, data)
    refs = [
        estimate.VariableRef(v.id, v.name, plan.versions[v.id].spec, plan.versions[v.id].prompt)
        for v in plan.variables
    ]
    snapshots = [plan.snapshot.for_slot(slot) for slot in range(plan.snapshot.profile_count)]
    results = [
        await estimate.estimate_run(session, project.id, data.document_ids, refs, snapshot)
        for snapshot in snapshots
    ]
    costs = [
        result.cost_usd(snapshot.batch_price if snapshot.batch else snapshot.model_price)
        for result, snapshot in zip(results, snapshots, strict=True)
    ]
    first, snapshot = results[0], plan.snapshot
    return RunEstimate(
        pairs=first.pairs,
        documents=first.documents,
        variables=len(first.variables),
        calls=sum(r.calls for r in results),
        cached_pairs=sum(r.cached_pairs for r in results),
        model=snapshot.model,
        estimated_input_tokens=sum(r.input_tokens for r in results),
        estimated_output_tokens=sum(r.output_tokens for r in results),
        estimated_cost_usd=_add_costs(costs),
        long_documents=first.long_documents,
        batch_discount=snapshot.batch_discount if snapshot.batch else None,
        budget_usd=data.budget_usd,
        per_variable=[
            VariableEstimate(
                variable_id=shares[0].variable_id,
                name=shares[0].name,
                cached_pairs=sum(v.cached_pairs for v in shares),
                estimated_input_tokens=sum(v.input_tokens for v in shares),
                estimated_output_tokens=sum(v.output_tokens for v in shares),
                estimated_cost_usd=_add_costs([v.cost_usd for v in shares]),
            )
            for shares in zip(*(r.variables for r in results), strict=True)
        ],
    )


async def create_run(
    session: AsyncSession,
    settings: Settings,
    llm: ChatModelFactory,
    queue: JobQueue,
    project: Project,
    user: User,
    data: RunCreate,
) -> Run:
    """Create a run, its plan and its first task rows in this transaction (set-based SQL:
    no object per pair), the rest by `runs.prepare` when the run is large.

    Its wake-ups are enqueued only after the commit, so no worker looks for a run that a
    rollback then removes."""
    if data.profile is None:
        llm.ensure_configured()
    plan = await _plan(session, settings, project, data)
    for slot in range(plan.snapshot.profile_count):
        llm.ensure_configured(plan.snapshot.for_slot(slot).llm_profile(llm.default_profile()))
    run = Run(
        project_id=project.id,
        created_by=user.id,
        model=plan.snapshot.model,
        settings=plan.snapshot.to_row(),
        budget_usd=data.budget_usd,
    )
    planned = await lifecycle.create_run(
        session,
        run,
        project_id=project.id,
        document_ids=data.document_ids,
        variables=[(v.id, plan.versions[v.id].id) for v in plan.variables],
        profile_count=plan.snapshot.profile_count,
    )
    run = planned.run
    second = plan.snapshot.second_profile
    if second is None:
        asked = f"with {run.model}"
    else:
        asked = (
            f"of {plan.snapshot.profile_label} ({run.model}) and {second.profile_label} "
            f"({second.model}), compared"
        )
    await lifecycle.log_events(
        session,
        run.id,
        [
            LogLine(
                "run.created",
                f"Run created: {counted(run.document_count, 'document')} × "
                f"{counted(run.variable_count, 'variable')} = "
                f"{counted(run.task_count, 'extraction')} {asked}.",
            )
        ],
    )
    run_id = str(run.id)

    async def wake() -> None:
        if not planned.prepared:
            await queue.enqueue(PREPARE_RUN, [run_id])
        await queue.enqueue(WORK_ON_RUN, [run_id])

    after_commit(session, wake)
    return run


async def get_run(session: AsyncSession, project: Project, run_id: uuid.UUID) -> Run:
    run = await repository.get_run(session, project.id, run_id)
    if run is None:
        raise NotFound("No such run.")
    return run


async def list_runs(
    session: AsyncSession, project: Project, limit: int, offset: int
) -> tuple[Sequence[Run], int]:
    return await repository.list_runs(session, project.id, limit, offset)


async def read_log(
    session: AsyncSession, run: Run, after_id: int, limit: int
) -> tuple[Sequence[RunEvent], int]:
    """The run's log lines after `after_id`, oldest first, and how many it has in all."""
    events = await repository.list_events(session, run.id, after_id, limit)
    return events, await repository.count_events(session, run.id)


def run_counts(run: Run) -> RunCounts:
    """The run's tasks by status as a user reads them: pairs without a row yet are pending,
    and once a run is over or stopped, what will never start counts as cancelled."""
    counts = RunCounts(
        pending=run.pending_count + run.unprepared_count,
        running=run.running_count,
        succeeded=run.succeeded_count,
        not_found=run.not_found_count,
        failed=run.failed_count,
        cancelled=run.cancelled_count,
    )
    if run.status in FINAL_RUN_STATUSES or run.stop_reason is not None:
        counts.cancelled += counts.pending
        counts.pending = 0
    return counts


async def runs_out(
    session: AsyncSession, settings: Settings, runs: Sequence[Run], *, detail: bool = False
) -> list[RunOut]:
    """`to_out`, with the provider batches of the batch runs among `runs` (one query), and
    with `detail` (one run's page) each run's failures by reason and, for a two-profile run,
    its agreement per variable (a query or two each)."""
    batch_runs = [run.id for run in runs if (run.settings or {}).get("batch")]
    out = to_out(settings, runs, await batches_repository.summaries(session, batch_runs))
    if detail:
        for run, shown in zip(runs, out, strict=True):
            shown.failures = (
                [
                    RunFailure(reason=reason, count=n, next_step=next_step(reason))
                    for reason, n in await repository.failure_reasons(session, run.id)
                ]
                if run.failed_count
                else []
            )
            if run.profile_count == 2:
                shown.agreement = await run_agreement(session, run)
    return out


_VERDICTS = (Agreement.AGREE, Agreement.DISAGREE, Agreement.ONE_MISSING)


def _counts(agreed: int, disagreed: int, one_missing: int) -> dict[str, int | float | None]:
    compared = agreed + disagreed
    return {
        "compared": compared,
        "agreed": agreed,
        "disagreed": disagreed,
        "one_missing": one_missing,
        "rate": round(agreed / compared, 4) if compared else None,
    }


async def run_agreement(session: AsyncSession, run: Run) -> RunAgreement:
    """How a two-profile run's profiles agreed, per variable (in the run's order) and over
    all: counted by the database from the verdicts stored on the pairs' rows."""
    snapshot = RunSnapshot.from_row(run.settings, run.model)
    counts = await repository.agreement_counts(session, run.id)
    per_variable: list[VariableAgreement] = []
    totals = [0, 0, 0]
    for variable_id, name in await repository.run_variable_names(session, run.id):
        found = counts.get(variable_id, {})
        row = [found.get(a, 0) for a in _VERDICTS]
        totals = [t + n for t, n in zip(totals, row, strict=True)]
        per_variable.append(VariableAgreement(variable_id=variable_id, name=name, **_counts(*row)))
    return RunAgreement(
        profiles=[snapshot.for_slot(slot).profile_label for slot in range(2)],
        overall=AgreementCounts(**_counts(*totals)),
        per_variable=per_variable,
    )


def _profile_costs(settings: Settings, run: Run, snapshot: RunSnapshot) -> list[RunProfileCost]:
    """A two-profile run's tokens and cost per profile: the second's are counted on the
    run row apart (`second_tokens_*`), the first's are the rest."""
    tokens = [
        (run.tokens_in - run.second_tokens_in, run.tokens_out - run.second_tokens_out),
        (run.second_tokens_in, run.second_tokens_out),
    ]
    out = []
    for slot, (tokens_in, tokens_out) in enumerate(tokens):
        frozen = snapshot.for_slot(slot)
        out.append(
            RunProfileCost(
                profile=frozen.profile_label,
                model=frozen.model,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost_usd=cost_usd(run_price(settings, frozen), tokens_in, tokens_out),
            )
        )
    return out


def to_out(
    settings: Settings,
    runs: Sequence[Run],
    batches: Mapping[uuid.UUID, BatchSummary] | None = None,
) -> list[RunOut]:
    """The runs as the API shows them: one row each, whatever their size (`batches`: the
    provider batches of batch runs, `batches/repository.py` `summaries`)."""
    out = []
    for run in runs:
        snapshot = RunSnapshot.from_row(run.settings, run.model)
        summary = (batches or {}).get(run.id)
        counts = run_counts(run)
        total = run.task_count
        done = counts.succeeded + counts.not_found + counts.failed + counts.cancelled
        per_profile = _profile_costs(settings, run, snapshot) if snapshot.second_profile else None
        if per_profile is not None:
            cost = _add_costs([p.cost_usd for p in per_profile])
        else:
            cost = run_cost(
                run_price(settings, snapshot),
                run.tokens_in,
                run.tokens_out,
                batch_tokens_in=summary.tokens_in if summary else 0,
                batch_tokens_out=summary.tokens_out if summary else 0,
                batch_discount=snapshot.batch_discount,
            )
        out.append(
            RunOut(
                id=run.id,
                project_id=run.project_id,
                status=RunStatus(run.status),
                model=run.model,
                settings=snapshot.to_row(),
                total=total,
                done=done,
                progress=round(done / total, 4) if total else 1.0,
                counts=counts,
                tokens_in=run.tokens_in,
                tokens_out=run.tokens_out,
                cost_usd=cost,
                profiles=per_profile,
                batch=(
                    RunBatchProgress(
                        batches=summary.batches,
                        open=summary.open,
                        status=summary.status,
                        requests=summary.requests,
                        answered=summary.completed + summary.failed,
                        failed=summary.failed,
                        discount=snapshot.batch_discount,
                    )
                    if summary is not None
                    else None
                ),
                budget_usd=run.budget_usd,
                budget_reached=run.stop_reason is not None,
                error=run.error or run.stop_reason,
                created_at=run.created_at,
                started_at=run.started_at,
                finished_at=run.finished_at,
            )
        )
    return out


async def cancel_run(session: AsyncSession, queue: JobQueue, run: Run) -> Run:
    """Stop the run: no new LLM call starts; calls in flight finish and are kept."""
    cancelled = await lifecycle.cancel_run(
        session,
        run.id,
        LogLine(
            "run.cancelled",
            "The run was cancelled; the extractions not yet started will not run.",
        ),
    )
    if not cancelled:
        raise Conflict(
            f"The run is already {run.status}; only preparing, queued or running runs can be "
            "cancelled."
        )
    open_batches = [str(b) for b in await batches_repository.open_batches(session, run.id)]
    if open_batches:
        # Their pollers cancel them at the provider now rather than at their next poll.
        async def poke() -> None:
            await queue.enqueue(POLL_BATCH, open_batches)

        after_commit(session, poke)
    await session.refresh(run)
    return run


async def retry_run(
    session: AsyncSession,
    settings: Settings,
    queue: JobQueue,
    llm: ChatModelFactory,
    run: Run,
    data: RunRetry,
) -> Run:
    """Run again the run's failed and cancelled tasks, and those it never started (and only
    those), with a new budget if `data` sets one."""
    snapshot = RunSnapshot.from_row(run.settings, run.model)
    for slot in range(snapshot.profile_count):
        llm.ensure_configured(snapshot.for_slot(slot).llm_profile(llm.default_profile()))
    set_budget = "budget_usd" in data.model_fields_set
    budget = data.budget_usd if set_budget else run.budget_usd
    if snapshot.batch and set_budget and budget is not None:
        raise BadRequest(
            "The run submits its calls as provider batches, and a budget cannot be held over "
            "a batch; retry without budget_usd."
        )
    for slot in range(snapshot.profile_count):
        frozen = snapshot.for_slot(slot)
        if set_budget and budget is not None and run_price(settings, frozen) is None:
            _model_price(settings, frozen.model, budget)  # no price: refuse a budget
    if budget is not None:
        if snapshot.second_profile is not None:
            spent = _add_costs([p.cost_usd for p in _profile_costs(settings, run, snapshot)])
        else:
            spent = cost_usd(run_price(settings, snapshot), run.tokens_in, run.tokens_out)
        stopped_by_it = not set_budget and run.stop_reason == budget_reason(budget)
        if stopped_by_it or (spent is not None and spent >= budget):
            raise Conflict(
                f"{budget_reason(budget)} Retry with a higher budget_usd (or null for none) "
                "to go on."
            )
    result = await lifecycle.retry_run(session, run.id, budget, set_budget=set_budget)
    if not result.pairs:
        raise Conflict("The run has no failed or cancelled extractions to retry.")
    run_id = str(run.id)

    async def wake() -> None:
        if result.preparing:
            await queue.enqueue(PREPARE_RUN, [run_id])
        await queue.enqueue(WORK_ON_RUN, [run_id])

    after_commit(session, wake)
    await session.refresh(run)
    return run
