"""Every route × every role: what each member of a project, and each kind of user, is told.

The routes come from the app itself (`route_permissions(app)`, `admin_routes(app)`), so a
route added tomorrow is either in the tables below — its permission chosen on purpose — or
fails `test_every_project_route_declares_the_intended_permission` /
`test_every_route_outside_projects_is_classified`. The requests are the ownership probes
(tests/support/probes.py), which succeed for the project's owner.

For each role a fresh project is made (by its creator, with a run, reviews, a finding, a
webhook and a member), the role's user is added to it, and every probe is sent: a role
whose permissions include the route's gets a 2xx, a member without it 403 naming the role
needed, a non-member 404 — on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from quarry.auth.deps import admin_routes, get_current_user
from quarry.projects.deps import route_permissions
from quarry.projects.roles import ROLE_PERMISSIONS, Permission, Role
from tests.security.helpers import app_routes
from tests.support.api import PASSWORD
from tests.support.databases import BOTH_DATABASES, database, settings
from tests.support.probes import (
    API,
    PROBES,
    PROJECT_PREFIX,
    PUBLIC_ROUTES,
    Ids,
    Probe,
    add_user,
    assert_not_found,
    fill,
    make_owner,
    visible_state,
)

__all__ = ["database", "settings"]  # the fixtures: SQLite, and PostgreSQL where marked

READ, REVIEW, EDIT, MANAGE = Permission.READ, Permission.REVIEW, Permission.EDIT, Permission.MANAGE

#: The role table (README "Teams and roles"), written out here so that changing what a role
#: may do is a deliberate edit of this file as well as of quarry/projects/roles.py.
ROLE_TABLE: dict[str, frozenset[Permission]] = {
    "owner": frozenset({READ, REVIEW, EDIT, MANAGE}),
    "editor": frozenset({READ, REVIEW, EDIT}),
    "reviewer": frozenset({READ, REVIEW}),
    "viewer": frozenset({READ}),
}
#: The role a refusal names: the least one holding the permission.
NEEDED = {READ: "viewer", REVIEW: "reviewer", EDIT: "editor", MANAGE: "owner"}

P = PROJECT_PREFIX
#: Every route under a project and the permission it is meant to need.
DECLARED: dict[tuple[str, str], Permission] = {
    ("GET", P): READ,
    ("PATCH", P): EDIT,
    ("DELETE", P): MANAGE,
    ("GET", f"{P}/members"): READ,
    ("POST", f"{P}/members"): MANAGE,
    ("PATCH", f"{P}/members/{{user_id}}"): MANAGE,
    ("DELETE", f"{P}/members/{{user_id}}"): MANAGE,
    ("GET", f"{P}/audit-events"): MANAGE,
    # Dual review: owners assign; reviewers take documents from the pool and review; the
    # resolution of a conflict needs the owner or the adjudicator (checked by the service).
    ("GET", f"{P}/reviewers"): READ,
    ("GET", f"{P}/assignments"): READ,
    ("POST", f"{P}/assignments"): MANAGE,
    ("POST", f"{P}/assignments/auto"): MANAGE,
    ("POST", f"{P}/assignments/claim"): REVIEW,
    ("GET", f"{P}/conflicts"): READ,
    ("POST", f"{P}/conflicts/{{document_id}}/{{variable_id}}/resolution"): REVIEW,
    ("GET", f"{P}/agreement"): READ,
    ("GET", f"{P}/variables"): READ,
    ("POST", f"{P}/variables"): EDIT,
    ("GET", f"{P}/variables/{{variable_id}}"): READ,
    ("PATCH", f"{P}/variables/{{variable_id}}"): EDIT,
    ("DELETE", f"{P}/variables/{{variable_id}}"): EDIT,
    ("GET", f"{P}/variables/{{variable_id}}/prompt"): READ,
    ("GET", f"{P}/variables/{{variable_id}}/prompt-versions"): READ,
    ("GET", f"{P}/codebook"): READ,
    ("PUT", f"{P}/codebook"): EDIT,
    ("GET", f"{P}/profiles"): READ,
    ("POST", f"{P}/profiles"): EDIT,
    ("GET", f"{P}/profiles/{{profile_id}}"): READ,
    ("PATCH", f"{P}/profiles/{{profile_id}}"): EDIT,
    ("DELETE", f"{P}/profiles/{{profile_id}}"): EDIT,
    ("POST", f"{P}/documents"): EDIT,
    ("GET", f"{P}/documents"): READ,
    ("GET", f"{P}/documents/{{document_id}}"): READ,
    ("DELETE", f"{P}/documents/{{document_id}}"): EDIT,
    ("GET", f"{P}/documents/{{document_id}}/text"): READ,
    ("GET", f"{P}/documents/{{document_id}}/pages/{{number}}/image"): READ,
    ("POST", f"{P}/runs"): EDIT,
    ("GET", f"{P}/runs"): READ,
    ("GET", f"{P}/runs/{{run_id}}"): READ,
    ("POST", f"{P}/runs/{{run_id}}/cancel"): EDIT,
    ("POST", f"{P}/runs/{{run_id}}/retry"): EDIT,
    ("GET", f"{P}/runs/{{run_id}}/logs"): READ,
    ("GET", f"{P}/runs/{{run_id}}/events"): READ,
    ("GET", f"{P}/extractions"): READ,
    ("GET", f"{P}/results"): READ,
    ("PUT", f"{P}/reviews/{{document_id}}/{{variable_id}}"): REVIEW,
    ("GET", f"{P}/reviews/{{document_id}}/{{variable_id}}"): READ,
    ("POST", f"{P}/extractions/{{extraction_id}}/match"): REVIEW,
    ("GET", f"{P}/export"): READ,
    ("POST", f"{P}/evaluation"): READ,  # computes figures from an uploaded CSV; stores nothing
    ("GET", f"{P}/evaluation"): READ,
    ("GET", f"{P}/reference-lists"): READ,
    ("POST", f"{P}/reference-lists"): EDIT,
    ("GET", f"{P}/reference-lists/{{list_id}}"): READ,
    ("PUT", f"{P}/reference-lists/{{list_id}}"): EDIT,
    ("DELETE", f"{P}/reference-lists/{{list_id}}"): EDIT,
    ("GET", f"{P}/reference-lists/{{list_id}}/rows"): READ,
    ("GET", f"{P}/cases"): READ,
    ("GET", f"{P}/findings"): READ,
    ("POST", f"{P}/findings/{{finding_id}}/resolution"): REVIEW,
    # Webhooks send the project's data out (and show where to): owners only.
    ("GET", f"{P}/webhooks"): MANAGE,
    ("POST", f"{P}/webhooks"): MANAGE,
    ("GET", f"{P}/webhooks/{{webhook_id}}"): MANAGE,
    ("PATCH", f"{P}/webhooks/{{webhook_id}}"): MANAGE,
    ("DELETE", f"{P}/webhooks/{{webhook_id}}"): MANAGE,
    ("GET", f"{P}/webhooks/{{webhook_id}}/deliveries"): MANAGE,
    ("GET", f"{P}/webhooks/{{webhook_id}}/deliveries/{{delivery_id}}"): MANAGE,
    ("POST", f"{P}/webhooks/{{webhook_id}}/deliveries/{{delivery_id}}/redeliver"): MANAGE,
}


def _new_email() -> str:
    return f"made-{uuid.uuid4().hex[:10]}@example.org"


#: Every route outside projects that needs a token, with requests that succeed for whoever
#: may call it, and who that is: "admin" (administrators only) or "user" (anyone signed in).
ACCOUNT_ROUTES: dict[tuple[str, str], tuple[str, Callable[[Ids], list[Probe]]]] = {
    ("GET", "/users"): ("admin", lambda _: [{}, {"params": {"limit": 1, "offset": 1}}]),
    ("POST", "/users"): (
        "admin",
        lambda _: [
            {"json": {"email": _new_email()}},
            {"json": {"email": _new_email(), "password": PASSWORD}},
        ],
    ),
    ("PATCH", "/users/{user_id}"): (
        "admin",
        lambda _: [{"json": {"is_admin": True}}, {"json": {"is_admin": False, "is_active": True}}],
    ),
    ("POST", "/users/{user_id}/password"): (
        "admin",
        lambda _: [{}, {"json": {"password": PASSWORD}}],
    ),
    ("GET", "/users/audit-events"): ("admin", lambda _: [{}]),
    ("GET", "/users/me"): ("user", lambda _: [{}]),
    ("GET", "/projects"): ("user", lambda _: [{}]),
    ("POST", "/projects"): ("user", lambda _: [{"json": {"name": "Mine"}}]),
    ("GET", "/audit-events"): ("user", lambda _: [{}, {"params": {"action": "auth.sign_in"}}]),
    # Last: it ends the sessions the token came from (the answer is a fresh one).
    ("PUT", "/users/me/password"): (
        "user",
        lambda _: [{"json": {"current_password": PASSWORD, "new_password": PASSWORD + "!"}}],
    ),
}


def _api_operations(app: FastAPI) -> dict[tuple[str, str], Permission | None]:
    """(METHOD, path under /api/v1) → declared project permission, for every API route."""
    return {
        (method.upper(), path.removeprefix(API)): permission
        for (method, path), permission in route_permissions(app).items()
        if path.startswith(API + "/") and method != "head"
    }


def test_the_role_table_is_the_one_documented() -> None:
    assert {role.value: perms for role, perms in ROLE_PERMISSIONS.items()} == ROLE_TABLE
    assert set(Role) == {Role(name) for name in ROLE_TABLE}


async def test_every_project_route_declares_the_intended_permission(app: FastAPI) -> None:
    under_project = {
        route: permission
        for route, permission in _api_operations(app).items()
        if route[1].startswith(PROJECT_PREFIX)
    }
    undeclared = sorted(route for route, permission in under_project.items() if permission is None)
    assert not undeclared, (
        f"Project routes that declare no permission: {undeclared}. Give each one "
        "ProjectRead, ProjectReview, ProjectEdit or ProjectManage (quarry/projects/deps.py)."
    )
    new = sorted(set(under_project) - set(DECLARED))
    assert not new, f"Project routes missing from DECLARED (choose their permission): {new}"
    stale = sorted(set(DECLARED) - set(under_project))
    assert not stale, f"DECLARED names routes that no longer exist: {stale}"
    changed = {
        route: (DECLARED[route].value, permission.value if permission else None)
        for route, permission in under_project.items()
        if permission is not DECLARED[route]
    }
    assert not changed, f"Routes whose permission changed (intended, declared): {changed}"
    assert set(PROBES) == set(DECLARED), "every project route needs a probe (probes.py)"


async def test_every_route_outside_projects_is_classified(app: FastAPI) -> None:
    operations = _api_operations(app)
    outside = {route for route in operations if not route[1].startswith(PROJECT_PREFIX)}
    assert not [r for r in outside if operations[r] is not None], "a project permission outside"
    admin_only = {(m.upper(), p.removeprefix(API)) for m, p in admin_routes(app)}
    authenticated = {
        (r.method, r.path.removeprefix(API)) for r in app_routes(app) if r.authenticated
    }
    found = {
        route: "admin" if route in admin_only else "user" if route in authenticated else "public"
        for route in outside
    }
    expected = {route: who for route, (who, _) in ACCOUNT_ROUTES.items()} | {
        route: "public" for route in PUBLIC_ROUTES
    }
    assert found == expected, (
        "Routes outside projects must be listed in ACCOUNT_ROUTES (or PUBLIC_ROUTES) with "
        "who may call them."
    )
    assert get_current_user  # the authenticated ones depend on it (app_routes reads that)


#: Routes whose probe cannot succeed even when allowed, and what they answer then (after
#: the permission check, which is what is under test).
ALLOWED_BUT: dict[tuple[str, str], int | dict[str, int]] = {
    # The probed run has finished, every extraction done: nothing to cancel nor retry.
    ("POST", f"{P}/runs/{{run_id}}/cancel"): 409,
    ("POST", f"{P}/runs/{{run_id}}/retry"): 409,
    # The project has one member in the reviewer role at most: no even split between two.
    ("POST", f"{P}/assignments/auto"): 400,
    # Past the role check, only the owner or the designated adjudicator resolves a conflict
    # (a 403 that says so), and the probed cell has none (409).
    ("POST", f"{P}/conflicts/{{document_id}}/{{variable_id}}/resolution"): {
        "owner": 409,
        "editor": 403,
        "reviewer": 403,
    },
}


def _expected(role: str, route: tuple[str, str]) -> int | None:
    """None: a 2xx; else the status the role must be told."""
    if role == "non-member":
        return 404
    if DECLARED[route] in ROLE_TABLE[role]:
        but = ALLOWED_BUT.get(route)
        return but.get(role) if isinstance(but, dict) else but
    return 403


def _refused_by_the_service(role: str, route: tuple[str, str]) -> bool:
    """A 403 given past the role check (the adjudicator rule), with its own sentence."""
    return DECLARED[route] in ROLE_TABLE.get(role, ()) and isinstance(ALLOWED_BUT.get(route), dict)


@BOTH_DATABASES
@pytest.mark.parametrize("role", ["owner", "editor", "reviewer", "viewer", "non-member"])
async def test_every_project_route_answers_each_role_as_the_table_says(
    app: FastAPI, client: httpx.AsyncClient, role: str
) -> None:
    creator = await make_owner(app, client, "creator@example.org", "Creator", with_run=True)
    if role == "owner":
        headers = creator.headers
    else:
        email = f"{role}@example.org"
        await add_user(app, email)
        if role != "non-member":
            response = await client.post(
                f"{API}/projects/{creator.ids['project_id']}/members",
                json={"email": email, "role": role},
                headers=creator.headers,
            )
            assert response.status_code == 201, response.text
        token = await client.post(
            f"{API}/auth/token", data={"username": email, "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    before = await visible_state(client, creator)

    # Deletions last, the project's own last of all, so that every probe finds its objects.
    order = sorted(DECLARED, key=lambda r: (r[0] == "DELETE", r[1] == PROJECT_PREFIX))
    checked = 0
    for method, template in order:
        permission = DECLARED[(method, template)]
        expected = _expected(role, (method, template))
        for probe in PROBES[(method, template)](creator.ids):
            response = await client.request(
                method, fill(template, creator.ids), headers=headers, **probe
            )
            what = f"{role}: {method} {template} {probe} answered {response.status_code}"
            if expected is None:
                assert 200 <= response.status_code < 300, f"{what}: {response.text}"
            elif expected == 404:
                assert_not_found(response, what)
            elif expected != 403:
                assert response.status_code == expected, f"{what}: {response.text}"
            elif _refused_by_the_service(role, (method, template)):
                assert response.status_code == 403, f"{what}: {response.text}"
                assert "adjudicator" in response.json()["detail"], what
            else:
                assert response.status_code == 403, f"{what}: {response.text}"
                body = response.json()
                assert body["error"] == "forbidden", what
                article = "an" if role[0] in "aeiou" else "a"
                assert f"needs the {NEEDED[permission]} role" in body["detail"], what
                assert f"you are {article} {role}" in body["detail"], what
            checked += 1
    assert checked >= len(DECLARED)
    if not any(p in ROLE_TABLE.get(role, ()) for p in (REVIEW, EDIT, MANAGE)):
        # Refused everything that writes: the project is exactly as it was.
        assert await visible_state(client, creator) == before


@BOTH_DATABASES
@pytest.mark.parametrize("who", ["admin", "non-admin", "deactivated"])
async def test_every_account_route_answers_each_kind_of_user(
    app: FastAPI, client: httpx.AsyncClient, who: str
) -> None:
    """Administrators may call every route here; other users the ones for everyone (403 on
    the rest, saying an administrator is needed); a deactivated user — an administrator
    until a moment ago — none (401)."""
    await add_user(app, "root@example.org", is_admin=True)
    root = await client.post(
        f"{API}/auth/token", data={"username": "root@example.org", "password": PASSWORD}
    )
    root_headers = {"Authorization": f"Bearer {root.json()['access_token']}"}
    email = f"{who}@example.org"
    user_id = await add_user(app, email, is_admin=who != "non-admin")
    token = await client.post(f"{API}/auth/token", data={"username": email, "password": PASSWORD})
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    if who == "deactivated":
        response = await client.patch(
            f"{API}/users/{user_id}", json={"is_active": False}, headers=root_headers
        )
        assert response.status_code == 200, response.text
    target = await add_user(app, "target@example.org")
    ids = {"user_id": target}

    for (method, template), (access, probes) in ACCOUNT_ROUTES.items():
        for probe in probes(ids):
            response = await client.request(method, fill(template, ids), headers=headers, **probe)
            what = f"{who}: {method} {template} {probe} answered {response.status_code}"
            if who == "deactivated":
                assert response.status_code == 401, f"{what}: {response.text}"
                assert "deactivated" in response.json()["detail"], what
            elif access == "admin" and who == "non-admin":
                assert response.status_code == 403, f"{what}: {response.text}"
                assert "administrator" in response.json()["detail"], what
            else:
                assert 200 <= response.status_code < 300, f"{what}: {response.text}"
    # The non-administrator changed nothing about the target.
    listed = (await client.get(f"{API}/users", headers=root_headers)).json()["items"]
    target_row = next(u for u in listed if u["id"] == target)
    if who != "admin":
        assert (target_row["is_admin"], target_row["password_set"]) == (False, True)
