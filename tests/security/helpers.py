"""Plain helpers for the hostile-user tests: a user's whole world, routes, forged tokens."""

from __future__ import annotations

import re
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select

from quarry.auth.deps import get_current_user
from quarry.models import AuditEvent
from tests.support.api import (
    add_variable,
    create_project,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.documents import make_pdf
from tests.support.probes import add_user
from tests.support.webhook_receiver import add_paused_webhook

API = "/api/v1"


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # the template, e.g. /api/v1/projects/{project_id}
    authenticated: bool
    in_schema: bool

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)

    def fill(self, ids: dict[str, str]) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _depends_on(dependant: Any, call: Any) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def app_routes(app: FastAPI) -> list[Route]:
    """Every HTTP operation the app serves, read from its route table (not a hand list), so
    a route added tomorrow is in every test that uses this."""
    routes = []
    for context in iter_route_contexts(app.routes):
        original = context.original_route
        if not isinstance(original, APIRoute):
            continue
        authenticated = _depends_on(original.dependant, get_current_user)
        for method in sorted(context.methods or ()):
            if method == "HEAD":
                continue
            routes.append(
                Route(method, str(context.path), authenticated, bool(context.include_in_schema))
            )
    return routes


def forge(claims: dict[str, Any], key: str, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about short keys
        return jwt.encode(claims, key, algorithm=algorithm)


@dataclass
class World:
    """A signed-in user with a project holding a variable, a ready document and a run."""

    email: str
    headers: dict[str, str]
    ids: dict[str, str]


async def make_world(
    app: FastAPI, client: httpx.AsyncClient, email: str, *, with_run: bool = True
) -> World:
    headers = await sign_up(app, client, email)
    marker = email.split("@")[0]
    pid = (await create_project(client, headers, f"{marker}'s project"))["id"]
    member_id = await add_user(app, f"{marker}-member@example.org")
    response = await client.post(
        f"{API}/projects/{pid}/members",
        json={"email": f"{marker}-member@example.org", "role": "viewer"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    variable = await add_variable(
        client, headers, pid, name="title", description="The title", type="text"
    )
    # A PDF, so that every document route (its page images too) has something to show.
    response = await upload(
        client,
        headers,
        pid,
        [(f"{marker}.pdf", make_pdf([f"{marker}: a private study."]), "application/pdf")],
    )
    assert response.status_code == 201, response.text
    documents = await wait_for_documents(client, headers, pid)
    assert [d["status"] for d in documents] == ["ready"], documents
    profile = await client.post(
        f"{API}/projects/{pid}/profiles",
        json={
            "name": f"{marker} local",
            "model": "local-model",
            "base_url": "http://127.0.0.1:9/v1",
        },
        headers=headers,
    )
    assert profile.status_code == 201, profile.text
    listed = await client.post(
        f"{API}/projects/{pid}/reference-lists",
        files={"file": ("refs.csv", f"id,name\nK1,{marker}\n".encode(), "text/csv")},
        headers=headers,
    )
    assert listed.status_code == 201, listed.text
    ids = {
        "project_id": pid,
        "variable_id": variable["id"],
        "document_id": documents[0]["id"],
        "profile_id": profile.json()["id"],
        "list_id": listed.json()["id"],
        # Findings exist only where a case's values disagree (tests/reflists and
        # tests/test_ownership.py make real ones); an id of their shape, which no one's
        # project has, answers 404 to everyone.
        "finding_id": "0" * 32,
        "number": "1",  # a page of the document
        "user_id": member_id,  # a member of the project (a viewer)
    }
    if with_run:
        response = await client.post(f"{API}/projects/{pid}/runs", json={}, headers=headers)
        assert response.status_code == 202, response.text
        run = await wait_for_run(client, headers, pid, response.json()["id"])
        ids["run_id"] = run["id"]
        response = await client.get(f"{API}/projects/{pid}/extractions", headers=headers)
        ids["extraction_id"] = response.json()["items"][0]["id"]
    ids.update(await add_paused_webhook(app, client, headers, pid))
    return World(email, headers, ids)


async def audit_events(app: FastAPI, **where: Any) -> list[AuditEvent]:
    """Audit rows straight from the database (not through the API under test)."""
    async with app.state.sessionmaker() as session:
        query = select(AuditEvent).order_by(AuditEvent.created_at)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        return list((await session.scalars(query)).all())


def user_uuid(world: World) -> uuid.UUID:
    payload = jwt.decode(
        world.headers["Authorization"].removeprefix("Bearer "),
        options={"verify_signature": False},
    )
    return uuid.UUID(payload["sub"])
