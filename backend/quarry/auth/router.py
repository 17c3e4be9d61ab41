from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from quarry.auth import service
from quarry.auth.deps import CurrentUser
from quarry.auth.schemas import TokenOut, UserOut
from quarry.db import SessionDep
from quarry.errors import RETRY_AFTER_HEADER, ErrorOut
from quarry.security import audit
from quarry.security.ratelimit import limit_password_link, limit_sign_in
from quarry.settings import SettingsDep
from quarry.users.schemas import PasswordSet

router = APIRouter(tags=["auth"])

_SIGN_IN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Incorrect email or password"},
    429: {
        "model": ErrorOut,
        "description": "Too many sign-in attempts; `Retry-After` says how many seconds to wait",
        "headers": RETRY_AFTER_HEADER,
    },
}


@router.post("/auth/token", response_model=TokenOut, responses=_SIGN_IN_ERRORS)
async def sign_in(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> TokenOut:
    """OAuth2 password flow: `username` is the email address.

    Attempts are limited per account and per client IP (429 with `Retry-After`), and every
    attempt, successful or not, is written to the audit log.
    """
    await limit_sign_in(request, settings, service.normalise_email(form.username))
    try:
        user, token, expires_at = await service.sign_in(
            session, settings, form.username, form.password
        )
    except service.SignInFailed as failure:
        await audit.record_failed_sign_in(request, form.username, failure.user_id, failure.reason)
        raise
    await audit.record(
        session,
        request,
        audit.AuditAction.SIGN_IN,
        user_id=user.id,
        target_type="user",
        target_id=user.id,
    )
    return TokenOut(access_token=token, expires_at=expires_at)


_LINK_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorOut,
        "description": "The link was used already, has expired or was replaced, or the "
        "password is too short",
    },
    429: _SIGN_IN_ERRORS[429],
}


@router.post("/auth/password", response_model=TokenOut, responses=_LINK_ERRORS)
async def set_password_with_link(
    request: Request, session: SessionDep, settings: SettingsDep, data: PasswordSet
) -> TokenOut:
    """Set your password with a one-time set-password link's token (from an invitation or
    a reset by an administrator), and be signed in. The link then stops working."""
    await limit_password_link(request, settings)
    user = await service.set_password_with_link(
        session, settings, data.token, data.password.get_secret_value()
    )
    await audit.record(
        session,
        request,
        audit.AuditAction.USER_PASSWORD_SET,
        user_id=user.id,
        target_type="user",
        target_id=user.id,
        detail={"email": user.email},
    )
    token, expires_at = service.access_token(settings, user)
    return TokenOut(access_token=token, expires_at=expires_at)


@router.get("/users/me", response_model=UserOut)
async def read_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)
