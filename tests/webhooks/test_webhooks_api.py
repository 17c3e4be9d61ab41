"""Webhooks as a project owner manages them: the secret shown once, targets on the server's
own network refused, other users' webhooks invisible."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from quarry.settings import Settings
from tests.conftest import make_settings
from tests.support.api import create_project, running_app, sign_up
from tests.support.fake_llm import FakeLLM

Headers = dict[str, str]
EVENTS = ["run.finished", "run.failed"]


async def _project(app: FastAPI, client: httpx.AsyncClient, email: str) -> tuple[Headers, str]:
    headers = await sign_up(app, client, email)
    return headers, (await create_project(client, headers))["id"]


async def test_the_secret_is_shown_in_full_only_when_it_is_created(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers, pid = await _project(app, client, "owner@example.org")
    base = f"/api/v1/projects/{pid}/webhooks"
    created = await client.post(
        base, json={"url": "http://127.0.0.1:9/hook", "events": EVENTS}, headers=headers
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    secret = hook["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert hook["secret_hint"] == f"…{secret[-4:]}"

    for response in (
        await client.get(f"{base}/{hook['id']}", headers=headers),
        await client.get(base, headers=headers),
        await client.patch(f"{base}/{hook['id']}", json={"enabled": False}, headers=headers),
    ):
        assert response.status_code == 200, response.text
        assert secret not in response.text and 'secret"' not in response.text
    [listed] = (await client.get(base, headers=headers)).json()["items"]
    assert listed["enabled"] is False and listed["events"] == EVENTS

    own = await client.post(
        base,
        json={
            "url": "http://127.0.0.1:9/b",
            "events": ["document.failed"],
            "secret": "s" * 8 + "x" * 12,
        },
        headers=headers,
    )
    assert own.status_code == 201 and own.json()["secret"] == "s" * 8 + "x" * 12


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://127.0.0.1:9/h", "events": []},
        {"url": "http://127.0.0.1:9/h", "events": ["run.exploded"]},
        {"url": "http://127.0.0.1:9/h", "events": EVENTS, "secret": "short"},
    ],
)
async def test_a_malformed_webhook_is_refused(
    app: FastAPI, client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    headers, pid = await _project(app, client, "shapes@example.org")
    response = await client.post(f"/api/v1/projects/{pid}/webhooks", json=body, headers=headers)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_private_loopback_and_link_local_targets_are_refused(
    tmp_path: Path, fake_llm: FakeLLM, url: str
) -> None:
    settings = make_settings(tmp_path, fake_llm)  # the operator has not allowed them
    async with running_app(settings) as (app, client):
        headers, pid = await _project(app, client, "ssrf@example.org")
        base = f"/api/v1/projects/{pid}/webhooks"
        response = await client.post(base, json={"url": url, "events": EVENTS}, headers=headers)
        assert response.status_code == 400, response.text
        assert "QUARRY_WEBHOOK_ALLOW_PRIVATE" in response.json()["detail"]
        assert (await client.get(base, headers=headers)).json()["total"] == 0


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.org/hook", "https://"),
        ("http://user:pw@example.org/hook", "user name or password"),
        ("http://no-such-host.invalid/hook", "could not be resolved"),
    ],
)
async def test_urls_that_cannot_be_used_get_a_sentence(
    tmp_path: Path, fake_llm: FakeLLM, url: str, words: str
) -> None:
    async with running_app(make_settings(tmp_path, fake_llm)) as (app, client):
        headers, pid = await _project(app, client, "urls@example.org")
        response = await client.post(
            f"/api/v1/projects/{pid}/webhooks", json={"url": url, "events": EVENTS}, headers=headers
        )
        assert response.status_code == 400, response.text
        assert words in response.json()["detail"]


async def test_a_url_changed_to_a_private_address_is_refused(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    async with running_app(make_settings(tmp_path, fake_llm)) as (app, client):
        headers, pid = await _project(app, client, "later@example.org")
        base = f"/api/v1/projects/{pid}/webhooks"
        public = "http://93.184.215.14/hook"  # a global address: resolves without DNS
        created = await client.post(base, json={"url": public, "events": EVENTS}, headers=headers)
        assert created.status_code == 201, created.text
        hid = created.json()["id"]
        moved = await client.patch(
            f"{base}/{hid}", json={"url": "http://192.168.1.1/hook"}, headers=headers
        )
        assert moved.status_code == 400, moved.text
        assert (await client.get(f"{base}/{hid}", headers=headers)).json()["url"] == public


async def test_other_users_webhooks_answer_404(
    settings: Settings, app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, pid = await _project(app, client, "alice@example.org")
    stranger, their_pid = await _project(app, client, "mallory@example.org")
    base = f"/api/v1/projects/{pid}/webhooks"
    hook = (
        await client.post(
            base, json={"url": "http://127.0.0.1:9/h", "events": EVENTS}, headers=owner
        )
    ).json()
    hid = hook["id"]
    zero = "00000000-0000-0000-0000-000000000000"
    for method, path, body in [
        ("GET", base, None),
        ("POST", base, {"url": "http://127.0.0.1:9/x", "events": EVENTS}),
        ("GET", f"{base}/{hid}", None),
        ("PATCH", f"{base}/{hid}", {"enabled": False}),
        ("DELETE", f"{base}/{hid}", None),
        ("GET", f"{base}/{hid}/deliveries", None),
        ("GET", f"{base}/{hid}/deliveries/{zero}", None),
        ("POST", f"{base}/{hid}/deliveries/{zero}/redeliver", None),
        # Their own project, the owner's webhook id.
        ("GET", f"/api/v1/projects/{their_pid}/webhooks/{hid}", None),
        ("GET", f"/api/v1/projects/{their_pid}/webhooks/{hid}/deliveries", None),
    ]:
        response = await client.request(method, path, json=body, headers=stranger)
        assert response.status_code == 404, (method, path, response.text)
    still = await client.get(f"{base}/{hid}", headers=owner)
    assert still.status_code == 200 and still.json()["enabled"] is True


async def test_email_needs_the_operator_to_configure_smtp(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers, pid = await _project(app, client, "mail@example.org")
    response = await client.post(
        f"/api/v1/projects/{pid}/webhooks",
        json={"channel": "email", "events": EVENTS},
        headers=headers,
    )
    assert response.status_code == 400
    assert "QUARRY_SMTP_URL" in response.json()["detail"]
