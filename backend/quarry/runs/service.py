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
from quarry.models import (
    ACTIVE_RUN_STATUSES,
    Document,
    DocumentStatus,
    Extraction,
    ExtractionStatus,
    Project,
    Run,
    RunStatus,
    User,
    Variable,
)
from quarry.models.base import utcnow
from quarry.runs import repository
from quarry.runs.schemas import RunCounts, RunCreate, RunOut
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
    documents = await _select_documents(session, project, data.document_ids)
    variables = await _select_variables(session, project, data.variable_ids)
    versions = await latest_prompt_versions(session, [v.id for v in variables])
    run = Run(
        project_id=project.id,
        created_by=user.id,
        status=RunStatus.QUEUED,
        model=project.llm_model or settings.llm_model,
        settings={
            "temperature": (
                project.llm_temperature
                if project.llm_temperature is not None
                else settings.llm_temperature
            ),
            "repair_attempts": settings.llm_repair_attempts,
            "max_document_chars": settings.llm_max_document_chars,
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


async def to_out(session: AsyncSession, runs: Sequence[Run]) -> list[RunOut]:
    totals = await repository.run_totals(session, [r.id for r in runs])
    out = []
    for run in runs:
        c = totals[run.id].counts
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


async def retry_run(session: AsyncSession, queue: JobQueue, llm: ChatModelFactory, run: Run) -> Run:
    """Queue the run's failed and cancelled tasks again (and only those)."""
    llm.ensure_configured()
    ids = await repository.reset_for_retry(session, run.id)
    if not ids:
        raise Conflict("The run has no failed or cancelled extractions to retry.")
    run.status = RunStatus.RUNNING if run.started_at else RunStatus.QUEUED
    run.finished_at = None
    repository.add_event(session, run.id, "run.retried", f"Retrying {len(ids)} extractions.")
    await session.flush()
    task_ids = [str(i) for i in ids]
    after_commit(session, lambda: queue.enqueue(EXTRACT_PAIR, task_ids))
    return run
