from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.auth.deps import AdminUser, CurrentUser
from quarry.db import SessionDep
from quarry.models import AuditEvent
from quarry.pagination import Page, PageDep
from quarry.projects.deps import ProjectManage
from quarry.security import audit
from quarry.security.audit import AuditAction
from quarry.security.schemas import AuditEventOut

router = APIRouter(tags=["audit"])

ActionQuery = Annotated[AuditAction | None, Query(description="Only events of this kind")]


async def _page(
    session: AsyncSession, found: tuple[Sequence[AuditEvent], int], limit: int, offset: int
) -> Page[AuditEventOut]:
    items, total = found
    emails = await audit.emails_of(session, {e.user_id for e in items if e.user_id})
    return Page(
        items=[AuditEventOut.of(e, emails.get(e.user_id) if e.user_id else None) for e in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/audit-events", response_model=Page[AuditEventOut])
async def list_audit_events(
    session: SessionDep, user: CurrentUser, page: PageDep, action: ActionQuery = None
) -> Page[AuditEventOut]:
    """Your own security-relevant actions, newest first: sign-ins (also failed attempts on
    your account), deletions, exports, reviews, adjudications and reviewer assignments,
    changes to members and users, each with the client IP and request id."""
    found = await audit.list_events(session, user.id, page.limit, page.offset, action)
    return await _page(session, found, page.limit, page.offset)


@router.get("/projects/{project_id}/audit-events", response_model=Page[AuditEventOut])
async def list_project_audit_events(
    session: SessionDep, project: ProjectManage, page: PageDep, action: ActionQuery = None
) -> Page[AuditEventOut]:
    """What everyone did in the project, newest first (owners only): members added,
    changed and removed, deletions, exports, with who did it and when."""
    found = await audit.list_project_events(session, project.id, page.limit, page.offset, action)
    return await _page(session, found, page.limit, page.offset)


@router.get("/users/audit-events", response_model=Page[AuditEventOut])
async def list_user_audit_events(
    session: SessionDep, admin: AdminUser, page: PageDep, action: ActionQuery = None
) -> Page[AuditEventOut]:
    """User administration, newest first (administrators only): users created, deactivated,
    reactivated, made or unmade administrators, passwords reset, changed and set."""
    found = await audit.list_user_events(session, page.limit, page.offset, action)
    return await _page(session, found, page.limit, page.offset)
