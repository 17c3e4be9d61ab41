from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.errors import ErrorOut
from quarry.pagination import Page, PageDep
from quarry.projects.deps import ProjectDep
from quarry.reflists import service
from quarry.reflists.schemas import (
    MatchReviewIn,
    MatchReviewOut,
    ReferenceListOut,
    ReferenceRowOut,
)
from quarry.reflists.upload import list_body, receive_list

router = APIRouter(prefix="/projects/{project_id}", tags=["reference lists"])

_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorOut,
        "description": "The file cannot be used: empty, no header, a duplicate or blank "
        "column name, more than 100,000 rows, or bad rows (named by their row numbers)",
    },
    413: {"model": ErrorOut, "description": "The file is larger than 50 MB"},
    415: {"model": ErrorOut, "description": "The body is not multipart/form-data"},
}


@router.get("/reference-lists", response_model=Page[ReferenceListOut])
async def list_reference_lists(session: SessionDep, project: ProjectDep) -> Page[ReferenceListOut]:
    """The project's reference lists (few per project, so one page)."""
    items = await service.to_out(session, await service.list_lists(session, project))
    return Page(items=items, total=len(items), limit=len(items), offset=0)


@router.post(
    "/reference-lists",
    response_model=ReferenceListOut,
    status_code=status.HTTP_201_CREATED,
    responses={**_UPLOAD_RESPONSES, 409: {"model": ErrorOut, "description": "Name taken"}},
    openapi_extra=list_body(with_name=True),
)
async def create_reference_list(
    request: Request, session: SessionDep, project: ProjectDep
) -> ReferenceListOut:
    """Upload a reference list (multipart field `file`, CSV or XLSX, a header row, up to
    100,000 rows; optional fields `name` and `description`)."""
    upload = await receive_list(request, service.MAX_LIST_BYTES)
    reference_list = await service.create_list(session, project, upload)
    return (await service.to_out(session, [reference_list]))[0]


@router.get("/reference-lists/{list_id}", response_model=ReferenceListOut)
async def read_reference_list(
    session: SessionDep, project: ProjectDep, list_id: uuid.UUID
) -> ReferenceListOut:
    reference_list = await service.get_list(session, project, list_id)
    return (await service.to_out(session, [reference_list]))[0]


@router.put(
    "/reference-lists/{list_id}",
    response_model=ReferenceListOut,
    responses=_UPLOAD_RESPONSES,
    openapi_extra=list_body(with_name=False),
)
async def replace_reference_list(
    request: Request, session: SessionDep, project: ProjectDep, list_id: uuid.UUID
) -> ReferenceListOut:
    """Replace the list by a new upload: a new version (old versions are kept, and so are
    the matches made against them until they are recomputed). Every stored value of the
    variables matched to the list is matched again to the new version, without LLM calls."""
    reference_list = await service.get_list(session, project, list_id)
    upload = await receive_list(request, service.MAX_LIST_BYTES)
    rematched = await service.replace_list(session, reference_list, upload)
    return (await service.to_out(session, [reference_list], rematched=rematched))[0]


@router.delete(
    "/reference-lists/{list_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: {"model": ErrorOut, "description": "A variable still matches the list"}},
)
async def delete_reference_list(
    session: SessionDep, project: ProjectDep, list_id: uuid.UUID
) -> None:
    reference_list = await service.get_list(session, project, list_id)
    await service.delete_list(session, reference_list)


@router.get("/reference-lists/{list_id}/rows", response_model=Page[ReferenceRowOut])
async def list_reference_rows(
    session: SessionDep,
    project: ProjectDep,
    page: PageDep,
    list_id: uuid.UUID,
    version: Annotated[
        int | None, Query(ge=1, description="A version's number; default the current one")
    ] = None,
) -> Page[ReferenceRowOut]:
    """The rows of the list (its current version, or an older one), in file order."""
    reference_list = await service.get_list(session, project, list_id)
    rows, total = await service.page_of_rows(
        session, reference_list, version, page.limit, page.offset
    )
    return Page(
        items=[ReferenceRowOut.model_validate(r) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "/extractions/{extraction_id}/match",
    response_model=MatchReviewOut,
    tags=["extractions"],
    responses={400: {"model": ErrorOut, "description": "Not matched, or no such key"}},
)
async def review_match(
    session: SessionDep,
    project: ProjectDep,
    user: CurrentUser,
    extraction_id: uuid.UUID,
    data: MatchReviewIn,
) -> MatchReviewOut:
    """Choose the reference row an extraction's value refers to (a candidate's key, any key
    of the list, or null for none): a review of the match, kept with its history; it wins
    over the automatic match in exports, cases and findings."""
    review = await service.review_match(session, project, user, extraction_id, data.key, data.note)
    return MatchReviewOut.model_validate(review)
