"""Model profiles through the API: create, read, change, delete (audited; refused while a run
uses the profile), validation as 4xx, and runs that name a profile — its server sees its model,
its limits drive the calls, and what `auto` learned about its server is kept on the profile."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from quarry.models import ModelProfileRow
from tests.conftest import make_settings
from tests.security.helpers import audit_events
from tests.support.api import (
    add_variable,
    create_project,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM, FakeRequest
from tests.support.postgres import temporary_postgres_database

API = "/api/v1"
Headers = dict[str, str]


@pytest.fixture
def server() -> Iterator[FakeLLM]:
    """The profile's own server (the environment's is `fake_llm`)."""
    with FakeLLM() as fake:
        fake.models = ("served-model",)
        fake.default_reply = answer
        yield fake


def answer(request: FakeRequest) -> dict[str, Any]:
    return {"found": True, "evidence": "Lyon", "value": "Lyon", "confidence": 0.9}


async def project_with_documents(
    app: FastAPI, client: httpx.AsyncClient, email: str, documents: int = 2
) -> tuple[Headers, str]:
    headers = await sign_up(app, client, email)
    pid = (await create_project(client, headers))["id"]
    await add_variable(client, headers, pid, name="site", description="The city", type="text")
    files = [
        (f"r{i}.txt", f"Report {i}. The site was Lyon.".encode(), "text/plain")
        for i in range(documents)
    ]
    assert (await upload(client, headers, pid, files)).status_code == 201
    await wait_for_documents(client, headers, pid)
    return headers, pid


async def add_profile(
    client: httpx.AsyncClient, headers: Headers, pid: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(f"{API}/projects/{pid}/profiles", json=fields, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def start_run(
    client: httpx.AsyncClient, headers: Headers, pid: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(f"{API}/projects/{pid}/runs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return await wait_for_run(client, headers, pid, response.json()["id"])


async def test_profiles_crud_and_the_audit_of_a_delete(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await sign_up(app, client, "crud@example.org")
    pid = (await create_project(client, headers))["id"]
    monkeypatch.setenv("LOCAL_TEST_LLM_KEY", "sk-local-secret-value")
    made = await add_profile(
        client,
        headers,
        pid,
        name="local",
        model="qwen2.5-coder-1.5b-instruct",
        base_url="http://127.0.0.1:8088/v1/",
        api_key_env="LOCAL_TEST_LLM_KEY",
        context_window=8192,
        max_output_tokens=1024,
        concurrency=1,
        timeout_seconds=3600,
    )
    assert made["base_url"] == "http://127.0.0.1:8088/v1"
    assert made["api_key_present"] is True and made["learned_mode"] is None
    assert (made["output_mode"], made["provider"], made["concurrency"]) == ("auto", "openai", 1)
    listed = await client.get(f"{API}/projects/{pid}/profiles", headers=headers)
    assert [p["name"] for p in listed.json()["items"]] == ["local"]
    assert "sk-local-secret-value" not in listed.text  # the key is never shown

    url = f"{API}/projects/{pid}/profiles/{made['id']}"
    changed = await client.patch(url, json={"output_mode": "tools", "rpm": 30}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert (changed.json()["output_mode"], changed.json()["rpm"]) == ("tools", 30)
    assert (await client.get(url, headers=headers)).json()["rpm"] == 30

    duplicate = await client.post(
        f"{API}/projects/{pid}/profiles", json={"name": "local", "model": "x"}, headers=headers
    )
    assert duplicate.status_code == 409, duplicate.text

    assert (await client.delete(url, headers=headers)).status_code == 204
    assert (await client.get(url, headers=headers)).status_code == 404
    (event,) = await audit_events(app, action="profile.deleted")
    assert event.target_id == uuid.UUID(made["id"]) and event.detail == {"name": "local"}


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"api_key_env": "sk-proj-abc123"}, 422, "api_key_env"),  # a key, not a variable name
        ({"base_url": "ftp://example.org"}, 422, "base_url"),
        ({"timeout_seconds": 3601}, 422, "timeout_seconds"),
        ({"output_mode": "xml"}, 422, "output_mode"),
        ({"provider": "acme"}, 422, "provider"),
        ({"context_window": 4096, "max_output_tokens": 4096}, 400, "smaller than the context"),
        ({"price_input": 0.5}, 400, "both price_input and price_output"),
        ({"secret": "x"}, 422, "secret"),
    ],
)
async def test_invalid_profiles_are_refused_with_a_reason(
    app: FastAPI, client: httpx.AsyncClient, fields: dict[str, Any], status: int, says: str
) -> None:
    headers = await sign_up(app, client, "bad@example.org")
    pid = (await create_project(client, headers))["id"]
    response = await client.post(
        f"{API}/projects/{pid}/profiles",
        json={"name": "p", "model": "m", **fields},
        headers=headers,
    )
    assert response.status_code == status, response.text
    assert says in response.text


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        # Quarry's own settings never go to a server a profile names (any case: they are
        # read case-insensitively).
        ({"api_key_env": "QUARRY_SECRET_KEY"}, "Quarry's own settings"),
        ({"api_key_env": "quarry_database_url"}, "Quarry's own settings"),
        # The server's own key goes only to the server's own endpoint.
        (
            {"api_key_env": "OPENAI_API_KEY", "base_url": "https://collector.example/v1"},
            "this server's own key",
        ),
    ],
)
async def test_a_profile_cannot_name_the_servers_secrets_for_its_key(
    app: FastAPI, client: httpx.AsyncClient, fields: dict[str, Any], says: str
) -> None:
    headers = await sign_up(app, client, "secrets@example.org")
    pid = (await create_project(client, headers))["id"]
    url = f"{API}/projects/{pid}/profiles"
    response = await client.post(url, json={"name": "p", "model": "m", **fields}, headers=headers)
    assert response.status_code == 400 and says in response.text, response.text
    # Nor can a change make one do so.
    made = await add_profile(
        client,
        headers,
        pid,
        name="q",
        model="m",
        base_url=fields.get("base_url", "https://llm.example/v1"),
    )
    changed = await client.patch(
        f"{url}/{made['id']}", json={"api_key_env": fields["api_key_env"]}, headers=headers
    )
    assert changed.status_code == 400 and says in changed.text, changed.text


async def test_an_operator_list_of_key_variables_is_enforced(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    settings = make_settings(tmp_path, fake_llm, profile_key_variables="LOCAL_LLM_API_KEY")
    assert settings.profile_key_variables == ["LOCAL_LLM_API_KEY"]
    async with running_app(settings) as (app, client):
        headers = await sign_up(app, client, "operator@example.org")
        pid = (await create_project(client, headers))["id"]
        url = f"{API}/projects/{pid}/profiles"
        body = {"name": "p", "model": "m", "base_url": "https://llm.example/v1"}
        refused = await client.post(
            url, json={**body, "api_key_env": "AWS_SECRET_ACCESS_KEY"}, headers=headers
        )
        assert refused.status_code == 400, refused.text
        assert (
            "QUARRY_PROFILE_KEY_VARIABLES" in refused.text and "LOCAL_LLM_API_KEY" in refused.text
        )
        await add_profile(client, headers, pid, **body, api_key_env="LOCAL_LLM_API_KEY")


async def test_a_profile_saved_before_the_rule_still_cannot_send_quarrys_settings(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    headers, pid = await project_with_documents(app, client, "legacy@example.org")
    made = await add_profile(client, headers, pid, name="old", model="m", base_url=server.base_url)
    async with app.state.sessionmaker() as session:  # as an earlier version could have saved it
        await session.execute(
            update(ModelProfileRow)
            .where(ModelProfileRow.id == uuid.UUID(made["id"]))
            .values(api_key_env="QUARRY_SECRET_KEY")
        )
        await session.commit()
    shown = await client.get(f"{API}/projects/{pid}/profiles/{made['id']}", headers=headers)
    assert shown.status_code == 200 and shown.json()["api_key_present"] is False
    response = await client.post(
        f"{API}/projects/{pid}/runs", json={"profile": "old"}, headers=headers
    )
    assert response.status_code == 400 and "Quarry's own settings" in response.text
    assert server.calls(status=None) == 0


async def test_a_change_that_breaks_a_profile_is_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, "patch@example.org")
    pid = (await create_project(client, headers))["id"]
    made = await add_profile(client, headers, pid, name="p", model="m", context_window=8192)
    url = f"{API}/projects/{pid}/profiles/{made['id']}"
    too_big = await client.patch(url, json={"max_output_tokens": 9000}, headers=headers)
    assert too_big.status_code == 400 and "smaller than the context" in too_big.text
    nulled = await client.patch(url, json={"model": None}, headers=headers)
    assert nulled.status_code == 400 and "cannot be null: model" in nulled.text


async def test_a_run_naming_a_profile_asks_its_model_on_its_server(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM, server: FakeLLM
) -> None:
    headers, pid = await project_with_documents(app, client, "named@example.org")
    profile = await add_profile(
        client, headers, pid, name="local", model="served-model", base_url=server.base_url
    )
    run = await start_run(client, headers, pid, profile="local")
    assert run["status"] == "completed", run
    assert run["model"] == "served-model"
    assert run["settings"]["profile_id"] == profile["id"]
    assert run["settings"]["profile_name"] == "local"
    assert [r.model for r in server.requests] == ["served-model"] * 2
    assert fake_llm.calls(status=None) == 0  # the environment's server was not asked
    assert all(r.max_tokens for r in server.requests)  # max_tokens on every call

    by_id = await start_run(client, headers, pid, profile=profile["id"], force_fresh=True)
    assert by_id["status"] == "completed" and server.calls() == 4

    missing = await client.post(
        f"{API}/projects/{pid}/runs", json={"profile": "nope"}, headers=headers
    )
    assert missing.status_code == 404 and "No model profile named 'nope'" in missing.text


async def test_what_auto_learned_is_kept_on_the_profile(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    await auto_learns_and_keeps(app, client, server)


@pytest.mark.postgres
async def test_what_auto_learned_is_kept_on_the_profile_on_postgresql(
    tmp_path: Path, fake_llm: FakeLLM, server: FakeLLM
) -> None:
    with temporary_postgres_database("quarry_profiles") as database_url:
        settings = make_settings(tmp_path, fake_llm, database_url=database_url)
        async with running_app(settings) as (app, client):
            await auto_learns_and_keeps(app, client, server)


async def auto_learns_and_keeps(app: FastAPI, client: httpx.AsyncClient, server: FakeLLM) -> None:
    server.reject_json_schema = True
    server.wrap = "fence"
    headers, pid = await project_with_documents(app, client, "learn@example.org", documents=3)
    profile = await add_profile(
        client, headers, pid, name="local", model="served-model", base_url=server.base_url
    )
    run = await start_run(client, headers, pid, profile="local")
    assert run["status"] == "completed", run
    assert run["counts"]["succeeded"] == 3
    url = f"{API}/projects/{pid}/profiles/{profile['id']}"
    assert (await client.get(url, headers=headers)).json()["learned_mode"] == "json_object"

    server.reset()
    again = await start_run(client, headers, pid, profile="local", force_fresh=True)
    assert again["status"] == "completed" and again["settings"]["learned_mode"] == "json_object"
    # Straight to the mode that works: not one refused request.
    assert {r.output_mode for r in server.requests} == {"json_object"}
    assert {r.status for r in server.requests} == {200}

    # Pointed at another model, the profile has learned nothing about it yet.
    moved = await client.patch(url, json={"model": "other-model"}, headers=headers)
    assert moved.status_code == 200 and moved.json()["learned_mode"] is None
    kept = await client.patch(url, json={"rpm": 60}, headers=headers)  # limits say nothing
    assert kept.json()["learned_mode"] is None and kept.json()["rpm"] == 60


async def test_a_one_slot_server_is_driven_by_the_profiles_concurrency(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    server.slots = 1
    server.latency = 0.1
    headers, pid = await project_with_documents(app, client, "slot@example.org", documents=5)
    await add_profile(
        client,
        headers,
        pid,
        name="one-slot",
        model="served-model",
        base_url=server.base_url,
        concurrency=1,
        timeout_seconds=600,
    )
    run = await start_run(client, headers, pid, profile="one-slot")
    assert run["status"] == "completed" and run["counts"]["succeeded"] == 5, run
    assert server.max_concurrent == 1  # no request ever queued inside the server
    assert [r.status for r in server.requests] == [200] * 5  # no timeouts, no retries


async def test_a_profile_in_use_by_a_running_run_cannot_be_deleted(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    headers, pid = await project_with_documents(app, client, "busy@example.org", documents=1)
    profile = await add_profile(
        client, headers, pid, name="slow", model="served-model", base_url=server.base_url
    )
    server.inject("timeout")  # the call is held: the run stays running
    response = await client.post(
        f"{API}/projects/{pid}/runs", json={"profile": "slow"}, headers=headers
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    for _ in range(400):
        if server.in_flight:
            break
        await asyncio.sleep(0.025)
    url = f"{API}/projects/{pid}/profiles/{profile['id']}"
    refused = await client.delete(url, headers=headers)
    assert refused.status_code == 409 and "in use by a run" in refused.text
    server.stop()  # the held call ends; the run finishes one way or the other
    cancel = await client.post(f"{API}/projects/{pid}/runs/{run_id}/cancel", headers=headers)
    assert cancel.status_code in (200, 409), cancel.text
    await wait_for_run(client, headers, pid, run_id)
    assert (await client.delete(url, headers=headers)).status_code == 204


async def test_the_second_profile_of_a_running_two_profile_run_cannot_be_deleted(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    headers, pid = await project_with_documents(app, client, "pair@example.org", documents=1)
    await add_profile(client, headers, pid, name="one", model="model-a", base_url=server.base_url)
    second = await add_profile(
        client, headers, pid, name="two", model="model-b", base_url=server.base_url
    )
    server.inject("timeout", times=20)  # every call is held: the run stays running
    response = await client.post(
        f"{API}/projects/{pid}/runs", json={"profiles": ["one", "two"]}, headers=headers
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    for _ in range(400):
        if server.in_flight:
            break
        await asyncio.sleep(0.025)
    url = f"{API}/projects/{pid}/profiles/{second['id']}"
    refused = await client.delete(url, headers=headers)
    assert refused.status_code == 409 and "in use by a run" in refused.text
    server.stop()
    cancel = await client.post(f"{API}/projects/{pid}/runs/{run_id}/cancel", headers=headers)
    assert cancel.status_code in (200, 409), cancel.text
    await wait_for_run(client, headers, pid, run_id)
    assert (await client.delete(url, headers=headers)).status_code == 204
