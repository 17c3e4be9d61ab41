"""The audit log: sign-ins (failed ones too), every deletion, exports; read back by their owner."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from fastapi import FastAPI

from quarry.models import AuditEvent
from tests.security.helpers import API, World, app_routes, audit_events, make_world, user_uuid
from tests.support.api import PASSWORD, sign_up

SECRET_GUESS = "Tr0ub4dor&3-not-the-password"


def event_json(event: AuditEvent) -> str:
    return json.dumps({c.name: str(getattr(event, c.name)) for c in AuditEvent.__table__.columns})


async def test_sign_ins_are_recorded_without_passwords(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    world = await make_world(app, client, "ada@example.org", with_run=False)
    ada = user_uuid(world)

    wrong = await client.post(
        f"{API}/auth/token", data={"username": "ADA@example.org", "password": SECRET_GUESS}
    )
    unknown = await client.post(
        f"{API}/auth/token", data={"username": "eve@example.org", "password": SECRET_GUESS}
    )
    # Someone types their password into the email field.
    typo = await client.post(
        f"{API}/auth/token", data={"username": SECRET_GUESS, "password": SECRET_GUESS}
    )
    assert wrong.status_code == unknown.status_code == typo.status_code == 401
    good = await client.post(
        f"{API}/auth/token", data={"username": "ada@example.org", "password": PASSWORD}
    )
    assert good.status_code == 200

    events = [e for e in await audit_events(app) if e.action.startswith("auth.")]
    by_request = {e.request_id: e for e in events}
    failed = by_request[wrong.headers["x-request-id"]]
    assert (failed.action, failed.user_id, failed.target_type, failed.target_id) == (
        "auth.sign_in_failed",
        ada,
        "user",
        ada,
    )
    assert failed.detail == {"email": "ada@example.org", "reason": "wrong_password"}
    assert failed.ip == "127.0.0.1"
    stranger = by_request[unknown.headers["x-request-id"]]
    assert stranger.user_id is None
    assert stranger.detail == {"email": "eve@example.org", "reason": "unknown_email"}
    assert by_request[typo.headers["x-request-id"]].detail["email"] == "(not an email address)"
    success = by_request[good.headers["x-request-id"]]
    assert (success.action, success.user_id) == ("auth.sign_in", ada)
    # No password, right or wrong, is anywhere in the log.
    for event in events:
        assert SECRET_GUESS not in event_json(event)
        assert PASSWORD not in event_json(event)


async def test_deletions_and_exports_are_recorded_with_the_request(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    world = await make_world(app, client, "bea@example.org")
    bea = user_uuid(world)
    base = f"{API}/projects/{world.ids['project_id']}"

    csv = await client.get(f"{base}/export", params={"format": "csv"}, headers=world.headers)
    xlsx = await client.get(f"{base}/export", params={"format": "xlsx"}, headers=world.headers)
    deletions = {
        "variable": await client.delete(
            f"{base}/variables/{world.ids['variable_id']}", headers=world.headers
        ),
        "document": await client.delete(
            f"{base}/documents/{world.ids['document_id']}", headers=world.headers
        ),
        "project": await client.delete(base, headers=world.headers),
    }
    assert csv.status_code == xlsx.status_code == 200
    assert all(r.status_code == 204 for r in deletions.values())

    by_request = {e.request_id: e for e in await audit_events(app, user_id=bea)}
    export = by_request[csv.headers["x-request-id"]]
    assert (export.action, export.target_type, str(export.target_id)) == (
        "project.exported",
        "project",
        world.ids["project_id"],
    )
    assert export.detail == {"format": "csv", "layout": "wide"}
    assert by_request[xlsx.headers["x-request-id"]].detail == {
        "format": "xlsx",
        "layout": "wide+long",
    }
    expected = {
        "variable": ("variable.deleted", world.ids["variable_id"], {"name": "title"}),
        "document": ("document.deleted", world.ids["document_id"], {"filename": "bea.pdf"}),
        "project": ("project.deleted", world.ids["project_id"], {"name": "bea's project"}),
    }
    for kind, response in deletions.items():
        event = by_request[response.headers["x-request-id"]]
        action, target_id, detail = expected[kind]
        assert (event.action, event.target_type, str(event.target_id)) == (action, kind, target_id)
        assert event.detail == detail
        assert event.ip == "127.0.0.1"
    # The log outlives what it names: the project is gone, its events are not.
    assert len(await audit_events(app, target_id=uuid.UUID(world.ids["project_id"]))) == 3


async def test_every_delete_route_is_audited(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Read from the route table: a DELETE route added without an audit hook fails here."""
    deletes = [r for r in app_routes(app) if r.method == "DELETE"]
    assert len(deletes) >= 3
    for route in deletes:
        world = await make_world(app, client, f"del-{uuid.uuid4().hex[:8]}@example.org")
        unknown = set(route.params) - set(world.ids)
        assert not unknown, f"{route}: cannot make {unknown} yet; extend make_world"
        response = await client.delete(route.fill(world.ids), headers=world.headers)
        assert response.status_code == 204, f"{route}: {response.text}"
        events = await audit_events(app, request_id=response.headers["x-request-id"])
        assert [e.action.endswith((".deleted", ".removed")) for e in events] == [True], (
            f"{route} not audited"
        )
        assert events[0].user_id == user_uuid(world)


