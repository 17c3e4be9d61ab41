"""Project members for tests: the one place tests give a user a role in a project.

The user is made with `auth.service.create_user` (as `quarry create-user` would); the owner
then adds them through the members API (`add_member`). The browser tests make the accounts
with `add_user_live` and have the owner add them on the Members tab.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import httpx
from fastapi import FastAPI

from quarry.auth.service import create_user
from quarry.db import create_engine, create_sessionmaker, session_scope
from quarry.settings import Settings
from tests.support.api import PASSWORD

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from tests.web.conftest import LiveServer


async def _add_user(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, email: str
) -> None:
    async with session_scope(sessionmaker) as session:
        await create_user(session, settings, email, PASSWORD)


async def add_member(
    app: FastAPI,
    client: httpx.AsyncClient,
    owner_headers: dict[str, str],
    project_id: str,
    email: str,
    role: str,
) -> dict[str, str]:
    """A new user `email` with `role` in the owner's project, signed in: their headers."""
    await _add_user(app.state.sessionmaker, app.state.settings, email)
    added = await client.post(
        f"/api/v1/projects/{project_id}/members",
        json={"email": email, "role": role},
        headers=owner_headers,
    )
    assert added.status_code == 201, added.text
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def add_user_live(server: LiveServer, email: str) -> None:
    """A user account on the browser tests' live server (password: tests.support.api.PASSWORD).

    Runs in a thread of its own with its own engine: the test thread holds Playwright's loop.
    """
    failure: list[BaseException] = []

    async def run() -> None:
        engine = create_engine(server.settings.database_url)
        try:
            await _add_user(create_sessionmaker(engine), server.settings, email)
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


__all__ = ["add_member", "add_user_live"]
