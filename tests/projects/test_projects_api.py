"""Projects through the API: create, read, list in pages, update in part, delete with contents."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from quarry.models import (
    Document,
    DocumentPage,
    Extraction,
    Project,
    PromptVersion,
    Review,
    Run,
    RunEvent,
    Variable,
)
from quarry.settings import Settings
from tests.support.api import (
    add_variable,
    create_project,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)

PROJECTS = "/api/v1/projects"


@pytest.fixture
async def headers(app: FastAPI, client: httpx.AsyncClient) -> dict[str, str]:
    return await sign_up(app, client, "owner@example.org")


def assert_error(response: httpx.Response, status: int, code: str, *needles: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and " " in body["detail"]
    for needle in needles:
        assert needle in body["detail"], body["detail"]


async def project_list(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> dict[str, Any]:
    response = await client.get(PROJECTS, params=params, headers=headers)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_create_read_update_and_delete(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(
        PROJECTS,
        json={"name": "  Statin review  ", "description": "Chart abstraction"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    project = response.json()
    assert project["name"] == "Statin review"  # surrounding spaces trimmed
    assert project["description"] == "Chart abstraction"
    assert project["llm_model"] is None and project["llm_temperature"] is None
    assert project["group_size"] == 1
    url = f"{PROJECTS}/{project['id']}"

    read = await client.get(url, headers=headers)
    assert read.status_code == 200 and read.json() == project

    response = await client.patch(url, json={"name": "Statin & aspirin review"}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Statin & aspirin review"
    assert (await client.get(url, headers=headers)).json()["name"] == "Statin & aspirin review"

    response = await client.delete(url, headers=headers)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_error(await client.get(url, headers=headers), 404, "not_found", "project")
    assert_error(await client.delete(url, headers=headers), 404, "not_found")
    assert_error(await client.patch(url, json={"name": "Back"}, headers=headers), 404, "not_found")
    assert (await project_list(client, headers))["total"] == 0


# (a request body, the field the answer names)
MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "Ok", "group_size": 0}, "group_size"),
    ({"name": "Ok", "llm_temperature": 3}, "llm_temperature"),
    ({"name": "Ok", "api_key": "sk-secret"}, "api_key"),  # keys are never stored in a project
]


async def test_a_malformed_project_is_422_naming_the_field(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for body, field in MALFORMED:
        response = await client.post(PROJECTS, json=body, headers=headers)
        try:
            assert_error(response, 422, "validation_error", field)
        except AssertionError as exc:
            raise AssertionError(f"{body}: {exc}") from exc
    assert (await project_list(client, headers))["total"] == 0


async def test_patch_changes_only_the_fields_sent(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    project = await create_project(client, headers, "Trials")
    url = f"{PROJECTS}/{project['id']}"

    response = await client.patch(
        url, json={"llm_model": "gpt-4o", "llm_temperature": 0.3, "group_size": 4}, headers=headers
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["llm_model"], updated["llm_temperature"], updated["group_size"]) == (
        "gpt-4o",
        0.3,
        4,
    )
    assert updated["name"] == "Trials" and updated["description"] == project["description"]
    assert updated["created_at"] == project["created_at"]
    assert updated["updated_at"] >= project["updated_at"]

    response = await client.patch(url, json={"description": "Now described"}, headers=headers)
    assert response.json()["llm_model"] == "gpt-4o" and response.json()["group_size"] == 4

    # null on an optional setting goes back to the server default; on a required field it is
    # ignored rather than blanking the project.
    response = await client.patch(
        url,
        json={"llm_model": None, "name": None, "description": None, "group_size": None},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    after = response.json()
    assert after["llm_model"] is None
    assert after["name"] == "Trials" and after["group_size"] == 4
    assert after["description"] == "Now described" and after["llm_temperature"] == 0.3

    # An empty patch changes nothing; a bad one changes nothing either.
    assert (await client.patch(url, json={}, headers=headers)).json() == after
    assert_error(
        await client.patch(url, json={"group_size": 99}, headers=headers),
        422,
        "validation_error",
        "group_size",
    )
    assert (await client.get(url, headers=headers)).json() == after


async def test_the_list_is_paginated(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    names = [f"Project {n}" for n in range(5)]
    for name in names:
        await create_project(client, headers, name)

    everything = await project_list(client, headers)
    assert set(everything) == {"items", "total", "limit", "offset"}
    assert everything["total"] == 5 and everything["limit"] == 50 and everything["offset"] == 0
    assert sorted(p["name"] for p in everything["items"]) == names

    pages = [await project_list(client, headers, limit=2, offset=o) for o in (0, 2, 4)]
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert all(p["total"] == 5 and p["limit"] == 2 for p in pages)
    assert [p["offset"] for p in pages] == [0, 2, 4]
    # The pages are consecutive slices of one order: no project twice, none missing.
    assert [p["id"] for page in pages for p in page["items"]] == [
        p["id"] for p in everything["items"]
    ]
    beyond = await project_list(client, headers, limit=2, offset=10)
    assert beyond["items"] == [] and beyond["total"] == 5


async def test_out_of_range_paging_is_422(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for params, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 10000}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
    ):
        response = await client.get(PROJECTS, params=params, headers=headers)
        try:
            assert_error(response, 422, "validation_error", field)
        except AssertionError as exc:
            raise AssertionError(f"{params}: {exc}") from exc
    # The same paging rules hold on every list, e.g. a project's documents.
    pid = (await create_project(client, headers, "Paged"))["id"]
    response = await client.get(f"{PROJECTS}/{pid}/documents?limit=0", headers=headers)
    assert_error(response, 422, "validation_error", "limit")


async def test_users_only_list_their_own_projects(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await create_project(client, headers, "Mine")
    other = await sign_up(app, client, "other@example.org")
    assert (await project_list(client, other)) == {
        "items": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
    }
    await create_project(client, other, "Theirs")
    assert [p["name"] for p in (await project_list(client, headers))["items"]] == ["Mine"]


async def count(app: FastAPI, model: type[Any], *where: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def test_deleting_a_project_deletes_everything_in_it(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], settings: Settings
) -> None:
    doomed = (await create_project(client, headers, "Doomed"))["id"]
    kept = (await create_project(client, headers, "Kept"))["id"]
    for pid in (doomed, kept):
        variable = await add_variable(
            client, headers, pid, name="title", description="Title", type="text"
        )
        text = f"Study in project {pid}.\n".encode()
        response = await upload(client, headers, pid, [("study.txt", text, "text/plain")])
        document = response.json()["items"][0]
        await wait_for_documents(client, headers, pid)
        response = await client.post(f"{PROJECTS}/{pid}/runs", json={}, headers=headers)
        await wait_for_run(client, headers, pid, response.json()["id"])
        response = await client.put(
            f"{PROJECTS}/{pid}/reviews/{document['id']}/{variable['id']}",
            json={"status": "corrected", "value": "A title"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        if pid == doomed:
            doomed_ids = {"variable": variable["id"], "document": document["id"]}
            doomed_blob = settings.storage_dir / "sha256" / document["sha256"][:2]
            doomed_blob /= document["sha256"]
    counts_before = {m: await count(app, m) for m in (Variable, Document, Run, Review)}
    assert set(counts_before.values()) == {2}
    assert doomed_blob.exists()

    response = await client.delete(f"{PROJECTS}/{doomed}", headers=headers)
    assert response.status_code == 204, response.text

    for path in (
        "",
        "/variables",
        f"/variables/{doomed_ids['variable']}",
        "/documents",
        f"/documents/{doomed_ids['document']}/text",
        "/runs",
        "/extractions",
        "/export",
    ):
        assert_error(
            await client.get(f"{PROJECTS}/{doomed}{path}", headers=headers), 404, "not_found"
        )
    # Gone from the database, not just hidden, and the uploaded file is gone from disk.
    assert await count(app, Project) == 1
    for model in (Variable, Document, Run, Review, Extraction):
        assert await count(app, model) == 1, model.__name__
    assert await count(app, PromptVersion) == 1
    assert await count(app, DocumentPage) == 1
    assert await count(app, RunEvent) == await count(
        app, RunEvent, RunEvent.run_id.in_(select(Run.id).where(Run.project_id == uuid.UUID(kept)))
    )
    assert not doomed_blob.exists()

    # The other project is untouched.
    response = await client.get(f"{PROJECTS}/{kept}/export?format=json", headers=headers)
    assert response.status_code == 200
    assert [row["title"] for row in response.json()] == ["A title"]
