"""Only a project's members can see or touch anything in it.

User B, who is not a member, probing user A's project gets 404 — never 403 (which would
confirm the project exists) and never 2xx — on every route under
/api/v1/projects/{project_id}, and so does B using their own project id with A's variable,
document, run or member ids. The route table is read from the OpenAPI schema, so a route
added without a request in tests/support/probes.py's PROBES fails
`test_every_project_route_is_probed` until someone decides how to probe it. (What members in
each role may do is tests/test_permissions.py.)
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI

from tests.support.probes import (
    API,
    PROBES,
    PROJECT_PREFIX,
    PUBLIC_ROUTES,
    Owner,
    api_routes,
    assert_not_found,
    child_params,
    fill,
    make_owner,
    visible_state,
)


@pytest.fixture
async def owners(app: FastAPI, client: httpx.AsyncClient) -> tuple[Owner, Owner]:
    alice = await make_owner(app, client, "alice@example.org", "Alice", with_run=True)
    bob = await make_owner(app, client, "bob@example.org", "Bob", with_run=True)
    return alice, bob


async def test_every_project_route_is_probed(app: FastAPI) -> None:
    under_project = {r for r in api_routes(app) if r[1].startswith(PROJECT_PREFIX)}
    unprobed = under_project - set(PROBES)
    assert not unprobed, (
        f"Routes without an ownership probe: {sorted(unprobed)}. Add requests for them to PROBES "
        "so another user's access is checked."
    )
    stale = set(PROBES) - under_project
    assert not stale, f"PROBES names routes that no longer exist: {sorted(stale)}"


async def test_the_probes_reach_the_owners_objects(app: FastAPI, client: httpx.AsyncClient) -> None:
    """The owner sending the same probes is not told 404: B's 404s come from the ownership
    check, not from a probe that could never have worked."""
    alice = await make_owner(app, client, "alice@example.org", "Alice", with_run=True)
    # Deletions last, the project's own last of all, so every probe finds its objects.
    order = sorted(PROBES, key=lambda r: (r[0] == "DELETE", r[1] == "/projects/{project_id}"))
    for method, template in order:
        for probe in PROBES[(method, template)](alice.ids):
            response = await client.request(
                method, fill(template, alice.ids), headers=alice.headers, **probe
            )
            what = f"A: {method} {template} {probe} answered {response.status_code}"
            assert response.status_code != 404, f"{what}: {response.text}"
            assert response.status_code < 500, f"{what}: {response.text}"


async def test_another_users_project_is_404_on_every_route(
    client: httpx.AsyncClient, owners: tuple[Owner, Owner]
) -> None:
    alice, bob = owners
    before = await visible_state(client, alice)

    for (method, template), probes in PROBES.items():
        for probe in probes(alice.ids):
            response = await client.request(
                method, fill(template, alice.ids), headers=bob.headers, **probe
            )
            assert_not_found(response, f"B: {method} {template} {probe} with A's ids")

    # Nothing B tried changed anything A can see: no rename, no deletion, no new run or review.
    assert await visible_state(client, alice) == before


async def test_own_project_with_another_users_child_ids_is_404(
    client: httpx.AsyncClient, owners: tuple[Owner, Owner]
) -> None:
    alice, bob = owners
    before = await visible_state(client, alice)
    bob_before = await visible_state(client, bob)

    for (method, template), probes in PROBES.items():
        children = child_params(template)
        if not children:
            continue
        # Each of A's child ids in turn, the others B's own, under B's project: B's project
        # must not become a window onto A's objects.
        for child in children:
            ids = {**bob.ids, child: alice.ids[child]}
            for probe in probes(bob.ids):
                response = await client.request(
                    method, fill(template, ids), headers=bob.headers, **probe
                )
                assert_not_found(response, f"B: {method} {template} {probe} with A's {child}")

    base = f"{API}/projects/{bob.ids['project_id']}"
    # A run in B's project over A's document or variable.
    for body in (
        {"document_ids": [alice.ids["document_id"]]},
        {"variable_ids": [alice.ids["variable_id"]]},
    ):
        response = await client.post(f"{base}/runs", json=body, headers=bob.headers)
        assert_not_found(response, f"B: POST runs {body}")
    # Filtering B's extractions by A's ids finds nothing of A's.
    for key in ("run_id", "document_id", "variable_id"):
        response = await client.get(
            f"{base}/extractions", params={key: alice.ids[key]}, headers=bob.headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["items"] == [] and response.json()["total"] == 0

    assert await visible_state(client, alice) == before
    # B's own project is unchanged too: every request above was refused.
    assert await visible_state(client, bob) == bob_before


async def test_every_api_route_but_sign_in_needs_a_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    ids = {
        name: str(uuid.uuid4())
        for name in (
            "project_id",
            "variable_id",
            "document_id",
            "run_id",
            "profile_id",
            "webhook_id",
            "delivery_id",
            "list_id",
            "extraction_id",
            "finding_id",
            "user_id",
            "owner_id",
        )
    } | {"number": "1", "spare_email": "nobody@example.org", "filename": "x.pdf"}
    routes = api_routes(app)
    assert routes >= PUBLIC_ROUTES
    for method, template in sorted(routes - PUBLIC_ROUTES):
        probes = PROBES[(method, template)](ids) if (method, template) in PROBES else [{}]
        for probe in probes:
            for headers in ({}, {"Authorization": "Bearer not-a-token"}):
                response = await client.request(
                    method, fill(template, ids), headers=headers, **probe
                )
                assert response.status_code == 401, f"{method} {template}: {response.text}"
                assert response.headers.get("www-authenticate") == "Bearer"
                assert response.json()["error"] == "unauthorized"
