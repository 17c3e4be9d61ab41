from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.jobs import QueueDep
from quarry.llm.deps import LLMDep
from quarry.pagination import Page, PageDep
from quarry.projects.deps import ProjectEdit, ProjectRead
from quarry.runs import service
from quarry.runs.progress import ProgressHub
from quarry.runs.schemas import RunCreate, RunEstimate, RunEventOut, RunOut, RunRetry
from quarry.settings import SettingsDep

router = APIRouter(prefix="/projects/{project_id}/runs", tags=["runs"])

#: Event ids are 64-bit; a larger id from a client would overflow the database driver.
MAX_EVENT_ID = 2**63 - 1


@router.post(
    "",
    response_model=RunOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {
            "model": RunEstimate,
            "description": "With `dry_run: true`: the estimate; nothing is created",
        },
        202: {"description": "The run was created and its extractions queued"},
    },
)
async def create_run(
    session: SessionDep,
    settings: SettingsDep,
    llm: LLMDep,
    queue: QueueDep,
    project: ProjectEdit,
    user: CurrentUser,
    data: RunCreate | None = None,
) -> RunOut | JSONResponse:
    """Start extracting: default every ready document × every variable.

    With `dry_run: true`, only estimate the run's tokens and cost (200, `RunEstimate`): the
    request is checked exactly as a real one, and nothing is created.
    """
    data = data or RunCreate()
    if data.dry_run:
        estimate = await service.estimate_run(session, settings, project, data)
        return JSONResponse(estimate.model_dump(mode="json"), status_code=status.HTTP_200_OK)
    run = await service.create_run(session, settings, llm, queue, project, user, data)
    return (await service.runs_out(session, settings, [run]))[0]


@router.get("", response_model=Page[RunOut])
async def list_runs(
    session: SessionDep, settings: SettingsDep, project: ProjectRead, page: PageDep
) -> Page[RunOut]:
    runs, total = await service.list_runs(session, project, page.limit, page.offset)
    return Page(
        items=await service.runs_out(session, settings, runs),
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{run_id}", response_model=RunOut)
async def read_run(
    session: SessionDep, settings: SettingsDep, project: ProjectRead, run_id: uuid.UUID
) -> RunOut:
    run = await service.get_run(session, project, run_id)
    return (await service.runs_out(session, settings, [run], detail=True))[0]


@router.post("/{run_id}/cancel", response_model=RunOut)
async def cancel_run(
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
    project: ProjectEdit,
    run_id: uuid.UUID,
) -> RunOut:
    """Stop the run: no new call starts (a batch run's provider batches are cancelled)."""
    run = await service.cancel_run(session, queue, await service.get_run(session, project, run_id))
    return (await service.runs_out(session, settings, [run]))[0]


@router.post("/{run_id}/retry", response_model=RunOut, status_code=status.HTTP_202_ACCEPTED)
async def retry_run(
    session: SessionDep,
    settings: SettingsDep,
    queue: QueueDep,
    llm: LLMDep,
    project: ProjectEdit,
    run_id: uuid.UUID,
    data: Annotated[RunRetry | None, Body()] = None,
) -> RunOut:
    """Queue the run's failed and cancelled extractions again. A run stopped by its budget
    goes on only with a higher `budget_usd` (or `null` for none)."""
    run = await service.get_run(session, project, run_id)
    run = await service.retry_run(session, settings, queue, llm, run, data or RunRetry())
    return (await service.runs_out(session, settings, [run]))[0]


@router.get("/{run_id}/logs", response_model=Page[RunEventOut])
async def read_logs(
    session: SessionDep,
    project: ProjectRead,
    run_id: uuid.UUID,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    after_id: Annotated[
        int, Query(ge=0, le=MAX_EVENT_ID, description="Only events after this id")
    ] = 0,
) -> Page[RunEventOut]:
    """The run's processing log, oldest first."""
    run = await service.get_run(session, project, run_id)
    events, total = await service.read_log(session, run, after_id, limit)
    return Page(
        items=[RunEventOut.model_validate(e) for e in events],
        total=total,
        limit=limit,
        offset=0,
    )


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}},
)
async def stream_events(
    request: Request,
    session: SessionDep,
    project: ProjectRead,
    run_id: uuid.UUID,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: `progress` (the run, as in GET), `log` (new log lines), `end`.

    Progress is read from the database, so it is live whichever process does the work; one
    reader per run serves every open stream of it (runs/progress.py).
    """
    run = await service.get_run(session, project, run_id)
    try:
        after_id = int(last_event_id or 0)
    except ValueError:
        after_id = 0
    if not 0 <= after_id <= MAX_EVENT_ID:  # a forged id: start from the beginning
        after_id = 0
    hub: ProgressHub = request.app.state.progress
    return StreamingResponse(
        hub.stream(run.id, after_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
