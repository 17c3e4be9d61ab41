"""A project's members: listed to every member, managed by its owners."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from quarry.auth.deps import CurrentUser
from quarry.db import SessionDep
from quarry.members import service
from quarry.members.schemas import MemberAdd, MemberOut, MemberUpdate
from quarry.pagination import Page
from quarry.projects.deps import ProjectManage, ProjectRead
from quarry.security.audit import AuditAction, AuditDep

router = APIRouter(prefix="/projects/{project_id}/members", tags=["members"])


def _out(member: service.Member) -> MemberOut:
    return MemberOut(
        user_id=member.user.id,
        email=member.user.email,
        role=member.role,
        is_creator=member.is_creator,
        is_active=member.user.is_active,
        added_at=member.added_at,
    )


def _released(released: service.Released) -> dict[str, int | bool]:
    """The audit detail of what someone who stopped reviewing left behind."""
    return {
        "reviewer_slots_freed": released.slots_freed,
        "adjudicator_cleared": released.adjudicator_cleared,
    }


@router.get("", response_model=Page[MemberOut])
async def list_members(session: SessionDep, project: ProjectRead) -> Page[MemberOut]:
    """Who is in the project and in which role: the creator (an owner) first, then the
    others by email (a team fits one page). Every member may see this."""
    items = [_out(m) for m in await service.list_members(session, project)]
    return Page(items=items, total=len(items), limit=len(items), offset=0)


@router.post("", response_model=MemberOut, status_code=status.HTTP_201_CREATED)
async def add_member(
    session: SessionDep,
    project: ProjectManage,
    user: CurrentUser,
    data: MemberAdd,
    audit: AuditDep,
) -> MemberOut:
    """Add an existing user, by email, in a role (owners only)."""
    member = await service.add_member(session, project, user, data.email, data.role)
    await audit.record(
        AuditAction.MEMBER_ADDED,
        "user",
        member.user.id,
        email=member.user.email,
        role=member.role.value,
    )
    return _out(member)


@router.patch("/{user_id}", response_model=MemberOut)
async def change_member_role(
    session: SessionDep,
    project: ProjectManage,
    user_id: uuid.UUID,
    data: MemberUpdate,
    audit: AuditDep,
) -> MemberOut:
    """Give a member another role (owners only; the creator stays an owner).

    Made a viewer, they no longer review: in dual review their reviewer slots of the
    documents they have not finished are freed (their verdicts stay in the history), and if
    they were the project's adjudicator, `adjudicator_id` is cleared (owners adjudicate)."""
    member, previous, released = await service.change_role(session, project, user_id, data.role)
    if member.role != previous:
        await audit.record(
            AuditAction.MEMBER_ROLE_CHANGED,
            "user",
            member.user.id,
            email=member.user.email,
            role=member.role.value,
            previous_role=previous.value,
            **_released(released),
        )
    return _out(member)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(
    session: SessionDep, project: ProjectManage, user_id: uuid.UUID, audit: AuditDep
) -> None:
    """Remove a member (owners only; not the creator). They no longer see the project.

    In dual review their reviewer slots of the documents they have not finished are freed,
    for the pool or the owner to give to someone else; their verdicts stay in the history
    (and on the documents they finished, still count). If they were the project's
    adjudicator, `adjudicator_id` is cleared: owners adjudicate until another is named."""
    member, released = await service.remove_member(session, project, user_id)
    await audit.record(
        AuditAction.MEMBER_REMOVED,
        "user",
        member.user.id,
        email=member.user.email,
        role=member.role.value,
        **_released(released),
    )
