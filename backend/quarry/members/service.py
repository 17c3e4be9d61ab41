"""A project's members: who besides its creator may see it, and in which role.

The creator (`projects.owner_id`) is always an owner, listed first, and can be neither
removed nor given another role. Anyone with the `manage` permission (an owner) adds existing
users by email, changes their role and removes them; every member can see who the others
are. What each role may do is `quarry.projects.roles`.
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
from quarry.projects.roles import Role

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


async def change_role(
    session: AsyncSession, project: Project, user_id: uuid.UUID, role: Role
) -> tuple[Member, Role]:
    """The member with their new role, and the role they had."""
    member, user = await _member_of(session, project, user_id)
    previous = Role(member.role)
    member.role = role.value
    await session.flush()
    return Member(user, role, False, member.created_at), previous


async def remove_member(session: AsyncSession, project: Project, user_id: uuid.UUID) -> Member:
    """Take a member out of the project; they are told 404 about it from then on."""
    member, user = await _member_of(session, project, user_id)
    removed = Member(user, Role(member.role), False, member.created_at)
    await session.delete(member)
    await session.flush()
    return removed
