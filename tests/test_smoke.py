from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.support.api import create_project, sign_up


async def test_health_and_sign_in(app: FastAPI, client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json()["status"] == "ok"
    ready = await client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    headers = await sign_up(app, client, "ada@example.org")
    me = await client.get("/api/v1/users/me", headers=headers)
    assert me.json()["email"] == "ada@example.org"
    project = await create_project(client, headers)
    assert project["name"] == "Trials"
