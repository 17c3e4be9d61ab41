"""Factories and waits for API tests (plain functions)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from quarry.app import create_app
from quarry.auth.service import create_user
from quarry.db import create_engine, create_sessionmaker, session_scope
from quarry.settings import Settings
from tests.support.schema import create_schema as create_schema  # re-exported: tests import it here

PASSWORD = "correct horse battery staple"


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app for `settings` on a fresh schema, started, and a client talking to it in-process
    (for tests whose settings differ from the `app` / `client` fixtures')."""
    await create_schema(settings.database_url)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield app, client


@contextlib.asynccontextmanager
async def schema_sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh schema at `database_url`, without the app (for lifecycle tests)."""
    await create_schema(database_url)
    engine = create_engine(database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def sign_up(
    app: FastAPI, client: httpx.AsyncClient, email: str, *, is_admin: bool = False
) -> dict[str, str]:
    """Create a user (an administrator if asked) and sign in through the API; returns the
    Authorization header."""
    async with session_scope(app.state.sessionmaker) as session:
        await create_user(session, app.state.settings, email, PASSWORD, is_admin=is_admin)
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def create_project(
    client: httpx.AsyncClient, headers: dict[str, str], name: str = "Trials"
) -> dict[str, Any]:
    response = await client.post("/api/v1/projects", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def add_variable(
    client: httpx.AsyncClient, headers: dict[str, str], project_id: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/projects/{project_id}/variables", json=fields, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    project_id: str,
    files: list[tuple[str, bytes, str]],
) -> httpx.Response:
    return await client.post(
        f"/api/v1/projects/{project_id}/documents",
        files=[("files", (name, data, ctype)) for name, data, ctype in files],
        headers=headers,
    )


async def wait_for_documents(
    client: httpx.AsyncClient, headers: dict[str, str], project_id: str, timeout: float = 30
) -> list[dict[str, Any]]:
    """Poll until no document is uploaded/parsing; returns the documents."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/v1/projects/{project_id}/documents", headers=headers)
        items: list[dict[str, Any]] = response.json()["items"]
        if all(d["status"] in ("ready", "failed") for d in items):
            return items
        assert time.monotonic() < deadline, f"documents still parsing: {items}"
        await asyncio.sleep(0.05)


async def list_extractions(
    client: httpx.AsyncClient, headers: dict[str, str], project_id: str, **params: Any
) -> list[dict[str, Any]]:
    """The project's extractions (up to 500), filtered by `params` (e.g. run_id, status)."""
    response = await client.get(
        f"/api/v1/projects/{project_id}/extractions",
        params={"limit": 500, **params},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def wait_for_run(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    project_id: str,
    run_id: str,
    timeout: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/v1/projects/{project_id}/runs/{run_id}", headers=headers)
        run: dict[str, Any] = response.json()
        if run["status"] not in ("preparing", "queued", "running"):
            return run
        assert time.monotonic() < deadline, f"run still going: {run}"
        await asyncio.sleep(0.05)
