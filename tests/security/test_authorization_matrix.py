"""Hostile users against every route: other users' ids, and tokens that must be refused.

The routes come from the app's own route table, so a route added later is probed without
anyone remembering to list it. Each probe sends the smallest body the contract accepts (built
from the OpenAPI schema), so a 404 comes from the ownership check, not from a 422 that a
sloppy probe would have earned anyway.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError

from quarry.auth.deps import admin_routes
from quarry.auth.tokens import ALGORITHM, issue_token, read_token
from quarry.settings import MIN_SECRET_LENGTH, Environment, Settings
from tests.security.helpers import (
    API,
    Route,
    World,
    app_routes,
    audit_events,
    forge,
    make_world,
    user_uuid,
)
from tests.support.api import sign_up

SECRET = "test-secret-key-that-is-long-enough-for-hs256"  # tests.conftest.make_settings
#: Routes answered without a token, on purpose. Anything else must need one.
PUBLIC = {
    ("POST", f"{API}/auth/token"),
    ("POST", f"{API}/auth/password"),  # a set-password link's token is the credential
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),  # its own optional token (QUARRY_METRICS_TOKEN); see test_metrics
    ("GET", "/"),
    # The API docs pages (quarry/apidocs.py): the contract is public, as FastAPI serves it.
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}


def minimal_instance(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """The smallest value valid against a JSON schema of the kinds the contract uses."""
    if "$ref" in schema:
        return minimal_instance(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            options = [s for s in schema[combinator] if s.get("type") != "null"]
            return minimal_instance(options[0] if options else {"type": "null"}, components)
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type", "object")
    if kind == "object":
        properties = schema.get("properties", {})
        return {
            name: minimal_instance(properties[name], components)
            for name in schema.get("required", [])
        }
    if kind == "array":
        return []
    if kind == "string":
        return "x" * max(schema.get("minLength", 1), 1)
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None


def probe(app: FastAPI, route: Route) -> dict[str, Any]:
    """httpx keyword arguments carrying the minimal valid body for `route`, if it takes one."""
    openapi = app.openapi()
    operation = openapi["paths"].get(route.path, {}).get(route.method.lower(), {})
    content = operation.get("requestBody", {}).get("content", {})
    components = openapi.get("components", {}).get("schemas", {})
    if "application/json" in content:
        return {"json": minimal_instance(content["application/json"]["schema"], components)}
    if "multipart/form-data" in content:
        return {"files": [("files", ("probe.txt", b"A probe.\n", "text/plain"))]}
    if "application/x-www-form-urlencoded" in content:
        return {
            "data": minimal_instance(
                content["application/x-www-form-urlencoded"]["schema"], components
            )
        }
    return {}


def assert_not_found(response: httpx.Response, what: str) -> None:
    assert response.status_code == 404, f"{what} answered {response.status_code}: {response.text}"
    assert response.json()["error"] == "not_found", what


def assert_unauthorized(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, f"{what} answered {response.status_code}: {response.text}"
    assert response.json()["error"] == "unauthorized", what
    assert response.headers.get("www-authenticate") == "Bearer", what
    assert response.headers.get("x-request-id"), what


@pytest.fixture
async def alice_and_bob(app: FastAPI, client: httpx.AsyncClient) -> tuple[World, World]:
    alice = await make_world(app, client, "alice@example.org")
    bob = await make_world(app, client, "bob@example.org")
    return alice, bob


async def test_every_api_route_but_sign_in_is_authenticated(app: FastAPI) -> None:
    routes = app_routes(app)
    assert {(r.method, r.path) for r in routes} >= {
        ("GET", f"{API}/audit-events"),
        ("DELETE", f"{API}/projects/{{project_id}}"),
    }, "the route table was not read"
    open_routes = {(r.method, r.path) for r in routes if not r.authenticated}
    assert open_routes <= PUBLIC, f"routes anyone can call: {sorted(open_routes - PUBLIC)}"
    # Every id-taking route is behind the token (and so behind the ownership checks).
    for route in routes:
        if route.params:
            assert route.authenticated, f"{route} takes ids but no token"


async def test_another_users_ids_answer_404_on_every_route(
    app: FastAPI, client: httpx.AsyncClient, alice_and_bob: tuple[World, World]
) -> None:
    alice, bob = alice_and_bob
    # Administrators' routes answer 403 to everyone else before looking at an id
    # (tests/test_permissions.py); every other route with an id is here.
    admin_only = {(m.upper(), p) for m, p in admin_routes(app)}
    with_ids = [r for r in app_routes(app) if r.params and (r.method, r.path) not in admin_only]
    assert with_ids, "no id-taking routes found"
    bobs_events = [e.action for e in await audit_events(app, user_id=user_uuid(bob))]
    unknown = {p for r in with_ids for p in r.params} - set(alice.ids)
    assert not unknown, f"routes take ids this test cannot make yet: {unknown}; extend make_world"

    # Deletions last, so every other probe finds Alice's objects still there.
    for route in sorted(with_ids, key=lambda r: r.method == "DELETE"):
        # Bob with all of Alice's ids.
        response = await client.request(
            route.method, route.fill(alice.ids), headers=bob.headers, **probe(app, route)
        )
        assert_not_found(response, f"Bob: {route} with Alice's ids")
        # Bob's own project, one of Alice's objects inside it at a time.
        for param in route.params:
            # A page number is not an object anyone owns: Bob's page 1 is his own.
            if param in ("project_id", "number"):
                continue
            ids = {**bob.ids, param: alice.ids[param]}
            response = await client.request(
                route.method, route.fill(ids), headers=bob.headers, **probe(app, route)
            )
            assert_not_found(response, f"Bob: {route} with Alice's {param} in his project")

    # Nothing Bob did touched Alice's objects: she still finds every one of them (her reads
    # are not 404 — though a route may want query parameters these bare reads lack).
    for route in with_ids:
        if route.method == "GET" and not route.path.endswith("/events"):
            response = await client.get(route.fill(alice.ids), headers=alice.headers)
            assert response.status_code in (200, 422), f"Alice: {route}: {response.text}"
    # And Bob's failed attempts left no trace in the audit log as deletions or exports.
    assert bobs_events == ["auth.sign_in", "member.added"]
    assert [e.action for e in await audit_events(app, user_id=user_uuid(bob))] == bobs_events


async def test_bob_never_sees_alices_audit_events(
    client: httpx.AsyncClient, alice_and_bob: tuple[World, World]
) -> None:
    alice, bob = alice_and_bob
    await client.get(f"{API}/projects/{alice.ids['project_id']}/export", headers=alice.headers)
    response = await client.get(f"{API}/audit-events", headers=bob.headers)
    assert response.status_code == 200, response.text
    bob_id = str(user_uuid(bob))
    assert all(e["user_id"] == bob_id for e in response.json()["items"])
    assert alice.ids["project_id"] not in response.text
    assert str(user_uuid(alice)) not in response.text


def bad_tokens(user_id: uuid.UUID) -> dict[str, str | None]:
    future = datetime.now(UTC) + timedelta(hours=1)
    claims = {"sub": str(user_id), "exp": future}
    return {
        "no token": None,
        "garbage": "not-a-token",
        "expired": forge(
            {"sub": str(user_id), "exp": datetime.now(UTC) - timedelta(seconds=5)}, SECRET
        ),
        "signed with another key": forge(claims, "another-key-entirely-" + "x" * 40),
        "alg none": forge(claims, "", algorithm="none"),
        "HS512 with the right key": forge(claims, SECRET, algorithm="HS512"),
        "no exp": forge({"sub": str(user_id)}, SECRET),
        "no sub": forge({"exp": future}, SECRET),
        "unknown user": forge({"sub": str(uuid.uuid4()), "exp": future}, SECRET),
    }


async def test_every_authenticated_route_refuses_bad_tokens(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, "carol@example.org")
    user_id = uuid.UUID((await client.get(f"{API}/users/me", headers=headers)).json()["id"])
    ids: dict[str, str] = {}
    for route in app_routes(app):
        ids.update({p: str(uuid.uuid4()) for p in route.params})
    tokens = bad_tokens(user_id)
    checked = 0
    for route in app_routes(app):
        if not route.authenticated:
            continue
        for name, token in tokens.items():
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            response = await client.request(
                route.method, route.fill(ids), headers=auth, **probe(app, route)
            )
            assert_unauthorized(response, f"{route} with {name}")
            checked += 1
    assert checked >= 9 * 25  # every token kind on every authenticated route


def test_tokens_pin_the_algorithm_and_require_expiry() -> None:
    user_id = uuid.uuid4()
    good, expires_at = issue_token(user_id, SECRET, timedelta(minutes=5))
    assert read_token(good, SECRET) == user_id
    assert expires_at > datetime.now(UTC)
    assert ALGORITHM == "HS256"
    for name, token in bad_tokens(user_id).items():
        if token is not None and name != "unknown user":
            assert read_token(token, SECRET) is None, name


@pytest.mark.parametrize(
    "secret",
    [
        None,
        "short",
        "x" * (MIN_SECRET_LENGTH - 1),
        "a" * 64,  # long but not random
        "change-me-change-me-change-me-change-me",
        "my-quarry-secret-key-for-production-2026",
        "0123456" * 10,  # seven distinct characters
    ],
)
def test_production_refuses_a_default_or_weak_secret(secret: str | None) -> None:
    with pytest.raises(ValidationError, match="QUARRY_SECRET_KEY"):
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            env=Environment.PRODUCTION,
            secret_key=SecretStr(secret) if secret is not None else None,
        )


def test_production_accepts_generated_secrets() -> None:
    import secrets

    for key in (secrets.token_urlsafe(48), secrets.token_hex(16), secrets.token_urlsafe(24)):
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, env=Environment.PRODUCTION, secret_key=SecretStr(key)
        )
        assert settings.signing_key() == key


def test_production_start_refuses_a_short_secret(tmp_path: Path) -> None:
    with socket.socket() as s:  # a free port: if the server did start, it would not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "backend"),
        "QUARRY_ENV": "production",
        "QUARRY_SECRET_KEY": "too-short",
        "QUARRY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/q.db",
        "QUARRY_STORAGE_DIR": str(tmp_path / "storage"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "quarry.cli", "serve", "--port", str(port), "--no-migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "QUARRY_SECRET_KEY" in result.stderr
    assert "serving" not in result.stdout
