"""User administration: what administrators do to other users' accounts.

An administrator creates users (with a first password, or — the default in the web UI — a
one-time set-password link they hand over, so that no one but the user ever knows the
password; no email server is needed), deactivates and reactivates them (a deactivated
user's tokens answer 401 on their next request), makes and unmakes administrators, and
resets passwords (with a new password or a link; either way the old password and every
session stop working at once). There is always at least one active administrator: the
change that would leave none is refused.

Administrators manage accounts, not data: being one gives no access to anyone's projects.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from quarry.auth import repository as auth_repository
from quarry.auth import service as auth
from quarry.auth.repository import get_user
from quarry.errors import BadRequest, Conflict, NotFound
from quarry.models import User
from quarry.security.audit import AuditAction
from quarry.settings import Settings
from quarry.users import repository
from quarry.users.schemas import UserCreate, UserUpdate

#: Where the web UI lets someone set their password from a link (a fragment: the token
#: never reaches a server's access log, nor a Referer header).
SET_PASSWORD_PATH = "/#/set-password?token="  # noqa: S105 - a path, not a secret


@dataclass(frozen=True, slots=True)
class PasswordLink:
    token: str
    expires_at: datetime

    @property
    def path(self) -> str:
        return SET_PASSWORD_PATH + self.token


async def list_users(session: AsyncSession, limit: int, offset: int) -> tuple[Sequence[User], int]:
    return await repository.list_users(session, limit, offset)


async def get_user_or_404(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await get_user(session, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def create_user(
    session: AsyncSession, settings: Settings, data: UserCreate
) -> tuple[User, PasswordLink | None]:
    """A new user with the given password, or with none and a set-password link."""
    password = data.password.get_secret_value() if data.password is not None else None
    user = await auth.create_user(session, settings, data.email, password, is_admin=data.is_admin)
    if password is not None:
        return user, None
    token, expires_at = await auth.new_password_link(session, user, auth.INVITATION_VALID_FOR)
    return user, PasswordLink(token, expires_at)


async def update_user(
    session: AsyncSession, admin: User, user: User, data: UserUpdate
) -> list[AuditAction]:
    """Apply an administrator's change to `user`; what changed, as audit actions."""
    changes: list[AuditAction] = []
    deactivating = data.is_active is False and user.is_active
    demoting = data.is_admin is False and user.is_admin
    losing_an_admin = (deactivating or demoting) and user.is_admin and user.is_active
    if losing_an_admin:
        await repository.lock_active_admins(session)
    if data.is_active is not None and data.is_active != user.is_active:
        user.is_active = data.is_active
        if data.is_active:
            changes.append(AuditAction.USER_REACTIVATED)
        else:
            auth.end_sessions(user)  # reactivating later does not bring old sessions back
            changes.append(AuditAction.USER_DEACTIVATED)
    if data.is_admin is not None and data.is_admin != user.is_admin:
        user.is_admin = data.is_admin
        changes.append(
            AuditAction.USER_ADMIN_GRANTED if data.is_admin else AuditAction.USER_ADMIN_REVOKED
        )
    await session.flush()
    # Counted after the change, inside its transaction: on SQLite the flush holds the write
    # lock, on PostgreSQL the rows locked above; either way a concurrent change that would
    # also take an administrator away waits for this one and then counts it.
    if losing_an_admin and await auth_repository.count_active_admins(session) == 0:
        whom = "You are" if user.id == admin.id else f"{user.email} is"
        what = "deactivated" if deactivating else "made a regular user"
        raise Conflict(
            f"{whom} the last active administrator, so cannot be {what}: make someone "
            "else an administrator first."
        )
    return changes


async def reset_password(
    session: AsyncSession, settings: Settings, admin: User, user: User, password: str | None
) -> PasswordLink | None:
    """Give `user` a new password, or take theirs away and make a set-password link. Their
    sessions end either way."""
    if user.id == admin.id:
        raise BadRequest(
            "Change your own password with your current one (PUT /users/me/password, or "
            "Change password in the web UI), not by resetting it."
        )
    if password is not None:
        await auth.set_password(session, settings, user, password)
        return None
    user.password_hash = None
    auth.end_sessions(user)
    token, expires_at = await auth.new_password_link(session, user, auth.RESET_VALID_FOR)
    return PasswordLink(token, expires_at)
