"""The `CurrentUser` dependency: every route but sign-in and health goes through it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from quarry.auth import service
from quarry.db import SessionDep
from quarry.errors import Unauthorized
from quarry.models import User
from quarry.settings import SettingsDep

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def get_current_user(
    session: SessionDep, settings: SettingsDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> User:
    if not token:
        raise Unauthorized()
    return await service.user_for_token(session, settings, token)


CurrentUser = Annotated[User, Depends(get_current_user)]
