"""Security headers, request ids and CORS on every kind of response, errors included."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from quarry.app import create_app
from quarry.security.headers import CONTENT_SECURITY_POLICY
from quarry.settings import Settings
from tests.conftest import make_settings
from tests.support.api import create_schema, sign_up
from tests.support.fake_llm import FakeLLM

API = "/api/v1"
STRICT_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def assert_secured(response: httpx.Response, what: str, *, csp: str = STRICT_CSP) -> None:
    headers = response.headers
    assert headers.get("content-security-policy") == csp, what
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("x-frame-options") == "DENY", what
    assert headers.get("referrer-policy") == "no-referrer", what
    assert re.fullmatch(r"[0-9a-f]{32}", headers.get("x-request-id", "")), what


async def test_every_kind_of_response_carries_the_headers(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert CONTENT_SECURITY_POLICY == STRICT_CSP
    headers = await sign_up(app, client, "headers@example.org")
    responses = {
        "200 JSON": await client.get(f"{API}/users/me", headers=headers),
        "201": await client.post(f"{API}/projects", json={"name": "P"}, headers=headers),
        "401": await client.get(f"{API}/projects"),
        "404 route": await client.get("/no/such/page"),
        "404 object": await client.get(f"{API}/projects/{'0' * 32}", headers=headers),
        "405": await client.put("/health/live"),
        "422": await client.post(f"{API}/projects", json={"name": ""}, headers=headers),
        "health": await client.get("/health/ready"),
        "openapi": await client.get("/openapi.json"),
        "root": await client.get("/"),
        "metrics": await client.get("/metrics"),
    }
    for what, response in responses.items():
        assert_secured(response, what)
    # API answers hold private data: no cache may keep them.
    assert responses["200 JSON"].headers["cache-control"] == "no-store"
    assert responses["401"].headers["cache-control"] == "no-store"
    # Plain HTTP gets no HSTS (it would be ignored, and breaks plain-HTTP local installs).
    assert "strict-transport-security" not in responses["200 JSON"].headers


async def test_an_unhandled_error_is_a_json_500_with_id_and_headers(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode() -> None:
        raise RuntimeError("database exploded: password=hunter2")

    # A route that fails like a bug would; added before the first request builds the table.
    app.add_api_route("/boom", explode, include_in_schema=False)
    with caplog.at_level(logging.ERROR):
        response = await client.get("/boom", headers={"X-Request-ID": "trace-me-123"})
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "detail": "Something went wrong on our side; it has been logged.",
    }
    assert "hunter2" not in response.text
    assert_secured_with_id(response, "trace-me-123")
    assert any("request.unhandled_error" in r.getMessage() for r in caplog.records)


def assert_secured_with_id(response: httpx.Response, request_id: str) -> None:
    assert response.headers["x-request-id"] == request_id
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == STRICT_CSP


async def test_a_sane_incoming_request_id_is_kept_and_a_bad_one_replaced(
    client: httpx.AsyncClient,
) -> None:
    kept = await client.get("/no/such/page", headers={"X-Request-ID": "proxy-abc-42"})
    assert kept.headers["x-request-id"] == "proxy-abc-42"
    for bad in ("x" * 65, "a\tb"):
        response = await client.get("/health/live", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    first = await client.get("/health/live")
    second = await client.get("/health/live")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_api_docs_load_everything_from_this_server_under_their_policy(
    client: httpx.AsyncClient,
) -> None:
    """/docs and /redoc work offline: every script, style and icon is served by Quarry."""
    for path in ("/docs", "/redoc"):
        response = await client.get(path)
        assert response.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert any(asset.endswith(".js") for asset in assets), f"{path} loads no script"
        for asset in assets:
            assert asset.startswith("/"), f"{path} loads {asset} from another server"
            loaded = await client.get(asset)
            assert loaded.status_code == 200, f"{path} needs {asset}, which answers {loaded}"
            assert loaded.content, asset
        csp = response.headers["content-security-policy"]
        # Inline boot code from this origin, and nothing from any other server.
        assert "'unsafe-inline'" in csp
        assert "https:" not in csp and "http:" not in csp
        for directive in ("frame-ancestors 'none'", "base-uri 'none'", "object-src 'none'"):
            assert directive in csp
        assert response.headers["x-frame-options"] == "DENY"
    # Only the docs: everything else keeps the strict policy with no inline code.
    assert (
        "unsafe-inline"
        not in (await client.get("/openapi.json")).headers["content-security-policy"]
    )


async def test_https_responses_carry_hsts(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://quarry.test") as client:
        response = await client.get("/health/live")
    assert response.headers["strict-transport-security"] == "max-age=31536000"


async def test_no_cors_unless_origins_are_configured(client: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://evil.example"}
    response = await client.get("/health/live", headers=origin)
    assert "access-control-allow-origin" not in response.headers
    preflight = await client.options(
        f"{API}/projects",
        headers={**origin, "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_configured_origins_and_only_those_get_cors(
    tmp_path: Path, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARRY_CORS_ORIGINS", "https://ui.example.org, https://other.example/")
    assert Settings(_env_file=None).cors_origins == [  # type: ignore[call-arg]
        "https://ui.example.org",
        "https://other.example",
    ]
    settings = make_settings(tmp_path, fake_llm, cors_origins=["https://ui.example.org"])
    await create_schema(settings.database_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quarry.test") as client:
            preflight = await client.options(
                f"{API}/projects",
                headers={
                    "Origin": "https://ui.example.org",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "Authorization, Content-Type",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://ui.example.org"
            assert "access-control-allow-credentials" not in preflight.headers
            assert preflight.headers.get("x-request-id")
            assert preflight.headers["x-frame-options"] == "DENY"

            response = await client.get(
                f"{API}/projects", headers={"Origin": "https://ui.example.org"}
            )
            assert response.status_code == 401
            assert response.headers["access-control-allow-origin"] == "https://ui.example.org"
            exposed = response.headers["access-control-expose-headers"].lower()
            assert "x-request-id" in exposed and "retry-after" in exposed

            refused = await client.options(
                f"{API}/projects",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
            )
            assert "access-control-allow-origin" not in refused.headers
