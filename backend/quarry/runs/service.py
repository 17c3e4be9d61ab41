"""Creating, reading, cancelling and retrying runs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.db import after_commit
from quarry.errors import BadRequest, Conflict, NotFound
from quarry.jobs import EXTRACT_PAIR, JobQueue
from quarry.llm.client import ChatModelFactory
from quarry.llm.pricing import ModelPrice, cost_usd, find_price, price_table
from quarry.models import (
    ACTIVE_RUN_STATUSES,
    Document,
    DocumentStatus,
    Extraction,
    ExtractionStatus,
    Project,
    PromptVersion,
    Run,
    RunStatus,
    User,
    Variable,
)
from quarry.models.base import utcnow
from quarry.runs import costs, estimate, repository
from quarry.runs.schemas import (
    RunCounts,
    RunCreate,
    RunEstimate,
    RunOut,
    RunRetry,
    VariableEstimate,
)
from quarry.settings import Settings
from quarry.variables.repository import latest_prompt_versions, list_variables

FINAL_STATUSES = ("succeeded", "not_found", "failed", "cancelled")


async def _select_documents(
    session: AsyncSession, project: Project, ids: Sequence[uuid.UUID] | None
) -> list[Document]:
    query = select(Document).where(Document.project_id == project.id)
    if ids is None:
        query = query.where(Document.status == DocumentStatus.READY)
    else:
        query = query.where(Document.id.in_(set(ids)))
    documents = list((await session.execute(query.order_by(Document.created_at))).scalars())
    if ids is not None:
        missing = set(ids) - {d.id for d in documents}
        if missing:
            raise NotFound(f"No such document in this project: {sorted(map(str, missing))[0]}.")
        not_ready = [d.filename for d in documents if d.status != DocumentStatus.READY]
        if not_ready:
            raise BadRequest(
                f"These documents are not ready for extraction: {', '.join(not_ready[:5])}."
            )
    if not documents:
        raise BadRequest("There are no ready documents to process; upload documents first.")
    return documents


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


def _temperature(settings: Settings, project: Project) -> float:
    if project.llm_temperature is not None:
        return project.llm_temperature
    return settings.llm_temperature


def _model_price(settings: Settings, model: str, budget_usd: float | None) -> ModelPrice | None:
    """The model's price now; a budget cannot be kept without one."""
    price = find_price(price_table(settings.llm_prices), model)
    if price is None and budget_usd is not None:
        raise BadRequest(
            f"A budget needs the model's price, and the price of {model} is unknown; "
            "set it in QUARRY_LLM_PRICES (USD per million input and output tokens)."
        )
    return price


async def _select_pairs(
    session: AsyncSession, settings: Settings, project: Project, data: RunCreate
) -> tuple[list[Document], list[Variable], dict[uuid.UUID, PromptVersion], str, ModelPrice | None]:
    """What a run of `data` would extract, with which model at which price — checked the
    same way for a real run and for an estimate."""
    documents = await _select_documents(session, project, data.document_ids)
    variables = await _select_variables(session, project, data.variable_ids)
    versions = await latest_prompt_versions(session, [v.id for v in variables])
    model = project.llm_model or settings.llm_model
    return documents, variables, versions, model, _model_price(settings, model, data.budget_usd)


