from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.extractions import service
from quarry.extractions.schemas import ExtractionOut, ReviewIn, ReviewOut
from quarry.models import Agreement, ExtractionStatus
from quarry.pagination import Page, PageDep
from quarry.projects.deps import ProjectRead, ProjectReview
from quarry.settings import SettingsDep

router = APIRouter(prefix="/projects/{project_id}", tags=["extractions"])


@router.get("/extractions", response_model=Page[ExtractionOut])
async def list_extractions(
    session: SessionDep,
    settings: SettingsDep,
    project: ProjectRead,
    page: PageDep,
    run_id: uuid.UUID | None = None,
    document_id: uuid.UUID | None = None,
    variable_id: uuid.UUID | None = None,
    status: Annotated[ExtractionStatus | None, Query()] = None,
    agreement: Annotated[
        Agreement | None,
        Query(description="A two-profile run's pairs with this verdict (e.g. disagree)"),
    ] = None,
) -> Page[ExtractionOut]:
    """Extraction results with their evidence; filter by run, document, variable, status or
    agreement. In review order: where a two-profile run's profiles disagree first, then where
    only one answered, then the rest in run and pair order. A two-profile run's row is its
    first profile's answer, with the second profile's beside it (`second`); it matches a
    `status` when either profile's extraction has it."""
    items, total = await service.list_extractions(
        session,
        settings,
        project,
        page.limit,
        page.offset,
        run_id=run_id,
        document_id=document_id,
        variable_id=variable_id,
        status=status,
        agreement=agreement,
    )
    return Page(
        items=items,
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.put("/reviews/{document_id}/{variable_id}", response_model=ReviewOut)
async def put_review(
    session: SessionDep,
    project: ProjectReview,
    user: CurrentUser,
    document_id: uuid.UUID,
    variable_id: uuid.UUID,
    data: ReviewIn,
) -> ReviewOut:
    """Accept, correct or reject the current value of a cell. Exports use the reviewed value."""
    review = await service.record_review(session, project, user, document_id, variable_id, data)
    return ReviewOut.model_validate(review)


@router.get("/reviews/{document_id}/{variable_id}", response_model=list[ReviewOut])
async def list_reviews(
    session: SessionDep, project: ProjectRead, document_id: uuid.UUID, variable_id: uuid.UUID
) -> list[ReviewOut]:
    """The review history of a cell, newest first."""
    return await service.review_history(session, project, document_id, variable_id)
