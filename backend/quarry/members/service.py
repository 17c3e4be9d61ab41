"""A project's members: who besides its creator may see it, and in which role.

The creator (`projects.owner_id`) is always an owner, listed first, and can be neither
removed nor given another role. Anyone with the `manage` permission (an owner) adds existing
users by email, changes their role and removes them; every member can see who the others
are. What each role may do is `quarry.projects.roles`.

Someone removed, or made a viewer, no longer reviews: the dual-review slots of documents they
had not finished are freed, and if they were the project's adjudicator it has none until an
owner names one (`_stop_reviewing`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quarry.auth import repository as users
from quarry.auth.service import normalise_email
from quarry.errors import BadRequest, Conflict, NotFound
from quarry.members import repository
from quarry.models import Project, ProjectMember, User
from quarry.projects.roles import Permission, Role, allows
from quarry.reviewing import assignments

_CREATOR_FIXED = (
    "{email} created this project and is always its owner: they can be neither removed nor "
    "given another role."
)


@dataclass(frozen=True, slots=True)
class Member:
    user: User
    role: Role
    is_creator: bool
    added_at: datetime


async def list_members(session: AsyncSession, project: Project) -> list[Member]:
    """The creator first, then the other members by email."""
    creator = await users.get_user(session, project.owner_id)
    found = [Member(creator, Role.OWNER, True, project.created_at)] if creator else []
    for member, user in await repository.list_members(session, project.id):
        found.append(Member(user, Role(member.role), False, member.created_at))
    return found


async def add_member(
    session: AsyncSession, project: Project, added_by: User, email: str, role: Role
) -> Member:
    email = normalise_email(email)
    user = await users.get_user_by_email(session, email)
    if user is None:
        raise NotFound(
            f"No user has the email {email}. An administrator can create their account; "
            "then add them here."
        )
    if user.id == project.owner_id:
        raise Conflict(f"{email} created this project and is already its owner.")
    if not user.is_active:
        raise BadRequest(f"{email}'s account is deactivated; an administrator can reactivate it.")
    existing = await repository.get_member(session, project.id, user.id)
    if existing is not None:
        raise Conflict(
            f"{email} is already a member of this project (as {existing.role}); change their "
            "role instead."
        )
    member = ProjectMember(
        project_id=project.id, user_id=user.id, role=role.value, added_by=added_by.id
    )
    session.add(member)
    try:
        await session.flush()
    except IntegrityError as exc:  # added by someone else a moment ago
        if "uq_project_members_project_id_user_id" in str(exc.orig) or "project_members" in str(
            exc.orig
        ):
            raise Conflict(f"{email} is already a member of this project.") from exc
        raise
    return Member(user, role, False, member.created_at)


async def _member_of(
    session: AsyncSession, project: Project, user_id: uuid.UUID
) -> tuple[ProjectMember, User]:
    if user_id == project.owner_id:
        creator = await users.get_user(session, user_id)
        raise BadRequest(_CREATOR_FIXED.format(email=creator.email if creator else "Its creator"))
    member = await repository.get_member(session, project.id, user_id)
    user = await users.get_user(session, user_id) if member else None
    if member is None or user is None:
        raise NotFound("No such member of this project.")
    return member, user


@dataclass(frozen=True, slots=True)
class Released:
    """What someone who stops reviewing leaves behind (see `_stop_reviewing`)."""

    #: Reviewer slots freed: the documents they had not finished reviewing.
    slots_freed: int = 0
    #: They were the project's adjudicator, and no longer are.
    adjudicator_cleared: bool = False


async def _stop_reviewing(session: AsyncSession, project: Project, user_id: uuid.UUID) -> Released:
    """Someone no longer reviews in the project (removed, or made a viewer): their unfinished
    reviewer slots are freed (reviewing/assignments.py: their verdicts stay, and those of the
    documents they finished still count) and, if they were its adjudicator, the project has
    none until an owner names another (owners adjudicate meanwhile). Cleared rather than
    refused: an owner removing someone should not first have to undo their assignments."""
    freed = await assignments.release_reviewer(session, project, user_id)
    cleared = project.adjudicator_id == user_id
    if cleared:
        project.adjudicator_id = None
        await session.flush()
    return Released(freed, cleared)


async def change_role(
    session: AsyncSession, project: Project, user_id: uuid.UUID, role: Role
) -> tuple[Member, Role, Released]:
    """The member with their new role, the role they had, and what they left behind if the
    new role does not review (a viewer)."""
    member, user = await _member_of(session, project, user_id)
    previous = Role(member.role)
    member.role = role.value
    await session.flush()
    released = Released()
    if not allows(role, Permission.REVIEW):
        released = await _stop_reviewing(session, project, user_id)
    return Member(user, role, False, member.created_at), previous, released


async def remove_member(
    session: AsyncSession, project: Project, user_id: uuid.UUID
) -> tuple[Member, Released]:
    """Take a member out of the project; they are told 404 about it from then on."""
    member, user = await _member_of(session, project, user_id)
    removed = Member(user, Role(member.role), False, member.created_at)
    await session.delete(member)
    await session.flush()
    return removed, await _stop_reviewing(session, project, user_id)
