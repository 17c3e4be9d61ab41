"""User administration: administrators create users (with a password or a one-time link),
deactivate and reactivate them, make and unmake administrators, reset passwords; everyone
changes their own. Tokens stop working the moment the account or its password says so."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from quarry.errors import Conflict
from quarry.models import AuditEvent, User
from quarry.users import service as users_service
from quarry.users.schemas import UserUpdate
from tests.support.api import PASSWORD, create_project, sign_up
from tests.support.databases import BOTH_DATABASES

API = "/api/v1"
ADMIN = "admin@example.org"
NEW_PASSWORD = "a brand new passphrase"


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(f"{API}/auth/token", data={"username": email, "password": password})


def bearer(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def assert_error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    detail: str = response.json()["detail"]
    assert " " in detail, detail
    for word in words:
        assert word in detail, detail
    return detail


async def create(client: httpx.AsyncClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post(f"{API}/users", json=body, headers=admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def events(app: FastAPI) -> list[AuditEvent]:
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(select(AuditEvent).order_by(AuditEvent.created_at)))


@BOTH_DATABASES
async def test_an_invited_user_sets_their_password_with_the_link(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await sign_up(app, client, ADMIN, is_admin=True)
    created = await create(client, admin, email="  Nia@Example.org ")
    assert created["email"] == "nia@example.org"
    assert (created["is_active"], created["is_admin"], created["password_set"]) == (
        True,
        False,
        False,
    )
    link = created["password_link"]
    assert link["path"] == f"/#/set-password?token={link['token']}"
    assert created["password_link_expires_at"] == link["expires_at"]

    # Until the link is used there is no password to sign in with, not even an empty one.
    for password in ("quarry-timing-equaliser", link["token"]):
        assert (await sign_in(client, "nia@example.org", password)).status_code == 401

    short = await client.post(
        f"{API}/auth/password", json={"token": link["token"], "password": "short"}
    )
    assert_error(short, 400, "at least 8 characters")
    used = await client.post(
        f"{API}/auth/password", json={"token": link["token"], "password": NEW_PASSWORD}
    )
    nia = bearer(used)  # signed in at once
    me = (await client.get(f"{API}/users/me", headers=nia)).json()
    assert (me["email"], me["is_admin"]) == ("nia@example.org", False)
    assert (await sign_in(client, "nia@example.org", NEW_PASSWORD)).status_code == 200

    again = await client.post(
        f"{API}/auth/password", json={"token": link["token"], "password": "another passphrase"}
    )
    assert_error(again, 400, "used already", "administrator")
    forged = await client.post(
        f"{API}/auth/password", json={"token": "x" * 43, "password": NEW_PASSWORD}
    )
    assert forged.json() == again.json()

    listed = (await client.get(f"{API}/users", headers=admin)).json()
    assert [
        (u["email"], u["password_set"], u["password_link_expires_at"]) for u in listed["items"]
    ] == [
        (ADMIN, True, None),
        ("nia@example.org", True, None),
    ]
    # The link exists only in the administrator's answer: neither the user's row nor the
    # audit log holds it.
    async with app.state.sessionmaker() as session:
        row = (await session.scalars(select(User).where(User.email == "nia@example.org"))).one()
    assert link["token"] not in json.dumps(
        {c.name: str(getattr(row, c.name)) for c in User.__table__.columns}
    )
    logged = [(e.action, e.detail) for e in await events(app)]
    assert (
        "user.created",
        {"email": "nia@example.org", "is_admin": False, "with_link": True},
    ) in logged
    assert ("user.password_set", {"email": "nia@example.org"}) in logged
    assert link["token"] not in json.dumps(logged)


@BOTH_DATABASES
async def test_an_administrator_can_give_a_first_password_instead(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await sign_up(app, client, ADMIN, is_admin=True)
    created = await create(
        client, admin, email="omar@example.org", password=PASSWORD, is_admin=True
    )
    assert created["password_link"] is None
    assert (created["password_set"], created["is_admin"]) == (True, True)
    omar = bearer(await sign_in(client, "omar@example.org", PASSWORD))
    assert (await client.get(f"{API}/users/me", headers=omar)).json()["is_admin"] is True
    assert (await client.get(f"{API}/users", headers=omar)).status_code == 200


async def test_bad_user_input_gets_a_sentence(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await sign_up(app, client, ADMIN, is_admin=True)
    await create(client, admin, email="pat@example.org")
    cases = [
        ({"email": "not-an-email"}, 400, "not a valid email"),
        ({"email": "PAT@example.org"}, 409, "already exists"),
        ({"email": "quin@example.org", "password": "short"}, 400, "at least 8"),
        ({"email": "quin@example.org", "password": "x" * 1025}, 400, "at most 1024"),
    ]
    for body, status, words in cases:
        assert_error(await client.post(f"{API}/users", json=body, headers=admin), status, words)
    missing = await client.patch(f"{API}/users/{uuid.uuid4()}", json={}, headers=admin)
    assert_error(missing, 404, "No such user")
    assert (await client.post(f"{API}/users", json={}, headers=admin)).status_code == 422


async def test_non_administrators_are_told_who_can(app: FastAPI, client: httpx.AsyncClient) -> None:
    await sign_up(app, client, ADMIN, is_admin=True)
    regular = await sign_up(app, client, "ria@example.org")
    me = (await client.get(f"{API}/users/me", headers=regular)).json()
    assert me["is_admin"] is False
    for method, path, body in [
        ("GET", "/users", None),
        ("POST", "/users", {"email": "sam@example.org"}),
        ("PATCH", f"/users/{me['id']}", {"is_admin": True}),
        ("POST", f"/users/{me['id']}/password", {}),
        ("GET", "/users/audit-events", None),
    ]:
        response = await client.request(method, API + path, json=body, headers=regular)
        assert_error(response, 403, "administrator")
        assert response.json()["error"] == "forbidden"
    # Nothing happened: Ria is still no administrator, and no Sam exists.
    assert (await client.get(f"{API}/users/me", headers=regular)).json()["is_admin"] is False
    assert (await sign_in(client, "sam@example.org", PASSWORD)).status_code == 401


@BOTH_DATABASES
async def test_a_deactivated_users_token_answers_401_on_the_next_request(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await sign_up(app, client, ADMIN, is_admin=True)
    tess = await sign_up(app, client, "tess@example.org")
    project = await create_project(client, tess, "Tess's project")
    tess_id = (await client.get(f"{API}/users/me", headers=tess)).json()["id"]
    assert (await client.get(f"{API}/projects", headers=tess)).status_code == 200

    response = await client.patch(
        f"{API}/users/{tess_id}", json={"is_active": False}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False

    for method, path in [
        ("GET", "/projects"),
        ("GET", f"/projects/{project['id']}"),
        ("GET", "/users/me"),
    ]:
        refused = await client.request(method, API + path, headers=tess)
        assert_error(refused, 401, "deactivated")
        assert refused.headers["www-authenticate"] == "Bearer"
    assert (await sign_in(client, "tess@example.org", PASSWORD)).status_code == 401

    # Reactivated: Tess signs in again, but the old token stays dead.
    response = await client.patch(f"{API}/users/{tess_id}", json={"is_active": True}, headers=admin)
    assert response.json()["is_active"] is True
    assert_error(await client.get(f"{API}/projects", headers=tess), 401, "sign in again")
    again = bearer(await sign_in(client, "tess@example.org", PASSWORD))
    listed = (await client.get(f"{API}/projects", headers=again)).json()
    assert [p["id"] for p in listed["items"]] == [project["id"]]  # her work is all there
    logged = [e.action for e in await events(app) if e.target_id == uuid.UUID(tess_id)]
    assert "user.deactivated" in logged and "user.reactivated" in logged


@BOTH_DATABASES
async def test_an_administrators_reset_ends_the_old_password_and_every_session(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await sign_up(app, client, ADMIN, is_admin=True)
    uma = await sign_up(app, client, "uma@example.org")
    uma_id = (await client.get(f"{API}/users/me", headers=uma)).json()["id"]

    # To a password the administrator chooses.
    response = await client.post(
        f"{API}/users/{uma_id}/password", json={"password": NEW_PASSWORD}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["password_link"] is None
    assert_error(await client.get(f"{API}/users/me", headers=uma), 401, "sign in again")
    assert (await sign_in(client, "uma@example.org", PASSWORD)).status_code == 401
    uma = bearer(await sign_in(client, "uma@example.org", NEW_PASSWORD))

    # To nothing, with a link only Uma gets.
    response = await client.post(f"{API}/users/{uma_id}/password", json={}, headers=admin)
    body = response.json()
    assert (body["password_set"], body["password_link"] is not None) == (False, True)
    assert (await client.get(f"{API}/users/me", headers=uma)).status_code == 401
    assert (await sign_in(client, "uma@example.org", NEW_PASSWORD)).status_code == 401
    token = body["password_link"]["token"]
    response = await client.post(
        f"{API}/auth/password", json={"token": token, "password": "third time lucky"}
    )
    bearer(response)
    assert (await sign_in(client, "uma@example.org", "third time lucky")).status_code == 200

    # An administrator's own password is changed with the current one, not reset.
    admin_id = (await client.get(f"{API}/users/me", headers=admin)).json()["id"]
    own = await client.post(f"{API}/users/{admin_id}/password", json={}, headers=admin)
    assert_error(own, 400, "current one")
    resets = [e for e in await events(app) if e.action == "user.password_reset"]
    assert [e.detail["with_link"] for e in resets] == [False, True]
    assert NEW_PASSWORD not in json.dumps([e.detail for e in await events(app)])


@BOTH_DATABASES
async def test_everyone_changes_their_own_password_with_the_current_one(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    here = await sign_up(app, client, "vic@example.org")
    elsewhere = bearer(await sign_in(client, "vic@example.org", PASSWORD))

    wrong = await client.put(
        f"{API}/users/me/password",
        json={"current_password": "not the one", "new_password": NEW_PASSWORD},
        headers=here,
    )
    assert_error(wrong, 400, "current password is not right")
    # A wrong current password is no reason to sign anyone out.
    assert (await client.get(f"{API}/users/me", headers=here)).status_code == 200
    short = await client.put(
        f"{API}/users/me/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=here,
    )
    assert_error(short, 400, "at least 8")

    changed = await client.put(
        f"{API}/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=here,
    )
    fresh = bearer(changed)  # this session goes on with a new token
    assert (await client.get(f"{API}/users/me", headers=fresh)).status_code == 200
    for old in (here, elsewhere):  # every token from before the change is dead
        assert_error(await client.get(f"{API}/users/me", headers=old), 401, "sign in again")
    assert (await sign_in(client, "vic@example.org", PASSWORD)).status_code == 401
    assert (await sign_in(client, "vic@example.org", NEW_PASSWORD)).status_code == 200
    assert "user.password_changed" in [e.action for e in await events(app)]


@BOTH_DATABASES
async def test_there_is_always_an_active_administrator(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await sign_up(app, client, ADMIN, is_admin=True)
    admin_id = (await client.get(f"{API}/users/me", headers=admin)).json()["id"]
    for change, words in [
        ({"is_active": False}, "cannot be deactivated"),
        ({"is_admin": False}, "cannot be made a regular user"),
        ({"is_admin": False, "is_active": False}, "last active administrator"),
    ]:
        response = await client.patch(f"{API}/users/{admin_id}", json=change, headers=admin)
        assert_error(response, 409, "You are the last active administrator", words)
    me = (await client.get(f"{API}/users/me", headers=admin)).json()
    assert (me["is_active"], me["is_admin"]) == (True, True)

    # With a second administrator the first may step down; then the second is the last.
    wes = await create(client, admin, email="wes@example.org", password=PASSWORD, is_admin=True)
    response = await client.patch(
        f"{API}/users/{admin_id}", json={"is_admin": False}, headers=admin
    )
    assert response.status_code == 200 and response.json()["is_admin"] is False
    assert (await client.get(f"{API}/users", headers=admin)).status_code == 403
    wes_headers = bearer(await sign_in(client, "wes@example.org", PASSWORD))
    response = await client.patch(
        f"{API}/users/{wes['id']}", json={"is_active": False}, headers=wes_headers
    )
    assert_error(response, 409, "You are the last active administrator")
    # A deactivated administrator does not count as one.
    await client.patch(f"{API}/users/{admin_id}", json={"is_admin": True}, headers=wes_headers)
    await client.patch(f"{API}/users/{admin_id}", json={"is_active": False}, headers=wes_headers)
    response = await client.patch(
        f"{API}/users/{wes['id']}", json={"is_admin": False}, headers=wes_headers
    )
    assert_error(response, 409, "last active administrator")
    granted = [e.action for e in await events(app) if e.action.startswith("user.admin")]
    assert granted == ["user.admin_revoked", "user.admin_granted"]


@BOTH_DATABASES
async def test_two_administrators_demoting_each_other_at_once_leave_one(app: FastAPI) -> None:
    """The second change waits for the first and then counts it: one of them stays."""
    async with app.state.sessionmaker() as setup:
        xia = User(email="xia@example.org", password_hash=None, is_admin=True)
        yan = User(email="yan@example.org", password_hash=None, is_admin=True)
        setup.add_all([xia, yan])
        await setup.commit()
    demote = UserUpdate(is_admin=False)
    first = app.state.sessionmaker()
    second = app.state.sessionmaker()
    try:
        xia_1, yan_1 = await first.get(User, xia.id), await first.get(User, yan.id)
        assert xia_1 and yan_1
        await users_service.update_user(first, xia_1, yan_1, demote)  # not committed yet
        xia_2, yan_2 = await second.get(User, xia.id), await second.get(User, yan.id)
        assert xia_2 and yan_2
        meanwhile = asyncio.create_task(users_service.update_user(second, yan_2, xia_2, demote))
        await asyncio.sleep(0.2)  # give it the chance to get ahead, which it must not take
        assert not meanwhile.done(), "the second change did not wait for the first"
        await first.commit()
        with pytest.raises(Conflict, match="last active administrator"):
            await asyncio.wait_for(meanwhile, timeout=60)
        await second.rollback()
    finally:
        await first.close()
        await second.close()
    async with app.state.sessionmaker() as session:
        admins = (await session.scalars(select(User.email).where(User.is_admin.is_(True)))).all()
    assert admins == ["xia@example.org"]


async def test_administrators_read_the_user_events(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await sign_up(app, client, ADMIN, is_admin=True)
    created = await create(client, admin, email="zed@example.org")
    await client.patch(f"{API}/users/{created['id']}", json={"is_active": False}, headers=admin)
    await client.post(f"{API}/users/{created['id']}/password", json={}, headers=admin)
    await create_project(client, admin, "Not a user event")
    await client.get(f"{API}/projects", headers=admin)

    page = (await client.get(f"{API}/users/audit-events", headers=admin)).json()
    assert [(e["action"], e["user_email"], e["target_id"]) for e in page["items"]] == [
        ("user.password_reset", ADMIN, created["id"]),
        ("user.deactivated", ADMIN, created["id"]),
        ("user.created", ADMIN, created["id"]),
    ]
    assert page["total"] == 3
    assert all(e["detail"]["email"] == "zed@example.org" for e in page["items"])
    only = (
        await client.get(
            f"{API}/users/audit-events", params={"action": "user.created"}, headers=admin
        )
    ).json()
    assert [e["action"] for e in only["items"]] == ["user.created"]
    # A kind that is not about users is not in this view, even asked for by name.
    signins = (
        await client.get(
            f"{API}/users/audit-events", params={"action": "auth.sign_in"}, headers=admin
        )
    ).json()
    assert signins == {"items": [], "total": 0, "limit": 50, "offset": 0}
