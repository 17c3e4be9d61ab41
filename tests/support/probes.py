"""Requests that succeed for a project's owner on every route under a project, and the
project (a "world") they are sent to: shared by the ownership tests (another user → 404,
tests/test_ownership.py) and the role matrix (every route × every role,
tests/test_permissions.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from quarry.auth.service import create_user
from quarry.db import session_scope
from tests.support.api import (
    PASSWORD,
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
def _gold(ids: Ids, title: str) -> bytes:
    """A gold CSV naming the project's document."""
    return f"filename,title\n{ids['filename']},{title}\n".encode()


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
        {"params": {"document_id": ids["document_id"], "counts": "false"}},
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
        {"files": {"gold": ("gold.csv", _gold(ids, "a title"), "text/csv")}},
        {
            "files": {"gold": ("gold.csv", _gold(ids, "x"), "text/csv")},
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
    # Dual review.
    ("GET", "/projects/{project_id}/reviewers"): lambda _: [{}],
    ("GET", "/projects/{project_id}/assignments"): lambda ids: [
        {},
        {"params": {"mine": "true"}},
        {"params": {"unassigned": "true", "reviewer_id": ids["owner_id"]}},
    ],
    # The owner reviews their own document (A) and takes it from the pool (B: after the
    # auto split, which finds no one in the reviewer role to split between).
    ("POST", "/projects/{project_id}/assignments"): lambda ids: [
        {"json": {"document_ids": [ids["document_id"]], "reviewer_a": ids["owner_id"]}}
    ],
    ("POST", "/projects/{project_id}/assignments/auto"): lambda _: [{"json": {}}],
    ("POST", "/projects/{project_id}/assignments/claim"): lambda _: [{"json": {"count": 5}}],
    ("GET", "/projects/{project_id}/conflicts"): lambda ids: [
        {},
        {"params": {"status": "open", "variable_id": ids["variable_id"]}},
        {"params": {"reviewer_id": ids["owner_id"]}},
    ],
    ("POST", "/projects/{project_id}/conflicts/{document_id}/{variable_id}/resolution"): (
        lambda _: [{"json": {"choose": "a"}}, {"json": {"value": "Settled by B"}}]
    ),
    ("GET", "/projects/{project_id}/agreement"): lambda _: [
        {},
        {"params": {"absolute_tolerance": 1}},
    ],
    # The team: `user_id` is a member (a viewer), `spare_email` a user who is not one yet.
    ("GET", "/projects/{project_id}/members"): lambda _: [{}],
    ("POST", "/projects/{project_id}/members"): lambda ids: [
        {"json": {"email": ids["spare_email"], "role": "editor"}}
    ],
    ("PATCH", "/projects/{project_id}/members/{user_id}"): lambda _: [
        {"json": {"role": "reviewer"}}
    ],
    ("DELETE", "/projects/{project_id}/members/{user_id}"): lambda _: [{}],
    ("GET", "/projects/{project_id}/audit-events"): lambda _: [
        {},
        {"params": {"action": "member.added"}},
    ],
}

# Routes answered without a token, by design: signing in, and setting a password with a
# one-time link (the link's token is the credential).
PUBLIC_ROUTES = {("POST", "/auth/token"), ("POST", "/auth/password")}


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


async def add_user(app: FastAPI, email: str, *, is_admin: bool = False) -> str:
    """A user (password `PASSWORD`) straight in the database, not signed in; their id."""
    async with session_scope(app.state.sessionmaker) as session:
        user = await create_user(session, app.state.settings, email, PASSWORD, is_admin=is_admin)
        return str(user.id)


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
    review and a finding (the reference row's label disagrees with the reviewed title); a
    member (a viewer) and a user who is not one yet."""
    headers = await sign_up(app, client, email)
    project = await create_project(client, headers, f"{marker} project")
    pid = project["id"]
    local = email.split("@")[0]
    member_id = await add_user(app, f"{local}-member@example.org")
    await add_user(app, f"{local}-spare@example.org")
    response = await client.post(
        f"{API}/projects/{pid}/members",
        json={"email": f"{local}-member@example.org", "role": "viewer"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
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
        "filename": f"{marker}.pdf",
        "user_id": member_id,
        "owner_id": (await client.get(f"{API}/users/me", headers=headers)).json()["id"],
        "spare_email": f"{local}-spare@example.org",
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
        "results": f"{base}/results",
        "reviews": f"{base}/reviews/{ids['document_id']}/{ids['variable_id']}",
        "export": f"{base}/export?format=json&layout=long",
        "lists": f"{base}/reference-lists",
        "rows": f"{base}/reference-lists/{ids['list_id']}/rows",
        "cases": f"{base}/cases",
        "findings": f"{base}/findings",
        "members": f"{base}/members",
        "assignments": f"{base}/assignments",
        "conflicts": f"{base}/conflicts",
        "agreement": f"{base}/agreement",
    }
    state = {}
    for name, url in reads.items():
        response = await client.get(url, headers=owner.headers)
        assert response.status_code == 200, f"{name}: {response.text}"
        state[name] = response.json()
    return state
