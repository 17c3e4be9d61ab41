from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from quarry.auth import service
from quarry.auth.deps import CurrentUser
from quarry.auth.schemas import TokenOut, UserOut
from quarry.db import SessionDep
from quarry.settings import SettingsDep

router = APIRouter(tags=["auth"])


@router.post("/auth/token", response_model=TokenOut)
async def sign_in(
    session: SessionDep,
    settings: SettingsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> TokenOut:
    """OAuth2 password flow: `username` is the email address."""
    token, expires_at = await service.sign_in(session, settings, form.username, form.password)
    return TokenOut(access_token=token, expires_at=expires_at)


@router.get("/users/me", response_model=UserOut)
async def read_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)
