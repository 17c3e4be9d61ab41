"""The `CurrentUser` dependency: every route but sign-in and health goes through it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import OAuth2PasswordBearer

from quarry.auth import service
from quarry.db import SessionDep
from quarry.errors import Forbidden, Unauthorized
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


async def require_admin(user: CurrentUser) -> User:
    """The signed-in user if they are an administrator; 403 saying so otherwise."""
    if not user.is_admin:
        raise Forbidden(
            "This needs an administrator: only administrators manage users. Ask one of "
            "them to make the change, or to make you an administrator."
        )
    return user


AdminUser = Annotated[User, Depends(require_admin)]
"""The signed-in administrator (routes under /users that manage other users)."""


def admin_routes(app: FastAPI) -> frozenset[tuple[str, str]]:
    """(method, path) of every operation only administrators may call (those depending on
    `require_admin`), read off the routes themselves."""
    found: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute) or context.path_format is None:
            continue
        stack = list(route.dependant.dependencies)
        while stack:
            dependant = stack.pop()
            if dependant.call is require_admin:
                found.update((m.lower(), context.path_format) for m in context.methods or ())
                break
            stack.extend(dependant.dependencies)
    return frozenset(found)
