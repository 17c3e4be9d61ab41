"""Profiles of LangChain providers through the API: an Azure OpenAI profile (built by
`init_chat_model`, langchain-openai's `AzureChatOpenAI`) runs a real extraction against the
fake server's Azure route with the key its variable names, and the key shows up nowhere a user
or an operator reads (responses, the run's log, the process's logs); profiles that could not
make calls are refused when saved, naming what to install or set."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_project,
    list_extractions,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM, FakeRequest

API = "/api/v1"
KEY_ENV = "TEST_AZURE_OPENAI_API_KEY"
KEY = "azure-key-77d2e0-must-never-be-shown"


def answer(request: FakeRequest) -> dict[str, Any]:
    if request.variable == "visits":
        return {"found": True, "evidence": "seen 3 times", "value": 3, "confidence": 0.8}
    return {"found": True, "evidence": "The site was Lyon", "value": "Lyon", "confidence": 0.9}


async def project(
    client: httpx.AsyncClient, app: FastAPI, email: str
) -> tuple[dict[str, str], str]:
    headers = await sign_up(app, client, email)
    pid = (await create_project(client, headers))["id"]
    await add_variable(client, headers, pid, name="site", description="The city", type="text")
    await add_variable(client, headers, pid, name="visits", description="Visits", type="integer")
    files = [
        (f"r{i}.txt", f"Report {i}. The site was Lyon, seen 3 times.".encode(), "text/plain")
        for i in range(2)
    ]
    assert (await upload(client, headers, pid, files)).status_code == 201
    await wait_for_documents(client, headers, pid)
    return headers, pid


async def test_an_azure_profile_runs_an_extraction_and_never_shows_its_key(
    tmp_path: Path,
    fake_llm: FakeLLM,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    with FakeLLM() as azure:
        azure.azure_api_key = KEY
        azure.default_reply = answer
        # The app's logs, at DEBUG, go to the captured stderr.
        settings = make_settings(tmp_path, fake_llm, log_level="DEBUG")
        async with running_app(settings) as (app, client):
            headers, pid = await project(client, app, "azure@example.org")
            made = await client.post(
                f"{API}/projects/{pid}/profiles",
                json={
                    "name": "azure",
                    "provider": "azure_openai",  # LangChain's name, saved as Quarry's
                    "model": "extractor",
                    "base_url": f"{azure.azure_endpoint}/?api-version=2024-10-21",
                    "api_key_env": KEY_ENV,
                    "output_mode": "tools",
                },
                headers=headers,
            )
            assert made.status_code == 201, made.text
            assert made.json()["provider"] == "azure"
            assert made.json()["api_key_present"] is True
            started = await client.post(
                f"{API}/projects/{pid}/runs", json={"profile": "azure"}, headers=headers
            )
            assert started.status_code == 202, started.text
            run = await wait_for_run(client, headers, pid, started.json()["id"])
            assert run["status"] == "completed", run
            values = {
                (e["variable_id"], e["value"])
                for e in await list_extractions(client, headers, pid, run_id=run["id"])
            }
            assert {v for _, v in values} == {"Lyon", 3}  # validated and typed as usual
            assert run["tokens_in"] > 0 and run["tokens_out"] > 0
            shown = [
                made.text,
                started.text,
                (await client.get(f"{API}/projects/{pid}/runs/{run['id']}", headers=headers)).text,
                (await client.get(f"{API}/projects/{pid}/profiles", headers=headers)).text,
                (
                    await client.get(f"{API}/projects/{pid}/runs/{run['id']}/logs", headers=headers)
                ).text,
                (await client.get(f"{API}/projects/{pid}/extractions", headers=headers)).text,
            ]
    chats = [r for r in azure.requests if r.is_chat]
    assert len(chats) == 4 and fake_llm.requests == []  # 2 documents × 2 variables, on Azure
    assert {r.deployment for r in chats} == {"extractor"}
    assert {r.query["api-version"] for r in chats} == {"2024-10-21"}
    assert {r.headers["api-key"] for r in chats} == {KEY}
    assert {r.output_mode for r in chats} == {"tools"}
    assert all(KEY not in text for text in shown)
    logs = capsys.readouterr().err
    assert "runs.finished" in logs and KEY not in logs


@pytest.mark.skipif(
    importlib.util.find_spec("langchain_anthropic") is not None,
    reason="langchain-anthropic is installed here",
)
async def test_a_provider_without_its_package_is_refused_when_saved(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, "claude@example.org")
    pid = (await create_project(client, headers))["id"]
    response = await client.post(
        f"{API}/projects/{pid}/profiles",
        json={
            "name": "claude",
            "provider": "anthropic",
            "model": "claude-sonnet-4",
            "api_key_env": "ANTHROPIC_API_KEY",
        },
        headers=headers,
    )
    assert response.status_code == 400, response.text
    assert "pip install langchain-anthropic" in response.json()["detail"]
    # Nor can an existing profile be switched to it.
    made = await client.post(
        f"{API}/projects/{pid}/profiles",
        json={"name": "local", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
        headers=headers,
    )
    switched = await client.patch(
        f"{API}/projects/{pid}/profiles/{made.json()['id']}",
        json={"provider": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"},
        headers=headers,
    )
    assert switched.status_code == 400 and "langchain-anthropic" in switched.text


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"base_url": "https://res.openai.azure.com", "api_key_env": "K"}, "api-version="),
        ({"base_url": "https://res.openai.azure.com/?api-version=2024-10-21"}, "api_key_env"),
        ({"api_key_env": "K"}, "base_url"),
    ],
)
async def test_an_azure_profile_needs_its_api_version_and_key_name(
    app: FastAPI, client: httpx.AsyncClient, fields: dict[str, str], says: str
) -> None:
    headers = await sign_up(app, client, "az@example.org")
    pid = (await create_project(client, headers))["id"]
    response = await client.post(
        f"{API}/projects/{pid}/profiles",
        json={"name": "azure", "provider": "azure", "model": "dep", **fields},
        headers=headers,
    )
    assert response.status_code == 400, response.text
    assert says in response.json()["detail"]
