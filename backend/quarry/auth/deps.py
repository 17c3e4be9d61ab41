"""The `CurrentUser` dependency: every route but sign-in and health goes through it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from quarry.auth import service
from quarry.db import SessionDep
from quarry.errors import Unauthorized
from quarry.models import User
from quarry.security.ratelimit import limit_api_call
from quarry.settings import SettingsDep

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def get_current_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> User:
    """The signed-in user, counted against their API rate limit (429 past it)."""
    if not token:
        raise Unauthorized()
    user = await service.user_for_token(session, settings, token)
    await limit_api_call(request, settings, user.id)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]
