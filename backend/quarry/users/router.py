"""User administration (administrators only) and every user's own password."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Request, status

from quarry.auth import service as auth
from quarry.auth.deps import AdminUser, CurrentUser
from quarry.auth.schemas import TokenOut
from quarry.db import SessionDep
from quarry.models import User
from quarry.pagination import Page, PageDep
from quarry.security.audit import AuditAction, AuditDep
from quarry.security.ratelimit import limit_sign_in
from quarry.settings import SettingsDep
from quarry.users import service
from quarry.users.schemas import (
    PasswordChange,
    PasswordLinkOut,
    PasswordReset,
    UserAdminOut,
    UserCreate,
    UserUpdate,
    UserWithLinkOut,
)

router = APIRouter(prefix="/users", tags=["users"])


def _with_link(user: User, link: service.PasswordLink | None) -> UserWithLinkOut:
    out = UserWithLinkOut.of(user)
    if link is not None:
        out.password_link = PasswordLinkOut(
            token=link.token, path=link.path, expires_at=link.expires_at
        )
    return out


@router.get("", response_model=Page[UserAdminOut])
async def list_users(session: SessionDep, admin: AdminUser, page: PageDep) -> Page[UserAdminOut]:
    """Every user, by email (administrators only)."""
    items, total = await service.list_users(session, page.limit, page.offset)
    return Page(
        items=[UserAdminOut.of(u) for u in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post("", response_model=UserWithLinkOut, status_code=status.HTTP_201_CREATED)
async def create_user(
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
    data: UserCreate,
    audit: AuditDep,
) -> UserWithLinkOut:
    """Create a user (administrators only). Without `password` the answer holds a one-time
    set-password link, valid 7 days, to hand to them: shown in this answer only."""
    user, link = await service.create_user(session, settings, data)
    await audit.record(
        AuditAction.USER_CREATED,
        "user",
        user.id,
        email=user.email,
        is_admin=user.is_admin,
        with_link=link is not None,
    )
    return _with_link(user, link)


@router.put("/me/password", response_model=TokenOut)
async def change_own_password(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    data: PasswordChange,
    audit: AuditDep,
) -> TokenOut:
    """Change your password, giving the current one. Every other session of yours ends; the
    answer is a fresh token for this one. Attempts count against the sign-in limits."""
    await limit_sign_in(request, settings, user.email)
    token, expires_at = await auth.change_own_password(
        session,
        settings,
        user,
        data.current_password.get_secret_value(),
        data.new_password.get_secret_value(),
    )
    await audit.record(AuditAction.USER_PASSWORD_CHANGED, "user", user.id, email=user.email)
    return TokenOut(access_token=token, expires_at=expires_at)


@router.patch("/{user_id}", response_model=UserAdminOut)
async def update_user(
    session: SessionDep, admin: AdminUser, user_id: uuid.UUID, data: UserUpdate, audit: AuditDep
) -> UserAdminOut:
    """Deactivate or reactivate a user, make or unmake an administrator (administrators
    only). A deactivated user's tokens answer 401 at once. The last active administrator
    can be neither deactivated nor demoted (409)."""
    user = await service.get_user_or_404(session, user_id)
    for action in await service.update_user(session, admin, user, data):
        await audit.record(action, "user", user.id, email=user.email)
    return UserAdminOut.of(user)


@router.post("/{user_id}/password", response_model=UserWithLinkOut)
async def reset_password(
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
    user_id: uuid.UUID,
    audit: AuditDep,
    data: Annotated[PasswordReset | None, Body()] = None,
) -> UserWithLinkOut:
    """Reset a user's password (administrators only): to `password`, or — without one — to
    nothing, with a one-time set-password link valid 24 hours in the answer. Either way
    their old password and every session stop working at once."""
    user = await service.get_user_or_404(session, user_id)
    password = data.password.get_secret_value() if data and data.password else None
    link = await service.reset_password(session, settings, admin, user, password)
    await audit.record(
        AuditAction.USER_PASSWORD_RESET,
        "user",
        user.id,
        email=user.email,
        with_link=link is not None,
    )
    return _with_link(user, link)
