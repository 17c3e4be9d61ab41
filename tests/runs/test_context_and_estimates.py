"""Context that fits and estimates that learn, end to end against the fake: the document
budget comes from the profile's context window (a call that would overflow it is never
sent), a server's "context length exceeded" answer leads to a smaller selection of the
document and a pair that succeeds, and a second run's estimate is within 5 % of its tokens
once the first run's usage calibrated it to the model's tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_project,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM, FakeRequest, estimate_prompt_tokens
from tests.support.postgres import temporary_postgres_database

API = "/api/v1"
Headers = dict[str, str]
FILLER = "The committee met and discussed the agenda at some length without a decision. "


def answer(request: FakeRequest) -> dict[str, Any]:
    return {"found": True, "evidence": "Lyon", "value": "Lyon", "confidence": 0.9}


@pytest.fixture
def server() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        fake.default_reply = answer
        yield fake


def long_document(n: int, chars: int) -> bytes:
    text = f"Report {n}. The study site was Lyon.\n" + FILLER * (chars // len(FILLER))
    return text.encode()


async def project(
    app: FastAPI, client: httpx.AsyncClient, email: str, documents: list[bytes]
) -> tuple[Headers, str, list[str]]:
    headers = await sign_up(app, client, email)
    pid = (await create_project(client, headers))["id"]
    await add_variable(
        client, headers, pid, name="site", description="The city of the study site", type="text"
    )
    ids = await add_documents(client, headers, pid, documents, start=0)
    return headers, pid, ids


async def add_documents(
    client: httpx.AsyncClient, headers: Headers, pid: str, documents: list[bytes], start: int
) -> list[str]:
    files = [(f"r{start + i}.txt", data, "text/plain") for i, data in enumerate(documents)]
    response = await upload(client, headers, pid, files)
    assert response.status_code == 201, response.text
    await wait_for_documents(client, headers, pid)
    return [d["id"] for d in response.json()["items"]]


async def add_profile(
    client: httpx.AsyncClient, headers: Headers, pid: str, **fields: Any
) -> dict[str, Any]:
    response = await client.post(f"{API}/projects/{pid}/profiles", json=fields, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def run(client: httpx.AsyncClient, headers: Headers, pid: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"{API}/projects/{pid}/runs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return await wait_for_run(client, headers, pid, response.json()["id"])


async def logs(client: httpx.AsyncClient, headers: Headers, pid: str, run_id: str) -> str:
    response = await client.get(
        f"{API}/projects/{pid}/runs/{run_id}/logs", params={"limit": 500}, headers=headers
    )
    return "\n".join(e["message"] for e in response.json()["items"])


async def test_a_small_context_window_sets_the_document_budget(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    server.context_limit = 4096  # the server refuses anything longer: nothing may be
    headers, pid, _ = await project(app, client, "ctx@example.org", [long_document(1, 40_000)])
    await add_profile(
        client,
        headers,
        pid,
        name="8k",
        model="m",
        base_url=server.base_url,
        context_window=4096,
        max_output_tokens=512,
    )
    done = await run(client, headers, pid, profile="8k")
    assert done["status"] == "completed" and done["counts"]["succeeded"] == 1, done
    budget = done["settings"]["max_document_chars"]
    assert 1000 <= budget < 4096 * 4  # not the 400 000 characters of the environment
    (request,) = server.requests
    assert request.status == 200
    assert estimate_prompt_tokens(request.messages) + (request.max_tokens or 0) <= 4096
    assert "Excerpts of a" in request.text  # the passages chosen for the variable
    assert "Lyon" in request.text  # the opening, where the site is named, is among them


async def test_a_context_that_leaves_no_room_refuses_the_run(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    headers, pid, _ = await project(app, client, "tiny@example.org", [long_document(1, 2000)])
    # A variable whose own instructions take most of the context.
    await add_variable(
        client, headers, pid, name="notes", description="Summarise the notes. " * 120, type="text"
    )
    await add_profile(
        client,
        headers,
        pid,
        name="tiny",
        model="m",
        base_url=server.base_url,
        context_window=1024,
        max_output_tokens=512,
    )
    response = await client.post(
        f"{API}/projects/{pid}/runs", json={"profile": "tiny"}, headers=headers
    )
    assert response.status_code == 400, response.text
    assert "leaves no room for the document" in response.json()["detail"]
    assert server.calls(status=None) == 0


async def test_context_length_exceeded_is_asked_again_smaller_and_succeeds(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    # The profile claims 32k tokens; the server really holds 3k (a misconfigured -c).
    server.context_limit = 3000
    headers, pid, _ = await project(app, client, "exceeded@example.org", [long_document(1, 30_000)])
    await add_profile(
        client,
        headers,
        pid,
        name="claims-32k",
        model="m",
        base_url=server.base_url,
        context_window=32_000,
        max_output_tokens=512,
    )
    done = await run(client, headers, pid, profile="claims-32k")
    assert done["status"] == "completed" and done["counts"]["succeeded"] == 1, done
    statuses = [r.status for r in server.requests]
    assert statuses[0] == 400 and statuses[-1] == 200, statuses
    sizes = [len(r.text) for r in server.requests]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] / 2
    assert "did not fit the model's context" in await logs(client, headers, pid, done["id"])


async def test_a_grouped_call_sends_an_output_budget_for_every_variable(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    headers, pid, _ = await project(app, client, "group@example.org", [long_document(1, 500)])
    await add_variable(client, headers, pid, name="year", description="The year", type="integer")
    await add_profile(client, headers, pid, name="p", model="m", base_url=server.base_url)
    await run(client, headers, pid, profile="p")
    singles = {r.variable: r.max_tokens for r in server.requests}
    assert singles["site"] and singles["year"] and singles["site"] > singles["year"]  # by type

    response = await client.patch(f"{API}/projects/{pid}", json={"group_size": 2}, headers=headers)
    assert response.status_code == 200, response.text
    server.reset()
    await run(client, headers, pid, profile="p", force_fresh=True)
    grouped = [r for r in server.requests if r.is_group]
    assert grouped and grouped[0].max_tokens is not None
    assert grouped[0].max_tokens >= singles["site"] + singles["year"]


async def test_the_second_runs_estimate_is_within_5_percent(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    await second_estimate_within_5_percent(app, client, server)


@pytest.mark.postgres
async def test_the_second_runs_estimate_is_within_5_percent_on_postgresql(
    tmp_path: Path, fake_llm: FakeLLM, server: FakeLLM
) -> None:
    with temporary_postgres_database("quarry_calibration") as database_url:
        settings = make_settings(tmp_path, fake_llm, database_url=database_url)
        async with running_app(settings) as (app, client):
            await second_estimate_within_5_percent(app, client, server)


async def second_estimate_within_5_percent(
    app: FastAPI, client: httpx.AsyncClient, server: FakeLLM
) -> None:
    server.tokens_per_char = 0.31  # a tokenizer that counts 24 % more than chars/4
    first_docs = [long_document(n, 3000 + 500 * n) for n in range(3)]
    headers, pid, first_ids = await project(app, client, "estimate@example.org", first_docs)
    await add_profile(client, headers, pid, name="local", model="m", base_url=server.base_url)

    async def estimate(ids: list[str]) -> int:
        response = await client.post(
            f"{API}/projects/{pid}/runs",
            json={"profile": "local", "dry_run": True, "document_ids": ids},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        return int(response.json()["estimated_input_tokens"])

    guessed = await estimate(first_ids)
    first = await run(client, headers, pid, profile="local", document_ids=first_ids)
    assert first["status"] == "completed", first
    assert abs(guessed - first["tokens_in"]) / first["tokens_in"] > 0.15  # chars/4 was off

    second_ids = await add_documents(
        client, headers, pid, [long_document(n, 2800 + 700 * n) for n in range(10, 13)], start=3
    )
    calibrated = await estimate(second_ids)
    second = await run(client, headers, pid, profile="local", document_ids=second_ids)
    assert second["status"] == "completed", second
    assert abs(calibrated - second["tokens_in"]) / second["tokens_in"] <= 0.05, (
        calibrated,
        second["tokens_in"],
    )
    assert second["settings"]["tokens_per_char"] == pytest.approx(0.31, abs=0.01)
