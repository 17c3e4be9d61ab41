"""A review team on SQLite or PostgreSQL: an owner's project with a codebook of five types,
documents the fake model has answered, and members in every role (tests.support.members)."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
from fastapi import FastAPI

from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_project,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM
from tests.support.members import add_member
from tests.support.postgres import temporary_postgres_database

API = "/api/v1"

#: The codebook: name → (type, allowed values).
VARIABLES: dict[str, tuple[str, list[str]]] = {
    "design": ("category", ["RCT", "Cohort", "Case series"]),
    "randomised": ("boolean", []),
    "sample_size": ("integer", []),
    "start_date": ("date", []),
    "title": ("text", []),
}
#: What the model answers for each document (its marker is in its text).
MODEL: dict[str, dict[str, Any]] = {
    "ALPHA": {
        "design": "RCT",
        "randomised": True,
        "sample_size": 120,
        "start_date": "2019-05",
        "title": "Alpha trial",
    },
    "BETA": {
        "design": "Cohort",
        "randomised": False,
        "sample_size": 87,
        "start_date": "2018",
        "title": "Beta cohort",
    },
    "GAMMA": {
        "design": "Case series",
        "randomised": False,
        "sample_size": 12,
        "start_date": "2020-01-15",
        "title": "Gamma series",
    },
}
#: Members: name → role (their email is <name>@example.org).
MEMBERS = {
    "alice": "reviewer",
    "bob": "reviewer",
    "carol": "reviewer",
    "eddie": "editor",
    "vera": "viewer",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/quarry.db"
    else:
        with temporary_postgres_database("quarry_review") as url:
            yield url


@dataclass
class Team:
    app: FastAPI
    client: httpx.AsyncClient
    pid: str
    headers: dict[str, dict[str, str]]  # by name; "owner" too
    users: dict[str, str]  # user ids by name
    variables: dict[str, str]  # ids by name
    documents: dict[str, str]  # ids by marker (ALPHA.txt …)
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{API}/projects/{self.pid}{path}"

    async def call(self, who: str, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = await self.client.request(
            method, self.url(path), headers=self.headers[who], **kwargs
        )
        assert response.status_code == expect, f"{who} {method} {path}: {response.text}"
        return (
            response.json()
            if response.content and "json" in response.headers.get("content-type", "")
            else response
        )

    async def settings(self, **fields: Any) -> dict[str, Any]:
        return await self.call("owner", "PATCH", "", json=fields)  # type: ignore[no-any-return]

    async def assign(self, markers: list[str], a: str | None, b: str | None) -> Any:
        return await self.call(
            "owner",
            "POST",
            "/assignments",
            json={
                "document_ids": [self.documents[m] for m in markers],
                "reviewer_a": self.users[a] if a else None,
                "reviewer_b": self.users[b] if b else None,
            },
        )

    async def review(
        self, who: str, marker: str, variable: str, status: str, *value: Any, expect: int = 200
    ) -> Any:
        body: dict[str, Any] = {"status": status}
        if value:
            body["value"] = value[0]
        return await self.call(
            who,
            "PUT",
            f"/reviews/{self.documents[marker]}/{self.variables[variable]}",
            expect=expect,
            json=body,
        )

    async def cells(self, who: str) -> dict[tuple[str, str], dict[str, Any]]:
        """What `who` reads in GET …/extractions, by (marker, variable)."""
        page = await self.call(who, "GET", "/extractions", params={"limit": 500})
        markers = {v: k for k, v in self.documents.items()}
        names = {v: k for k, v in self.variables.items()}
        return {(markers[e["document_id"]], names[e["variable_id"]]): e for e in page["items"]}

    async def history(self, who: str, marker: str, variable: str) -> list[dict[str, Any]]:
        return await self.call(  # type: ignore[no-any-return]
            who, "GET", f"/reviews/{self.documents[marker]}/{self.variables[variable]}"
        )

    async def export_json(self, who: str) -> dict[str, dict[str, Any]]:
        """The wide JSON export `who` downloads, by marker."""
        rows = await self.call(who, "GET", "/export", params={"format": "json"})
        return {row["filename"].removesuffix(".txt"): row for row in rows}

    async def export_csv(self, who: str) -> str:
        response = await self.call(who, "GET", "/export", params={"format": "csv"})
        return str(response.text)

    async def workbook(self, who: str) -> Any:
        response = await self.call(who, "GET", "/export", params={"format": "xlsx"})
        return openpyxl.load_workbook(io.BytesIO(response.content))


def script_model(fake: FakeLLM, model: dict[str, dict[str, Any]] = MODEL) -> None:
    for marker, answers in model.items():
        for variable, value in answers.items():
            fake.script(
                variable=variable,
                contains=marker,
                reply={"found": True, "evidence": f"{marker} says {value}", "value": value},
            )


async def make_team(
    app: FastAPI,
    client: httpx.AsyncClient,
    fake: FakeLLM,
    model: dict[str, dict[str, Any]] = MODEL,
    variables: dict[str, tuple[str, list[str]]] = VARIABLES,
) -> Team:
    owner = await sign_up(app, client, "owner@example.org")
    pid = (await create_project(client, owner, "Dual review"))["id"]
    variable_ids = {}
    for name, (kind, allowed) in variables.items():
        spec: dict[str, Any] = {"name": name, "description": f"The study's {name}", "type": kind}
        if allowed:
            spec["allowed_values"] = allowed
        variable_ids[name] = (await add_variable(client, owner, pid, **spec))["id"]
    files = [
        (f"{marker}.txt", f"{marker}: a study report.\n".encode(), "text/plain") for marker in model
    ]
    response = await upload(client, owner, pid, files)
    assert response.status_code == 201, response.text
    documents = await wait_for_documents(client, owner, pid)
    script_model(fake, model)
    response = await client.post(f"{API}/projects/{pid}/runs", json={}, headers=owner)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, owner, pid, response.json()["id"])
    assert run["status"] == "completed", run
    headers = {"owner": owner}
    users = {}
    for name, role in MEMBERS.items():
        headers[name] = await add_member(app, client, owner, pid, f"{name}@example.org", role)
    for name, header in headers.items():
        users[name] = (await client.get(f"{API}/users/me", headers=header)).json()["id"]
    return Team(
        app,
        client,
        pid,
        headers,
        users,
        variable_ids,
        {d["filename"].removesuffix(".txt"): d["id"] for d in documents},
    )


@pytest.fixture
async def team(database_url: str, tmp_path: Path, fake_llm: FakeLLM) -> AsyncIterator[Team]:
    settings = make_settings(tmp_path, fake_llm, database_url=database_url)
    async with running_app(settings) as (app, client):
        yield await make_team(app, client, fake_llm)


def user_uuid(team: Team, name: str) -> uuid.UUID:
    return uuid.UUID(team.users[name])