async def estimate_run(
    session: AsyncSession, settings: Settings, project: Project, data: RunCreate
) -> RunEstimate:
    """Tokens and cost a run of `data` would take, creating nothing (see `RunEstimate`).

    No LLM needs to be configured: an estimate helps decide whether to set one up."""
    documents, variables, versions, model, price = await _select_pairs(
        session, settings, project, data
    )
    result = await estimate.estimate_run(
        session,
        project.id,
        [estimate.DocumentRef(d.id, d.sha256) for d in documents],
        [
            estimate.VariableRef(v.id, v.name, versions[v.id].spec, versions[v.id].prompt)
            for v in variables
        ],
        estimate.CallSettings(
            model=model,
            temperature=_temperature(settings, project),
            max_document_chars=settings.llm_max_document_chars,
            group_size=project.group_size,
            force_fresh=data.force_fresh,
        ),
        price,
    )
    return RunEstimate(
        pairs=result.pairs,
        documents=result.documents,
        variables=len(result.variables),
        calls=result.calls,
        cached_pairs=result.cached_pairs,
        model=model,
        estimated_input_tokens=result.input_tokens,
        estimated_output_tokens=result.output_tokens,
        estimated_cost_usd=result.cost_usd(price),
        long_documents=result.long_documents,
        budget_usd=data.budget_usd,
        per_variable=[
            VariableEstimate(
                variable_id=v.variable_id,
                name=v.name,
                cached_pairs=v.cached_pairs,
                estimated_input_tokens=v.input_tokens,
                estimated_output_tokens=v.output_tokens,
                estimated_cost_usd=v.cost_usd,
            )
            for v in result.variables
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
    """Create a run and one task row per (document, variable) in this transaction.

    The jobs are enqueued only after the commit, so no worker ever sees a task that a
    rollback then removes.
    """
    llm.ensure_configured()
    documents, variables, versions, model, price = await _select_pairs(
        session, settings, project, data
    )
    run = Run(
        project_id=project.id,
        created_by=user.id,
        status=RunStatus.QUEUED,
        model=model,
        settings={
            "temperature": _temperature(settings, project),
            "repair_attempts": settings.llm_repair_attempts,
            "max_document_chars": settings.llm_max_document_chars,
            "grounding_fuzzy_threshold": settings.grounding_fuzzy_threshold,
            "force_fresh": data.force_fresh,
            "group_size": project.group_size,
            costs.BUDGET_KEY: data.budget_usd,
            # Frozen like the rest: the run's cost does not change when the table does.
            costs.PRICE_KEY: price.to_json() if price else None,
        },
    )
    session.add(run)
    await session.flush()
    tasks = [
        Extraction(
            id=uuid.uuid4(),
            run_id=run.id,
            document_id=document.id,
            variable_id=variable.id,
            prompt_version_id=versions[variable.id].id,
            status=ExtractionStatus.PENDING,
        )
        for document in documents
        for variable in variables
    ]
    session.add_all(tasks)
    repository.add_event(
        session,
        run.id,
        "run.created",
        f"Run created: {len(documents)} documents × {len(variables)} variables = "
        f"{len(tasks)} extractions with {run.model}.",
    )
    await session.flush()
    task_ids = [str(t.id) for t in tasks]
    after_commit(session, lambda: queue.enqueue(EXTRACT_PAIR, task_ids))
    return run


async def get_run(session: AsyncSession, project: Project, run_id: uuid.UUID) -> Run:
    run = await repository.get_run(session, project.id, run_id)
    if run is None:
        raise NotFound("No such run.")
    return run


async def to_out(session: AsyncSession, settings: Settings, runs: Sequence[Run]) -> list[RunOut]:
    totals = await repository.run_totals(session, [r.id for r in runs])
    out = []
    for run in runs:
        c = totals[run.id].counts
        price = costs.run_price(settings, run.model, run.settings)
        total = sum(c.values())
        done = sum(c.get(s, 0) for s in FINAL_STATUSES)
        out.append(
            RunOut(
                id=run.id,
                project_id=run.project_id,
                status=RunStatus(run.status),
                model=run.model,
                settings=run.settings,
                total=total,
                done=done,
                progress=round(done / total, 4) if total else 1.0,
                counts=RunCounts(**c),
                tokens_in=totals[run.id].tokens_in,
                tokens_out=totals[run.id].tokens_out,
                cost_usd=cost_usd(price, totals[run.id].tokens_in, totals[run.id].tokens_out),
                budget_usd=costs.budget_of(run.settings),
                error=run.error,
                created_at=run.created_at,
                started_at=run.started_at,
                finished_at=run.finished_at,
            )
        )
    return out


async def cancel_run(session: AsyncSession, run: Run) -> Run:
    """Stop the run: no new LLM call starts; calls in flight finish and are kept."""
    if run.status not in ACTIVE_RUN_STATUSES:
        raise Conflict(
            f"The run is already {run.status}; only queued or running runs can be cancelled."
        )
    run.status = RunStatus.CANCELLED
    run.finished_at = utcnow()
    cancelled = await repository.cancel_pending(session, run.id)
    repository.add_event(
        session,
        run.id,
        "run.cancelled",
        f"The run was cancelled; {cancelled} extractions will not run.",
    )
    await session.flush()
    return run


async def retry_run(
    session: AsyncSession,
    settings: Settings,
    queue: JobQueue,
    llm: ChatModelFactory,
    run: Run,
    data: RunRetry,
) -> Run:
    """Queue the run's failed and cancelled tasks again (and only those), with a new budget
    if `data` sets one."""
    llm.ensure_configured()
    if "budget_usd" in data.model_fields_set:
        if costs.run_price(settings, run.model, run.settings) is None:
            _model_price(settings, run.model, data.budget_usd)  # no price: refuse a budget
        run.settings = {**run.settings, costs.BUDGET_KEY: data.budget_usd}
    budget = costs.budget_of(run.settings)
    if budget is not None:
        spent = cost_usd(
            costs.run_price(settings, run.model, run.settings),
            *await costs.run_tokens(session, run.id),
        )
        if spent is not None and spent >= budget:
            raise Conflict(
                f"{costs.budget_reason(budget)} Retry with a higher budget_usd "
                "(or null for none) to go on."
            )
    ids = await repository.reset_for_retry(session, run.id)
    if not ids:
        raise Conflict("The run has no failed or cancelled extractions to retry.")
    run.status = RunStatus.RUNNING if run.started_at else RunStatus.QUEUED
    run.finished_at = None
    run.error = None
    repository.add_event(session, run.id, "run.retried", f"Retrying {len(ids)} extractions.")
    await session.flush()
    task_ids = [str(i) for i in ids]
    after_commit(session, lambda: queue.enqueue(EXTRACT_PAIR, task_ids))
    return run
