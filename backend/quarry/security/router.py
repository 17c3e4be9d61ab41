from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.pagination import Page, PageDep
from quarry.security import audit
from quarry.security.audit import AuditAction
from quarry.security.schemas import AuditEventOut

router = APIRouter(tags=["audit"])


@router.get("/audit-events", response_model=Page[AuditEventOut])
async def list_audit_events(
    session: SessionDep,
    user: CurrentUser,
    page: PageDep,
    action: Annotated[AuditAction | None, Query(description="Only events of this kind")] = None,
) -> Page[AuditEventOut]:
    """Your own security-relevant actions, newest first: sign-ins (also failed attempts on
    your account), deletions, exports, reviews, adjudications and reviewer assignments, each
    with the client IP and request id."""
    items, total = await audit.list_events(session, user.id, page.limit, page.offset, action)
    return Page(
        items=[AuditEventOut.model_validate(e) for e in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )
