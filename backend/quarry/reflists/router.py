from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.errors import ErrorOut
from quarry.pagination import Page, PageDep
from quarry.projects.deps import ProjectEdit, ProjectRead, ProjectReview
from quarry.reflists import casework, service
from quarry.reflists.findings import Finding
from quarry.reflists.schemas import (
    CaseDocumentOut,
    CaseOut,
    CombinedValueOut,
    FindingOut,
    FindingResolutionIn,
    FindingResolutionOut,
    FindingSourceOut,
    FindingValueOut,
    MatchReviewIn,
    MatchReviewOut,
    ReferenceListOut,
    ReferenceRowOut,
    ReferenceRowRef,
)
from quarry.reflists.upload import list_body, receive_list
from quarry.reviewing.deps import ReaderLens
from quarry.security.audit import AuditAction, AuditDep

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
async def list_reference_lists(session: SessionDep, project: ProjectRead) -> Page[ReferenceListOut]:
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
    request: Request, session: SessionDep, project: ProjectEdit
) -> ReferenceListOut:
    """Upload a reference list (multipart field `file`, CSV or XLSX, a header row, up to
    100,000 rows; optional fields `name` and `description`)."""
    upload = await receive_list(request, service.MAX_LIST_BYTES)
    reference_list = await service.create_list(session, project, upload)
    return (await service.to_out(session, [reference_list]))[0]


@router.get("/reference-lists/{list_id}", response_model=ReferenceListOut)
async def read_reference_list(
    session: SessionDep, project: ProjectRead, list_id: uuid.UUID
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
    request: Request, session: SessionDep, project: ProjectEdit, list_id: uuid.UUID
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
    session: SessionDep, project: ProjectEdit, list_id: uuid.UUID, audit: AuditDep
) -> None:
    """Delete the list with every version (409 while a variable matches against it)."""
    reference_list = await service.get_list(session, project, list_id)
    await service.delete_list(session, reference_list)
    await audit.record(
        AuditAction.REFERENCE_LIST_DELETED,
        "reference_list",
        reference_list.id,
        name=reference_list.name,
    )


@router.get("/reference-lists/{list_id}/rows", response_model=Page[ReferenceRowOut])
async def list_reference_rows(
    session: SessionDep,
    project: ProjectRead,
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
    project: ProjectReview,
    user: CurrentUser,
    extraction_id: uuid.UUID,
    data: MatchReviewIn,
) -> MatchReviewOut:
    """Choose the reference row an extraction's value refers to (a candidate's key, any key
    of the list, or null for none): a review of the match, kept with its history; it wins
    over the automatic match in exports, cases and findings."""
    review = await service.review_match(session, project, user, extraction_id, data.key, data.note)
    return MatchReviewOut.model_validate(review)


def _finding_out(finding: Finding) -> FindingOut:
    return FindingOut(
        id=finding.id,
        kind=finding.kind,
        status=finding.status,
        case_key=finding.case_key,
        variable=finding.variable.name,
        variable_id=finding.variable.id,
        values=[
            FindingValueOut(
                value=group.value,
                agrees_with_reference=group.agrees_with_reference,
                documents=[
                    FindingSourceOut(
                        document_id=s.document_id,
                        filename=s.filename,
                        evidence=s.evidence,
                        page=s.page,
                        extraction_id=s.extraction_id,
                        reviewed=s.reviewed,
                    )
                    for s in group.sources
                ],
            )
            for group in finding.values
        ],
        reference_column=finding.reference_column,
        reference_value=finding.reference_value,
        reference_row_number=finding.reference_row_number,
        resolution=(
            FindingResolutionOut.model_validate(finding.resolution) if finding.resolution else None
        ),
    )


@router.get("/cases", response_model=Page[CaseOut], tags=["cases"])
async def list_cases(
    session: SessionDep, project: ProjectRead, lens: ReaderLens, page: PageDep
) -> Page[CaseOut]:
    """The project's cases (documents grouped by the project's `case_key`), by key, each with
    its documents and every variable combined across them by the variable's `combine` rule.
    Computed from the stored values whenever read; empty when the project has no case key.

    In dual review a member still blinded on a cell (a reviewer, until both of its
    reviewers have reviewed it) sees cases built from what they may see of it: their own
    verdict, else the model's answer — and in blind review not that either until they have
    reviewed it (a document whose case key is hidden from them belongs to no case)."""
    work = await casework.casework(session, project, lens)
    open_counts: dict[str, int] = {}
    for finding in work.findings:
        if finding.resolution is None:
            open_counts[finding.case_key] = open_counts.get(finding.case_key, 0) + 1
    chosen = work.cases[page.offset : page.offset + page.limit]
    return Page(
        items=[
            CaseOut(
                key=case.key,
                documents=[CaseDocumentOut(id=d, filename=f) for d, f in case.documents],
                values={
                    name: CombinedValueOut(value=c.value, document_ids=c.document_ids)
                    for name, c in case.values.items()
                },
                reference_row=ReferenceRowRef(**case.reference_row) if case.reference_row else None,
                open_findings=open_counts.get(case.key, 0),
            )
            for case in chosen
        ],
        total=len(work.cases),
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/findings", response_model=Page[FindingOut], tags=["findings"])
async def list_findings(
    session: SessionDep,
    project: ProjectRead,
    lens: ReaderLens,
    page: PageDep,
    status: Annotated[
        Literal["open", "resolved"] | None, Query(description="Only open or resolved ones")
    ] = None,
    case_key: Annotated[str | None, Query(description="Only this case's")] = None,
) -> Page[FindingOut]:
    """Consistency findings: where a case's documents disagree on a variable that must agree
    within its case, or a value disagrees with the case's reference row; each with every
    value given, its documents, quotes and pages. Recomputed from stored values (no LLM call).

    In dual review, computed from what the reader may see of each cell, as GET …/cases is:
    a blinded reviewer is never shown another reviewer's verdict nor (blind review) a model
    value they have not reviewed; a resolution shows while the values it saw are shown."""
    work = await casework.casework(session, project, lens)
    findings = [
        f
        for f in work.findings
        if (status is None or f.status == status) and (case_key is None or f.case_key == case_key)
    ]
    return Page(
        items=[_finding_out(f) for f in findings[page.offset : page.offset + page.limit]],
        total=len(findings),
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "/findings/{finding_id}/resolution",
    response_model=FindingOut,
    tags=["findings"],
    responses={
        400: {"model": ErrorOut, "description": "The value does not fit the variable"},
        403: {
            "model": ErrorOut,
            "description": "A viewer's role; or dual review, and some of the finding's cells "
            "are not yet reviewed by both their reviewers, so the caller cannot see them all",
        },
    },
)
async def resolve_finding(
    session: SessionDep,
    project: ProjectReview,
    user: CurrentUser,
    lens: ReaderLens,
    finding_id: str,
    data: FindingResolutionIn,
) -> FindingOut:
    """Resolve a finding: choose the right value (it becomes the case's value in cases and
    exports) or mark both correct. The resolution is kept; if the values change later, the
    finding opens again. In dual review a member blinded on some of the finding's cells
    (not yet reviewed by both their reviewers) may not resolve it yet (403)."""
    finding, _ = await casework.resolve_finding(session, project, user, finding_id, data, lens)
    return _finding_out(finding)
