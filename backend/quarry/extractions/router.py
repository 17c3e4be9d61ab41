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
from quarry.projects.deps import AccessDep, ProjectRead, ProjectReview
from quarry.reviewing.service import lens_for
from quarry.security.audit import AuditAction, AuditDep
from quarry.settings import SettingsDep

router = APIRouter(prefix="/projects/{project_id}", tags=["extractions"])


@router.get("/extractions", response_model=Page[ExtractionOut])
async def list_extractions(
    session: SessionDep,
    settings: SettingsDep,
    project: ProjectRead,
    access: AccessDep,
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
    `status` when either profile's extraction has it. In dual review a reviewer sees only
    their own verdict of a cell until both its reviewers have reviewed it (and in blind
    review not the model's answer until they have: `model_hidden`). Such a row is filtered
    and ordered by what it shows — an answered cell reads `succeeded` (`not_found` included),
    with no two-profile agreement — so a `status` or `agreement` filter tells a blind
    reviewer nothing the rows do not."""
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
        lens=lens_for(project, access.user.id, access.role),
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
    audit: AuditDep,
    document_id: uuid.UUID,
    variable_id: uuid.UUID,
    data: ReviewIn,
) -> ReviewOut:
    """Accept, correct or reject the current value of a cell. Exports use the reviewed value.

    In dual review (the project's `review_mode`) this is your independent verdict, and only
    the document's two assigned reviewers make one (403 otherwise); reviewing again replaces
    your own verdict and keeps the earlier one in the history. In blind review a cell whose
    model value you have not seen cannot be accepted (400): correct or reject it."""
    review = await service.record_review(session, project, user, document_id, variable_id, data)
    await audit.record(
        AuditAction.REVIEW_RECORDED,
        "review",
        review.id,
        project_id=str(project.id),
        document_id=str(document_id),
        variable_id=str(variable_id),
        status=review.status,
        kind=review.kind,
    )
    return ReviewOut.model_validate(review)


@router.get("/reviews/{document_id}/{variable_id}", response_model=list[ReviewOut])
async def list_reviews(
    session: SessionDep,
    project: ProjectRead,
    access: AccessDep,
    document_id: uuid.UUID,
    variable_id: uuid.UUID,
) -> list[ReviewOut]:
    """The review history of a cell, newest first: every verdict (single reviews, the dual
    reviewers' independent verdicts, adjudications) with who made it and when. In dual
    review, a reviewer sees only their own until both of the cell's reviewers have reviewed
    it."""
    return await service.review_history(
        session, project, document_id, variable_id, lens_for(project, access.user.id, access.role)
    )
