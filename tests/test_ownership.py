"""Only a project's owner can see or touch anything in it.

User B probing user A's project gets 404 — never 403 (which would confirm the project exists)
and never 2xx — on every route under /api/v1/projects/{project_id}, and so does B using their
own project id with A's variable, document or run ids. The route table is read from the OpenAPI
schema, so a route added without a request below fails `test_every_project_route_is_probed`
until someone decides how to probe it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support.api import (
    add_variable,
    create_project,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.documents import make_pdf
from tests.support.webhook_receiver import add_paused_webhook

API = "/api/v1"
PROJECT_PREFIX = "/projects/{project_id}"
Ids = dict[str, str]
Probe = dict[str, Any]  # keyword arguments for httpx.AsyncClient.request

# Every route under a project, with requests that would succeed for the owner: a missing
# ownership check then shows up as a 2xx instead of hiding behind a validation error.
PROBES: dict[tuple[str, str], Callable[[Ids], list[Probe]]] = {
    ("GET", "/projects/{project_id}"): lambda _: [{}],
    ("PATCH", "/projects/{project_id}"): lambda _: [{"json": {"name": "Taken over"}}],
    ("DELETE", "/projects/{project_id}"): lambda _: [{}],
    ("GET", "/projects/{project_id}/variables"): lambda _: [{}],
    ("POST", "/projects/{project_id}/variables"): lambda _: [
        {"json": {"name": "intruder", "description": "Planted by B", "type": "text"}}
    ],
    ("GET", "/projects/{project_id}/variables/{variable_id}"): lambda _: [{}],
    ("PATCH", "/projects/{project_id}/variables/{variable_id}"): lambda _: [
        {"json": {"description": "Rewritten by B"}},
        {"json": {"required": True}},
    ],
    ("DELETE", "/projects/{project_id}/variables/{variable_id}"): lambda _: [{}],
    ("GET", "/projects/{project_id}/variables/{variable_id}/prompt"): lambda _: [{}],
    ("GET", "/projects/{project_id}/variables/{variable_id}/prompt-versions"): lambda _: [{}],
    ("GET", "/projects/{project_id}/codebook"): lambda _: [{}, {"params": {"format": "xlsx"}}],
    ("PUT", "/projects/{project_id}/codebook"): lambda _: [
        {  # no Content-Type: the format is found from the bytes
            "content": b"variables:\n  - {name: intruder, type: text, description: Planted by B}\n",
        }
    ],
    ("GET", "/projects/{project_id}/profiles"): lambda _: [{}],
    ("POST", "/projects/{project_id}/profiles"): lambda _: [
        {"json": {"name": "intruder", "model": "m", "base_url": "http://attacker.example/v1"}}
    ],
    ("GET", "/projects/{project_id}/profiles/{profile_id}"): lambda _: [{}],
    ("PATCH", "/projects/{project_id}/profiles/{profile_id}"): lambda _: [
        {"json": {"base_url": "http://attacker.example/v1"}}
    ],
    ("DELETE", "/projects/{project_id}/profiles/{profile_id}"): lambda _: [{}],
    ("GET", "/projects/{project_id}/webhooks"): lambda _: [{}],
    ("POST", "/projects/{project_id}/webhooks"): lambda _: [
        {"json": {"url": "http://93.184.215.14/b", "events": ["run.finished"], "enabled": False}}
    ],
    ("GET", "/projects/{project_id}/webhooks/{webhook_id}"): lambda _: [{}],
    ("PATCH", "/projects/{project_id}/webhooks/{webhook_id}"): lambda _: [
        {"json": {"description": "Taken over"}}
    ],
    ("DELETE", "/projects/{project_id}/webhooks/{webhook_id}"): lambda _: [{}],
    ("GET", "/projects/{project_id}/webhooks/{webhook_id}/deliveries"): lambda _: [{}],
    ("GET", "/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}"): lambda _: [
        {}
    ],
    ("POST", "/projects/{project_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): (
        lambda _: [{}]
    ),
    ("POST", "/projects/{project_id}/documents"): lambda _: [
        {"files": [("files", ("intruder.txt", b"Planted by B.\n", "text/plain"))]}
    ],
    ("GET", "/projects/{project_id}/documents"): lambda _: [{}, {"params": {"status": "ready"}}],
    ("GET", "/projects/{project_id}/documents/{document_id}"): lambda _: [{}],
    ("DELETE", "/projects/{project_id}/documents/{document_id}"): lambda _: [{}],
    ("GET", "/projects/{project_id}/documents/{document_id}/text"): lambda _: [{}],
    ("GET", "/projects/{project_id}/documents/{document_id}/pages/{number}/image"): lambda _: [
        {},
        {"params": {"format": "webp", "width": 300}},
    ],
    ("POST", "/projects/{project_id}/runs"): lambda ids: [
        {"json": {}},
        {"json": {"document_ids": [ids["document_id"]], "variable_ids": [ids["variable_id"]]}},
    ],
    ("GET", "/projects/{project_id}/runs"): lambda _: [{}],
    ("GET", "/projects/{project_id}/runs/{run_id}"): lambda _: [{}],
    ("POST", "/projects/{project_id}/runs/{run_id}/cancel"): lambda _: [{}],
    ("POST", "/projects/{project_id}/runs/{run_id}/retry"): lambda _: [{}],
    ("GET", "/projects/{project_id}/runs/{run_id}/logs"): lambda _: [{}],
    ("GET", "/projects/{project_id}/runs/{run_id}/events"): lambda _: [{}],
    ("GET", "/projects/{project_id}/extractions"): lambda ids: [
        {},
        {"params": {"run_id": ids["run_id"]}},
        {"params": {"document_id": ids["document_id"], "variable_id": ids["variable_id"]}},
        {"params": {"status": "not_found"}},
    ],
    ("GET", "/projects/{project_id}/results"): lambda ids: [
        {},
        {"params": {"review": "unreviewed", "flag": "not_found"}},
        {"params": {"sort": "value", "sort_variable_id": ids["variable_id"]}},
        {"params": {"variable_id": ids["variable_id"], "name": "a", "value": "b"}},
    ],
    # A correction last: the owner's later probes need the finding the title's value makes.
    ("PUT", "/projects/{project_id}/reviews/{document_id}/{variable_id}"): lambda _: [
        {"json": {"status": "rejected"}},
        {"json": {"status": "corrected", "value": "Forged by B"}},
    ],
    ("GET", "/projects/{project_id}/reviews/{document_id}/{variable_id}"): lambda _: [{}],
    ("GET", "/projects/{project_id}/export"): lambda _: [
        {"params": {"format": "csv"}},
        {"params": {"format": "csv", "layout": "long"}},
        {"params": {"format": "xlsx"}},
        {"params": {"format": "json"}},
        {"params": {"format": "csv", "layout": "cases"}},
    ],
    ("POST", "/projects/{project_id}/evaluation"): lambda ids: [
        {"files": {"gold": ("gold.csv", b"filename,title\nAlice.pdf,Alice title\n", "text/csv")}},
        {
            "files": {"gold": ("gold.csv", b"filename,title\nAlice.pdf,x\n", "text/csv")},
            "data": {"run_id": ids["run_id"]},
            "params": {"format": "xlsx"},
        },
    ],
    ("GET", "/projects/{project_id}/reference-lists"): lambda _: [{}],
    ("POST", "/projects/{project_id}/reference-lists"): lambda _: [
        {"files": {"file": ("planted.csv", b"id,name\nX,Planted by B\n", "text/csv")}}
    ],
    ("GET", "/projects/{project_id}/reference-lists/{list_id}"): lambda _: [{}],
    ("PUT", "/projects/{project_id}/reference-lists/{list_id}"): lambda _: [
        {"files": {"file": ("planted.csv", b"id,name,label\nK1,Planted,by B\n", "text/csv")}}
    ],
    ("DELETE", "/projects/{project_id}/reference-lists/{list_id}"): lambda _: [{}],
    ("GET", "/projects/{project_id}/reference-lists/{list_id}/rows"): lambda _: [
        {},
        {"params": {"version": 1}},
    ],
    # "None of these" first: the owner's later probes need the case its choice of K1 makes.
    ("POST", "/projects/{project_id}/extractions/{extraction_id}/match"): lambda _: [
        {"json": {"key": None}},
        {"json": {"key": "K1"}},
    ],
    ("GET", "/projects/{project_id}/cases"): lambda _: [{}],
    ("GET", "/projects/{project_id}/findings"): lambda _: [{}, {"params": {"status": "open"}}],
    ("POST", "/projects/{project_id}/findings/{finding_id}/resolution"): lambda _: [
        {"json": {"resolution": "both_correct"}}
    ],
    ("GET", "/projects/{project_id}/evaluation"): lambda ids: [
        {"params": {"gold": "reviews"}},
        {"params": {"gold": "reviews", "run_id": ids["run_id"], "format": "xlsx"}},
    ],
}

# Routes answered without a token, by design.
PUBLIC_ROUTES = {("POST", "/auth/token")}


@dataclass
class Owner:
    headers: dict[str, str]
    ids: Ids


def api_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(METHOD, path under /api/v1) of every operation in the OpenAPI schema."""
    routes = set()
    for path, operations in app.openapi()["paths"].items():
        if path.startswith(API + "/"):
            for method in operations:
                routes.add((method.upper(), path.removeprefix(API)))
    return routes


