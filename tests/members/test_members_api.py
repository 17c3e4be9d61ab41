"""A project's members: its owners add existing users by email in a role, change the role and
remove them; every member sees who is in the team; the creator is always an owner. What
each role may then do on every route is tests/test_permissions.py."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.support.api import PASSWORD, create_project, sign_up
from tests.support.databases import BOTH_DATABASES
from tests.support.probes import add_user

API = "/api/v1"


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert " " in detail, detail
    for word in words:
        assert word in detail, detail


async def signed_in(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post(
        f"{API}/auth/token", data={"username": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def team(page: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [(m["email"], m["role"], m["is_creator"]) for m in page["items"]]


@BOTH_DATABASES
async def test_an_owner_adds_changes_and_removes_a_member(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await sign_up(app, client, "olga@example.org")
    project = await create_project(client, owner, "Shared review")
    base = f"{API}/projects/{project['id']}"
    await add_user(app, "rita@example.org")
    rita = await signed_in(client, "rita@example.org")
    assert (await client.get(base, headers=rita)).status_code == 404  # not a member yet

    added = await client.post(
        f"{base}/members", json={"email": " Rita@Example.org", "role": "reviewer"}, headers=owner
    )
    assert added.status_code == 201, added.text
    assert (added.json()["email"], added.json()["role"], added.json()["is_active"]) == (
        "rita@example.org",
        "reviewer",
        True,
    )
    rita_id = added.json()["user_id"]

    # Rita now finds the project, in her role, and sees who else is in it.
    listed = (await client.get(f"{API}/projects", headers=rita)).json()["items"]
    assert [(p["name"], p["role"], p["permissions"]) for p in listed] == [
        ("Shared review", "reviewer", ["read", "review"])
    ]
    own = (await client.get(f"{API}/projects", headers=owner)).json()["items"][0]
    assert (own["role"], own["permissions"]) == ("owner", ["read", "review", "edit", "manage"])
    for who in (owner, rita):
        page = (await client.get(f"{base}/members", headers=who)).json()
        assert team(page) == [
            ("olga@example.org", "owner", True),
            ("rita@example.org", "reviewer", False),
        ]
        assert page["total"] == 2

    changed = await client.patch(
        f"{base}/members/{rita_id}", json={"role": "editor"}, headers=owner
    )
    assert changed.status_code == 200 and changed.json()["role"] == "editor"
    read = (await client.get(base, headers=rita)).json()
    assert (read["role"], read["permissions"]) == ("editor", ["read", "review", "edit"])
    renamed = await client.patch(base, json={"name": "Renamed by Rita"}, headers=rita)
    assert renamed.status_code == 200, renamed.text  # an editor may

    removed = await client.delete(f"{base}/members/{rita_id}", headers=owner)
    assert removed.status_code == 204
    assert (await client.get(base, headers=rita)).status_code == 404
    assert (await client.get(f"{API}/projects", headers=rita)).json()["total"] == 0
    assert team((await client.get(f"{base}/members", headers=owner)).json()) == [
        ("olga@example.org", "owner", True)
    ]


@BOTH_DATABASES
async def test_members_requests_that_cannot_be_done_say_why(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await sign_up(app, client, "oona@example.org")
    admin = await sign_up(app, client, "root@example.org", is_admin=True)
    project = await create_project(client, owner, "Careful")
    base = f"{API}/projects/{project['id']}"
    owner_id = (await client.get(f"{API}/users/me", headers=owner)).json()["id"]
    await add_user(app, "sid@example.org")
    gone = await add_user(app, "gone@example.org")
    await client.patch(f"{API}/users/{gone}", json={"is_active": False}, headers=admin)
    ok = await client.post(
        f"{base}/members", json={"email": "sid@example.org", "role": "viewer"}, headers=owner
    )
    assert ok.status_code == 201

    cases = [
        ("POST", "/members", {"email": "nobody@example.org", "role": "viewer"}, 404, "No user has"),
        (
            "POST",
            "/members",
            {"email": "OONA@example.org", "role": "editor"},
            409,
            "already its owner",
        ),
        (
            "POST",
            "/members",
            {"email": "sid@example.org", "role": "editor"},
            409,
            "already a member",
        ),
        ("POST", "/members", {"email": "gone@example.org", "role": "viewer"}, 400, "deactivated"),
        ("PATCH", f"/members/{owner_id}", {"role": "viewer"}, 400, "always its owner"),
        ("DELETE", f"/members/{owner_id}", None, 400, "always its owner"),
        ("PATCH", f"/members/{gone}", {"role": "viewer"}, 404, "No such member"),
        ("DELETE", f"/members/{gone}", None, 404, "No such member"),
    ]
    for method, path, body, status, words in cases:
        response = await client.request(method, base + path, json=body, headers=owner)
        assert_error(response, status, words)
    bad_role = await client.post(
        f"{base}/members", json={"email": "sid@example.org", "role": "admin"}, headers=owner
    )
    assert bad_role.status_code == 422
    assert team((await client.get(f"{base}/members", headers=owner)).json()) == [
        ("oona@example.org", "owner", True),
        ("sid@example.org", "viewer", False),
    ]


@BOTH_DATABASES
async def test_a_second_owner_manages_the_team_but_not_the_creator(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    creator = await sign_up(app, client, "cleo@example.org")
    project = await create_project(client, creator, "Two owners")
    base = f"{API}/projects/{project['id']}"
    creator_id = (await client.get(f"{API}/users/me", headers=creator)).json()["id"]
    await add_user(app, "dora@example.org")
    await add_user(app, "eve@example.org")
    await client.post(
        f"{base}/members", json={"email": "dora@example.org", "role": "owner"}, headers=creator
    )
    dora = await signed_in(client, "dora@example.org")

    added = await client.post(
        f"{base}/members", json={"email": "eve@example.org", "role": "viewer"}, headers=dora
    )
    assert added.status_code == 201, added.text
    assert_error(await client.delete(f"{base}/members/{creator_id}", headers=dora), 400, "always")
    assert_error(
        await client.patch(f"{base}/members/{creator_id}", json={"role": "viewer"}, headers=dora),
        400,
        "always",
    )
    assert team((await client.get(f"{base}/members", headers=dora)).json()) == [
        ("cleo@example.org", "owner", True),
        ("dora@example.org", "owner", False),
        ("eve@example.org", "viewer", False),
    ]
    # A viewer may see the team but not change it, and is told which role could.
    eve = await signed_in(client, "eve@example.org")
    assert (await client.get(f"{base}/members", headers=eve)).status_code == 200
    refused = await client.post(
        f"{base}/members", json={"email": "cleo@example.org", "role": "viewer"}, headers=eve
    )
    assert_error(refused, 403, "needs the owner role", "you are a viewer")


@BOTH_DATABASES
async def test_an_owner_reads_who_did_what_in_the_project(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await sign_up(app, client, "fay@example.org")
    project = await create_project(client, owner, "Audited")
    other = await create_project(client, owner, "Elsewhere")
    base = f"{API}/projects/{project['id']}"
    gil = await add_user(app, "gil@example.org")
    await client.post(
        f"{base}/members", json={"email": "gil@example.org", "role": "viewer"}, headers=owner
    )
    await client.patch(f"{base}/members/{gil}", json={"role": "editor"}, headers=owner)
    await client.patch(f"{base}/members/{gil}", json={"role": "editor"}, headers=owner)  # no-op
    gil_headers = await signed_in(client, "gil@example.org")
    export = await client.get(f"{base}/export", params={"format": "csv"}, headers=gil_headers)
    assert export.status_code == 200
    # An editor may not read the project's log …
    assert_error(
        await client.get(f"{base}/audit-events", headers=gil_headers), 403, "needs the owner role"
    )
    await client.delete(f"{base}/members/{gil}", headers=owner)
    await client.get(f"{API}/projects/{other['id']}/export", headers=owner)  # another project

    page = (await client.get(f"{base}/audit-events", headers=owner)).json()
    assert [
        (e["action"], e["user_email"], e["target_id"], e["detail"].get("role"))
        for e in page["items"]
    ] == [
        ("member.removed", "fay@example.org", gil, "editor"),
        ("project.exported", "gil@example.org", project["id"], None),
        ("member.role_changed", "fay@example.org", gil, "editor"),
        ("member.added", "fay@example.org", gil, "viewer"),
    ]
    assert page["items"][2]["detail"]["previous_role"] == "viewer"
    assert {e["project_id"] for e in page["items"]} == {project["id"]}
    only = await client.get(
        f"{base}/audit-events", params={"action": "member.added"}, headers=owner
    )
    assert [e["action"] for e in only.json()["items"]] == ["member.added"]
    # … and once removed, not even see that the project exists.
    assert (await client.get(f"{base}/audit-events", headers=gil_headers)).status_code == 404
