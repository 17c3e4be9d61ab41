"""Project members for tests: the one place tests give a user a role in a project.

Until the members API exists this writes the `project_members` row itself (the user is made
with `auth.service.create_user`); when it lands, only `_add_member` changes (to a call of the
API with the owner's headers), and every test keeps calling `add_member` / `add_member_live`.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import TYPE_CHECKING

import httpx
from fastapi import FastAPI

from quarry.auth.service import create_user
from quarry.db import create_engine, create_sessionmaker, session_scope
from quarry.models import ProjectMember
from quarry.settings import Settings
from tests.support.api import PASSWORD

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from tests.web.conftest import LiveServer


async def _add_member(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    project_id: str,
    email: str,
    role: str,
) -> None:
    async with session_scope(sessionmaker) as session:
        user = await create_user(session, settings, email, PASSWORD)
        session.add(ProjectMember(project_id=uuid.UUID(project_id), user_id=user.id, role=role))


async def add_member(
    app: FastAPI,
    client: httpx.AsyncClient,
    owner_headers: dict[str, str],
    project_id: str,
    email: str,
    role: str,
) -> dict[str, str]:
    """A new user `email` with `role` in the owner's project, signed in: their headers."""
    del owner_headers  # the members API will need them
    await _add_member(app.state.sessionmaker, app.state.settings, project_id, email, role)
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def add_member_live(server: LiveServer, project_id: str, email: str, role: str) -> None:
    """`add_member` for the browser tests' live server (password: tests.support.api.PASSWORD).

    Runs in a thread of its own with its own engine: the test thread holds Playwright's loop.
    """
    failure: list[BaseException] = []

    async def run() -> None:
        engine = create_engine(server.settings.database_url)
        try:
            await _add_member(create_sessionmaker(engine), server.settings, project_id, email, role)
        finally:
            await engine.dispose()

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


__all__ = ["add_member", "add_member_live"]
