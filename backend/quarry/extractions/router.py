from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.errors import ErrorOut
from quarry.extractions import grid, service
from quarry.extractions.schemas import (
    CellStatus,
    ExtractionOut,
    GridFlag,
    GridPage,
    GridSort,
    ReviewIn,
    ReviewOut,
    ReviewState,
    SortOrder,
)
from quarry.models import Agreement, ExtractionStatus
from quarry.pagination import Page, PageDep
from quarry.projects.deps import ProjectRead, ProjectReview
from quarry.reviewing.deps import ReaderLens
from quarry.security.audit import AuditAction, AuditDep
from quarry.settings import SettingsDep

router = APIRouter(prefix="/projects/{project_id}", tags=["extractions"])

#: The most documents one GET …/results may name (`document_id`): a case's, or a choice.
MAX_GRID_DOCUMENTS = 500


@router.get("/extractions", response_model=Page[ExtractionOut])
async def list_extractions(
    session: SessionDep,
    settings: SettingsDep,
    project: ProjectRead,
    lens: ReaderLens,
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
        lens=lens,
    )
    return Page(
        items=items,
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/results",
    response_model=GridPage,
    responses={
        400: {"model": ErrorOut, "description": "An unknown variable, or a value sort without one"}
    },
)
async def results_grid(
    request: Request,
    session: SessionDep,
    project: ProjectRead,
    lens: ReaderLens,
    page: PageDep,
    sort: Annotated[
        GridSort,
        Query(
            description="filename (natural order), uploaded (upload order), value (of "
            "sort_variable_id) or flag (most serious first)"
        ),
    ] = GridSort.UPLOADED,
    order: SortOrder = SortOrder.ASC,
    sort_variable_id: Annotated[
        uuid.UUID | None,
        Query(description="The variable whose value (or flag) sort=value (or flag) sorts by"),
    ] = None,
    variable_id: Annotated[
        uuid.UUID | None,
        Query(description="The column that status, review, flag and value look at (default: all)"),
    ] = None,
    status: Annotated[
        CellStatus | None, Query(description="Rows with a cell of this status")
    ] = None,
    review: Annotated[
        ReviewState | None,
        Query(
            description="unreviewed: rows with a finished extraction not reviewed yet; "
            "reviewed: rows with reviews and nothing left to review"
        ),
    ] = None,
    flag: Annotated[GridFlag | None, Query(description="Rows with a cell flagged so")] = None,
    name: Annotated[
        str | None, Query(max_length=200, description="The filename contains this")
    ] = None,
    value: Annotated[
        str | None, Query(max_length=200, description="A cell's final value contains this")
    ] = None,
    document_id: Annotated[
        list[uuid.UUID] | None,
        Query(
            max_length=MAX_GRID_DOCUMENTS,
            description="Only these documents (repeat the parameter; the Cases view's links)",
        ),
    ] = None,
    counts: Annotated[
        bool,
        Query(
            description="false: no `counts` (they are the same for every page of a query); "
            "then a page in upload or name order with no status, review, flag or value filter "
            "reads only its own cells"
        ),
    ] = True,
) -> GridPage:
    """The results grid: a page of documents (rows), each with every variable's cell — its
    current extraction, its review, its final value and flags as the exports have them, and
    the one `flag` that decides how it looks — sorted and filtered on the server, with
    `counts` per filter value under the other filters (faceted) and `documents_total`.
    Searches ignore case. Values and reviews are the final ones (reviewing/verdicts.py), as
    your export has them: in dual review a reviewer still blinded on a cell sees only their
    own verdict there, and in blind review not the model's answer until they have reviewed
    it (`model_hidden`), as in GET …/extractions."""
    query = grid.GridQuery(
        limit=page.limit,
        offset=page.offset,
        sort=sort,
        order=order,
        sort_variable_id=sort_variable_id,
        variable_id=variable_id,
        status=status,
        review=review,
        flag=flag,
        name=name.strip() or None if name else None,
        value=value.strip() or None if value else None,
        document_ids=frozenset(document_id) if document_id is not None else None,
        counts=counts,
    )
    return await grid.results_grid(
        session,
        request.app.state.sessionmaker,
        project,
        query,
        lens,
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
    lens: ReaderLens,
    document_id: uuid.UUID,
    variable_id: uuid.UUID,
) -> list[ReviewOut]:
    """The review history of a cell, newest first: every verdict (single reviews, the dual
    reviewers' independent verdicts, adjudications) with who made it and when. In dual
    review, a reviewer sees only their own until both of the cell's reviewers have reviewed
    it."""
    return await service.review_history(session, project, document_id, variable_id, lens)