async def test_failed_actions_leave_no_audit_event(app: FastAPI, client: httpx.AsyncClient) -> None:
    world = await make_world(app, client, "cy@example.org", with_run=False)
    intruder = await sign_up(app, client, "mallory@example.org")
    base = f"{API}/projects/{world.ids['project_id']}"
    for response in (
        await client.delete(base, headers=intruder),
        await client.get(f"{base}/export", headers=intruder),
        await client.delete(f"{API}/projects/{uuid.uuid4()}", headers=world.headers),
    ):
        assert response.status_code == 404
        assert await audit_events(app, request_id=response.headers["x-request-id"]) == []


async def test_users_read_their_own_events_newest_first(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    world: World = await make_world(app, client, "dee@example.org", with_run=False)
    other = await sign_up(app, client, "eli@example.org")
    base = f"{API}/projects/{world.ids['project_id']}"
    for fmt in ("csv", "json", "xlsx"):
        await client.get(f"{base}/export", params={"format": fmt}, headers=world.headers)
    await client.post(
        f"{API}/auth/token", data={"username": "dee@example.org", "password": "guess-guess"}
    )
    await client.get(f"{base}/export", headers=other)  # 404: someone else's project

    response = await client.get(f"{API}/audit-events", headers=world.headers)
    assert response.status_code == 200, response.text
    page = response.json()
    actions = [e["action"] for e in page["items"]]
    assert actions == [
        "auth.sign_in_failed",  # aimed at Dee's account, so Dee sees it
        "project.exported",
        "project.exported",
        "project.exported",
        "member.added",  # make_world gives the project a member
        "auth.sign_in",
    ]
    assert page["total"] == 6 and page["limit"] == 50 and page["offset"] == 0
    assert [e["detail"].get("format") for e in page["items"][1:4]] == ["xlsx", "json", "csv"]
    first = page["items"][0]
    assert first["ip"] == "127.0.0.1" and len(first["request_id"]) == 32

    paged = (
        await client.get(
            f"{API}/audit-events", params={"limit": 2, "offset": 1}, headers=world.headers
        )
    ).json()
    assert [e["id"] for e in paged["items"]] == [e["id"] for e in page["items"][1:3]]
    assert paged["total"] == 6
    filtered = await client.get(
        f"{API}/audit-events", params={"action": "auth.sign_in"}, headers=world.headers
    )
    assert [e["action"] for e in filtered.json()["items"]] == ["auth.sign_in"]

    others = (await client.get(f"{API}/audit-events", headers=other)).json()
    assert [e["action"] for e in others["items"]] == ["auth.sign_in"]

    assert (await client.get(f"{API}/audit-events")).status_code == 401
    bad = await client.get(f"{API}/audit-events", params={"action": "x"}, headers=other)
    assert bad.status_code == 422


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_the_audit_log_is_read_only(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, f"{API}/audit-events")
    assert response.status_code == 405