def fill(template: str, ids: Ids) -> str:
    return API + re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)


def child_params(template: str) -> set[str]:
    # A page number is not an object anyone owns: B's page 1 is B's own.
    return set(re.findall(r"\{(\w+)\}", template)) - {"project_id", "number"}


def assert_not_found(response: httpx.Response, what: str) -> None:
    assert response.status_code == 404, f"{what} answered {response.status_code}: {response.text}"
    body = response.json()
    assert body["error"] == "not_found", what
    assert isinstance(body["detail"], str) and " " in body["detail"], what


async def make_owner(
    app: FastAPI, client: httpx.AsyncClient, email: str, marker: str, *, with_run: bool
) -> Owner:
    """A user with a project holding a variable, a ready TXT document, a run and a review;
    a reference list the variable is matched to, the project's cases keyed by it, a match
    review and a finding (the reference row's label disagrees with the reviewed title)."""
    headers = await sign_up(app, client, email)
    project = await create_project(client, headers, f"{marker} project")
    pid = project["id"]
    variable = await add_variable(
        client, headers, pid, name="title", description=f"{marker}'s title", type="text"
    )
    response = await upload(
        client,
        headers,
        pid,
        # A PDF, so that every document route (its page images too) has something to show.
        [(f"{marker}.pdf", make_pdf([f"{marker}: a private study."]), "application/pdf")],
    )
    assert response.status_code == 201, response.text
    documents = await wait_for_documents(client, headers, pid)
    assert [d["status"] for d in documents] == ["ready"]
    profile = await client.post(
        f"{API}/projects/{pid}/profiles",
        json={"name": f"{marker} local", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
        headers=headers,
    )
    assert profile.status_code == 201, profile.text
    listed = await client.post(
        f"{API}/projects/{pid}/reference-lists",
        files={
            "file": ("refs.csv", f"id,name,label\nK1,{marker} title,Other\n".encode(), "text/csv")
        },
        headers=headers,
    )
    assert listed.status_code == 201, listed.text
    match = {"list": "refs", "column": "name", "key_column": "id", "method": "exact"}
    checks = {"must_agree_with_reference": "label"}
    response = await client.patch(
        f"{API}/projects/{pid}/variables/{variable['id']}",
        json={"match": match, "checks": checks},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    response = await client.patch(
        f"{API}/projects/{pid}", json={"case_key": {"variable": "title"}}, headers=headers
    )
    assert response.status_code == 200, response.text
    ids = {
        "project_id": pid,
        "variable_id": variable["id"],
        "document_id": documents[0]["id"],
        "profile_id": profile.json()["id"],
        "list_id": listed.json()["id"],
        "number": "1",  # a page of the document
    }
    if with_run:
        # The fake model answers "not found" by default: a finished run with extractions.
        response = await client.post(f"{API}/projects/{pid}/runs", json={}, headers=headers)
        assert response.status_code == 202, response.text
        run = await wait_for_run(client, headers, pid, response.json()["id"])
        assert run["status"] == "completed", run
        ids["run_id"] = run["id"]
        response = await client.put(
            f"{API}/projects/{pid}/reviews/{ids['document_id']}/{ids['variable_id']}",
            json={"status": "corrected", "value": f"{marker} title"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        response = await client.get(f"{API}/projects/{pid}/extractions", headers=headers)
        ids["extraction_id"] = response.json()["items"][0]["id"]
        response = await client.post(
            f"{API}/projects/{pid}/extractions/{ids['extraction_id']}/match",
            json={"key": "K1"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        findings = (await client.get(f"{API}/projects/{pid}/findings", headers=headers)).json()
        assert findings["total"] == 1, findings
        ids["finding_id"] = findings["items"][0]["id"]
    ids.update(await add_paused_webhook(app, client, headers, pid))
    return Owner(headers, ids)


async def visible_state(client: httpx.AsyncClient, owner: Owner) -> dict[str, Any]:
    """Everything the owner can read about their project, to compare before and after."""
    ids = owner.ids
    base = f"{API}/projects/{ids['project_id']}"
    reads = {
        "project": base,
        "variables": f"{base}/variables",
        "prompt": f"{base}/variables/{ids['variable_id']}/prompt",
        "prompt_versions": f"{base}/variables/{ids['variable_id']}/prompt-versions",
        "codebook": f"{base}/codebook?format=json",
        "documents": f"{base}/documents",
        "text": f"{base}/documents/{ids['document_id']}/text",
        "runs": f"{base}/runs",
        "logs": f"{base}/runs/{ids['run_id']}/logs",
        "extractions": f"{base}/extractions",
        "reviews": f"{base}/reviews/{ids['document_id']}/{ids['variable_id']}",
        "export": f"{base}/export?format=json&layout=long",
        "lists": f"{base}/reference-lists",
        "rows": f"{base}/reference-lists/{ids['list_id']}/rows",
        "cases": f"{base}/cases",
        "findings": f"{base}/findings",
    }
    state = {}
    for name, url in reads.items():
        response = await client.get(url, headers=owner.headers)
        assert response.status_code == 200, f"{name}: {response.text}"
        state[name] = response.json()
    return state


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
        )
    } | {"number": "1"}
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
