from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from quarry.db import SessionDep
from quarry.errors import ErrorOut
from quarry.evaluation.compare import Tolerance
from quarry.pagination import Page, PageDep
from quarry.projects.deps import AccessDep, ProjectManage, ProjectRead, ProjectReview
from quarry.reviewing import assignments, conflicts, figures
from quarry.reviewing.schemas import (
    AgreementOut,
    AssignIn,
    AutoAssignIn,
    AutoAssignOut,
    ClaimIn,
    ConflictOut,
    DocumentAssignmentOut,
    ResolutionIn,
    ReviewerOut,
)
from quarry.security.audit import AuditAction, AuditDep

router = APIRouter(prefix="/projects/{project_id}", tags=["review"])


@router.get("/reviewers", response_model=list[ReviewerOut])
async def list_reviewers(session: SessionDep, project: ProjectRead) -> list[ReviewerOut]:
    """Everyone who may review in the project (owners, editors, reviewers), with how many
    documents they are assigned to and how many cells they have reviewed."""
    return await assignments.list_reviewers(session, project)


@router.get("/assignments", response_model=Page[DocumentAssignmentOut])
async def list_assignments(
    session: SessionDep,
    project: ProjectRead,
    access: AccessDep,
    page: PageDep,
    reviewer_id: Annotated[
        uuid.UUID | None, Query(description="Only the documents of this reviewer")
    ] = None,
    mine: Annotated[
        bool, Query(description="Only the documents assigned to you: your queue")
    ] = False,
    unassigned: Annotated[
        bool, Query(description="Only documents with a free reviewer slot: the pool")
    ] = False,
) -> Page[DocumentAssignmentOut]:
    """The project's documents in upload order with their reviewers A and B (dual review),
    and how many of the document's variables each has reviewed."""
    items, total = await assignments.list_assignments(
        session,
        project,
        page.limit,
        page.offset,
        reviewer_id=access.user.id if mine else reviewer_id,
        unassigned=unassigned,
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post("/assignments", response_model=list[DocumentAssignmentOut])
async def assign_reviewers(
    session: SessionDep, project: ProjectManage, access: AccessDep, audit: AuditDep, data: AssignIn
) -> list[DocumentAssignmentOut]:
    """Assign documents by hand: set their reviewer A and reviewer B (null frees a slot).
    Verdicts already given stay in the history; only the assigned reviewers' count."""
    items = await assignments.assign(session, project, access.user, data)
    await audit.record(
        AuditAction.REVIEWERS_ASSIGNED,
        "project",
        project.id,
        method="manual",
        documents=len(items),
        reviewer_a=str(data.reviewer_a) if data.reviewer_a else None,
        reviewer_b=str(data.reviewer_b) if data.reviewer_b else None,
    )
    return items


@router.post("/assignments/auto", response_model=AutoAssignOut)
async def auto_assign(
    session: SessionDep,
    project: ProjectManage,
    access: AccessDep,
    audit: AuditDep,
    data: AutoAssignIn | None = None,
) -> AutoAssignOut:
    """Split the documents evenly: two different reviewers per document, round robin over
    the members in the reviewer role (or the `reviewer_ids` given), least loaded first. Only
    free slots are filled unless `replace`."""
    result = await assignments.auto_assign(session, project, access.user, data or AutoAssignIn())
    await audit.record(
        AuditAction.REVIEWERS_ASSIGNED,
        "project",
        project.id,
        method="auto",
        documents=result.documents,
        slots=result.slots_filled,
    )
    return result


@router.post(
    "/assignments/claim",
    response_model=list[DocumentAssignmentOut],
    responses={409: {"model": ErrorOut, "description": "Someone took the same slot just then"}},
)
async def claim_documents(
    session: SessionDep,
    project: ProjectReview,
    access: AccessDep,
    audit: AuditDep,
    data: ClaimIn | None = None,
) -> list[DocumentAssignmentOut]:
    """Take documents from the unassigned pool: up to `count` documents with a free reviewer
    slot (upload order) that you are not already reviewing. An empty list: none left."""
    items = await assignments.claim(session, project, access.user, (data or ClaimIn()).count)
    if items:
        await audit.record(
            AuditAction.REVIEWERS_ASSIGNED,
            "project",
            project.id,
            method="claim",
            documents=len(items),
        )
    return items


@router.get("/conflicts", response_model=Page[ConflictOut])
async def list_conflicts(
    session: SessionDep,
    project: ProjectRead,
    page: PageDep,
    variable_id: uuid.UUID | None = None,
    status: Annotated[
        Literal["open", "resolved"] | None,
        Query(description="open: not adjudicated yet; resolved: adjudicated"),
    ] = None,
    reviewer_id: Annotated[
        uuid.UUID | None, Query(description="Only the conflicts this reviewer is one side of")
    ] = None,
) -> Page[ConflictOut]:
    """Cells whose two dual reviewers disagree (compared type-aware, as the evaluation
    compares), with both verdicts side by side, the model's answer and the resolution."""
    items, total = await conflicts.list_conflicts(
        session,
        project,
        page.limit,
        page.offset,
        variable_id=variable_id,
        status=status,
        reviewer_id=reviewer_id,
    )
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/conflicts/{document_id}/{variable_id}/resolution",
    response_model=ConflictOut,
    responses={
        403: {"model": ErrorOut, "description": "Neither an owner nor the project's adjudicator"},
        409: {"model": ErrorOut, "description": "Not a conflict: not reviewed by both, or agreed"},
    },
)
async def resolve_conflict(
    session: SessionDep,
    project: ProjectReview,
    access: AccessDep,
    audit: AuditDep,
    document_id: uuid.UUID,
    variable_id: uuid.UUID,
    data: ResolutionIn,
) -> ConflictOut:
    """Adjudicate a conflict (an owner, or the project's adjudicator): take reviewer A's or
    B's verdict (`choose`) or give the value. The resolution is the cell's final value in
    exports; resolving again replaces it (the history keeps every one)."""
    review, out = await conflicts.resolve_conflict(
        session, project, access.user, access.role, document_id, variable_id, data
    )
    await audit.record(
        AuditAction.CONFLICT_RESOLVED,
        "review",
        review.id,
        project_id=str(project.id),
        document_id=str(document_id),
        variable_id=str(variable_id),
        choose=data.choose,
        status=review.status,
    )
    return out


AbsoluteToleranceQuery = Annotated[
    float, Query(ge=0, description="Numbers this close to each other count as agreeing")
]
RelativeToleranceQuery = Annotated[
    float,
    Query(ge=0, le=1, description="…or this close relative to the larger of the two numbers"),
]


@router.get("/agreement", response_model=AgreementOut)
async def read_agreement(
    session: SessionDep,
    project: ProjectRead,
    absolute_tolerance: AbsoluteToleranceQuery = 0.0,
    relative_tolerance: RelativeToleranceQuery = 1e-6,
) -> AgreementOut:
    """Agreement per variable and overall: percent agreement, and Cohen's kappa for boolean
    and category variables (pooled kappa overall), for reviewer A vs B, the model vs each
    reviewer, and the model vs the final (adjudicated or agreed) value. Numbers agree within
    the tolerance, dates at the precision of the less precise one."""
    tolerance = Tolerance(absolute=absolute_tolerance, relative=relative_tolerance)
    return await figures.agreement(session, project, tolerance)
