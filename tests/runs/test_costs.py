"""Cost: an estimate before a run that matches what the provider then reports, the run's
cost as it goes at the configured price, and a budget that stops a run part-way."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarry.app import create_app
from quarry.llm.client import estimate_prompt_tokens
from quarry.runs.estimate import BlockSizes, CallShape, render_call
from tests.conftest import make_settings
from tests.support import fake_llm as fake
from tests.support.api import (
    add_variable,
    create_project,
    create_schema,
    list_extractions,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM

Headers = dict[str, str]
# Prices high enough that a few calls to the fake cost whole cents.
PRICES = {"fake-model": {"input": 1000.0, "output": 4000.0}}

VARIABLES: list[dict[str, Any]] = [
    {"name": "age", "description": "Age of the patient in years", "type": "integer"},
    {
        "name": "design",
        "description": "Study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort", "Case-control"],
        "instructions": "Use RCT for any randomised trial.",
    },
    {
        "name": "drug",
        "label": "Study drug",
        "description": "The drug the trial tests, as named in the methods section",
        "type": "text",
        "examples": [{"value": "atorvastatin", "snippet": "patients received atorvastatin"}],
    },
]


def _long_document() -> str:
    """Five pages, well past the 2,000-character context budget of these tests."""
    rng = random.Random(7)
    words = ["trial", "patients", "dose", "placebo", "outcome", "week", "group", "blood"]
    pages = []
    for number in range(5):
        text = " ".join(rng.choice(words) for _ in range(220))
        pages.append(f"Page {number}: {text}. The study drug was atorvastatin 40 mg.")
    return "\f".join(pages)


DOCUMENTS = {
    "short.txt": "A 42-year-old man.",
    "medium.txt": "Methods. " + "Patients were randomised to drug or placebo. " * 15,
    "paged.txt": "Cover page\fThe design was a cohort <<<not a fence>>> study.\fReferences",
    "long.txt": _long_document(),
}


@asynccontextmanager
async def _app(
    tmp_path: Path, fake_llm: FakeLLM | None, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(tmp_path, fake_llm, llm_max_document_chars=2000, **overrides)
    await create_schema(settings.database_url)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield app, client


async def _project(
    app: FastAPI,
    client: httpx.AsyncClient,
    documents: dict[str, str],
    variables: list[dict[str, Any]],
) -> tuple[Headers, str]:
    headers = await sign_up(app, client, "costs@example.org")
    pid = (await create_project(client, headers))["id"]
    for spec in variables:
        await add_variable(client, headers, pid, **spec)
    files = [(name, text.encode(), "text/plain") for name, text in documents.items()]
    assert (await upload(client, headers, pid, files)).status_code == 201
    assert all(d["status"] == "ready" for d in await wait_for_documents(client, headers, pid))
    return headers, pid


async def _post_run(
    client: httpx.AsyncClient, headers: Headers, pid: str, **body: Any
) -> httpx.Response:
    return await client.post(f"/api/v1/projects/{pid}/runs", json=body, headers=headers)


async def _estimate(
    client: httpx.AsyncClient, headers: Headers, pid: str, **body: Any
) -> dict[str, Any]:
    response = await _post_run(client, headers, pid, dry_run=True, **body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _run_count(client: httpx.AsyncClient, headers: Headers, pid: str) -> int:
    response = await client.get(f"/api/v1/projects/{pid}/runs", headers=headers)
    return int(response.json()["total"])


def _priced(tokens_in: int, tokens_out: int) -> float:
    price = PRICES["fake-model"]
    return (tokens_in * price["input"] + tokens_out * price["output"]) / 1_000_000


async def test_the_estimate_matches_the_tokens_the_provider_reports(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    async with _app(tmp_path, fake_llm, llm_prices=PRICES) as (app, client):
        headers, pid = await _project(app, client, DOCUMENTS, VARIABLES)

        estimate = await _estimate(client, headers, pid)
        assert await _run_count(client, headers, pid) == 0  # a dry run creates nothing
        assert estimate["pairs"] == estimate["calls"] == 12 and estimate["cached_pairs"] == 0
        assert (estimate["documents"], estimate["variables"]) == (4, 3)
        assert estimate["model"] == "fake-model" and estimate["long_documents"] == 1
        # A project without earlier answers assumes 100 output tokens a call.
        assert estimate["estimated_output_tokens"] == 12 * 100
        assert estimate["estimated_cost_usd"] == pytest.approx(
            _priced(estimate["estimated_input_tokens"], estimate["estimated_output_tokens"])
        )
        per_variable = {v["name"]: v for v in estimate["per_variable"]}
        assert (
            sum(v["estimated_input_tokens"] for v in per_variable.values())
            == (estimate["estimated_input_tokens"])
        )

        response = await _post_run(client, headers, pid)
        assert response.status_code == 202, response.text
        run = await wait_for_run(client, headers, pid, response.json()["id"])
        assert run["status"] == "completed"

        calls = [r for r in fake_llm.requests if r.is_chat and r.status == 200]
        assert len(calls) == 12
        reported = sum(fake.estimate_prompt_tokens(r.messages) for r in calls)
        assert run["tokens_in"] == reported  # what the provider reported, summed
        ratio = estimate["estimated_input_tokens"] / reported
        assert 0.9 <= ratio <= 1.1, ratio
        # In fact exact: the estimate counts the very messages the run then sent, the long
        # document's per-variable excerpts included.
        assert estimate["estimated_input_tokens"] == reported
        for name, variable in per_variable.items():
            sent = [r for r in calls if r.variable == name]
            assert variable["estimated_input_tokens"] == sum(
                fake.estimate_prompt_tokens(r.messages) for r in sent
            )
        long_calls = [r for r in calls if "Excerpts of a 5-page document" in r.text]
        assert len(long_calls) == 3

        # The run's cost is its tokens at the configured price, and its extractions add up to it.
        assert run["cost_usd"] == pytest.approx(_priced(run["tokens_in"], run["tokens_out"]))
        assert run["budget_usd"] is None
        extractions = await list_extractions(client, headers, pid, run_id=run["id"])
        assert sum(e["cost_usd"] for e in extractions) == pytest.approx(run["cost_usd"])

        # Again: every answer is in the cache, so nothing would be called or cost anything…
        again = await _estimate(client, headers, pid)
        assert again["cached_pairs"] == 12 and again["calls"] == 0
        assert again["estimated_input_tokens"] == 0 and again["estimated_cost_usd"] == 0
        # …unless forced fresh; the output estimate now comes from the answers so far.
        fresh = await _estimate(client, headers, pid, force_fresh=True)
        assert fresh["calls"] == 12
        # (Counted at the tokens per character the first run showed — the fake's chars/4
        # plus its rounding — so within a fraction of a token per call of the first estimate.)
        assert fresh["estimated_input_tokens"] == pytest.approx(
            estimate["estimated_input_tokens"], abs=fresh["calls"]
        )
        assert fresh["estimated_output_tokens"] == run["tokens_out"]


def _answer_every_variable(request: fake.FakeRequest) -> dict[str, Any]:
    """ "Not stated" for each variable asked, in the grouped shape when several are."""
    empty = {"found": False, "evidence": None, "value": None, "confidence": None}
    if len(request.variables) > 1:
        return {"answers": [{"variable": name, **empty} for name in request.variables]}
    return empty


async def test_the_estimate_counts_grouped_calls_as_the_run_makes_them(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = _answer_every_variable
    async with _app(tmp_path, fake_llm, llm_prices=PRICES) as (app, client):
        headers, pid = await _project(app, client, DOCUMENTS, VARIABLES)
        response = await client.patch(
            f"/api/v1/projects/{pid}", json={"group_size": 2}, headers=headers
        )
        assert response.status_code == 200, response.text

        estimate = await _estimate(client, headers, pid)
        # Three documents × (age and design together, then drug alone); the long document's
        # variables are asked one by one, each with its own excerpts.
        assert estimate["pairs"] == 12 and estimate["calls"] == 3 * 2 + 3

        response = await _post_run(client, headers, pid)
        run = await wait_for_run(client, headers, pid, response.json()["id"])
        assert run["status"] == "completed"
        calls = [r for r in fake_llm.requests if r.is_chat and r.status == 200]
        assert len(calls) == estimate["calls"]
        assert sum(len(r.variables) > 1 for r in calls) == 3
        reported = sum(fake.estimate_prompt_tokens(r.messages) for r in calls)
        assert run["tokens_in"] == reported
        assert estimate["estimated_input_tokens"] == reported
        # Per variable, grouped calls are shared out as the run shares them (give or take the
        # odd token of a call that does not split evenly).
        extractions = await list_extractions(client, headers, pid, run_id=run["id"])
        for variable in estimate["per_variable"]:
            spent = sum(
                e["tokens_in"] for e in extractions if e["variable_name"] == variable["name"]
            )
            assert abs(variable["estimated_input_tokens"] - spent) <= 3


async def test_without_an_llm_an_estimate_is_still_given(tmp_path: Path) -> None:
    async with _app(tmp_path, None) as (app, client):
        headers, pid = await _project(app, client, {"a.txt": "Some text."}, VARIABLES[:1])
        estimate = await _estimate(client, headers, pid)
        assert estimate["pairs"] == 1 and estimate["estimated_input_tokens"] > 0
        assert estimate["estimated_cost_usd"] is None  # fake-model has no known price
        real = await _post_run(client, headers, pid)
        assert real.status_code == 400 and real.json()["error"] == "llm_not_configured"
        assert await _run_count(client, headers, pid) == 0


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"document_ids": ["00000000-0000-0000-0000-000000000000"]}, 404, "No such document"),
        ({"variable_ids": ["00000000-0000-0000-0000-000000000000"]}, 404, "No such variable"),
        ({"document_ids": "not-a-list"}, 422, "document_ids"),
        ({"budget_usd": 0}, 422, "budget_usd"),
        ({"budget_usd": 1.0}, 400, "price of fake-model is unknown"),
    ],
)
async def test_a_dry_run_is_checked_like_a_real_run(
    app: FastAPI,
    client: httpx.AsyncClient,
    body: dict[str, Any],
    status: int,
    needle: str,
) -> None:
    headers, pid = await _project(app, client, {"a.txt": "Some text."}, VARIABLES[:1])
    for dry_run in (True, False):
        response = await _post_run(client, headers, pid, dry_run=dry_run, **body)
        assert response.status_code == status, response.text
        assert needle in response.json()["detail"]
    assert await _run_count(client, headers, pid) == 0


async def test_a_dry_run_without_ready_documents_is_refused(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, "empty@example.org")
    pid = (await create_project(client, headers))["id"]
    response = await _post_run(client, headers, pid, dry_run=True)
    assert response.status_code == 400 and "no ready documents" in response.json()["detail"]


async def test_a_budget_stops_new_calls_and_a_higher_one_lets_the_run_go_on(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    async with _app(tmp_path, fake_llm, llm_prices=PRICES, llm_concurrency=1) as (app, client):
        documents = {f"d{i}.txt": f"Document {i}: " + "words " * 200 for i in range(10)}
        headers, pid = await _project(app, client, documents, VARIABLES[:1])
        per_call = (await _estimate(client, headers, pid))["per_variable"][0]
        call_cost = _priced(per_call["estimated_input_tokens"] // 10, 13)  # ~13 tokens answered
        budget = round(call_cost * 2.5, 2)  # reached by the third call
        fake_llm.latency = 0.3

        response = await _post_run(client, headers, pid, budget_usd=budget)
        assert response.status_code == 202, response.text
        started = response.json()
        assert started["budget_usd"] == budget
        run = await wait_for_run(client, headers, pid, started["id"])

        reason = f"The run's budget of ${budget:.2f} was reached."
        assert run["status"] == "completed_with_errors" and run["error"] == reason
        assert run["budget_reached"] is True
        made = len(fake_llm.requests)
        # Each call holds its estimated cost (its input, and 200 output tokens) against the
        # budget before it is sent: the call that would pass the budget is never made, so
        # with one call at a time the run stays within it.
        assert 2 <= made <= 3, made
        assert run["cost_usd"] <= budget
        assert run["counts"]["cancelled"] == 10 - made
        cancelled = await list_extractions(
            client, headers, pid, run_id=run["id"], status="cancelled"
        )
        assert {e["error"] for e in cancelled} == {reason}
        assert all(e["tokens_in"] == 0 for e in cancelled)
        logs = await client.get(f"/api/v1/projects/{pid}/runs/{run['id']}/logs", headers=headers)
        reached = [e for e in logs.json()["items"] if e["event"] == "run.budget_reached"]
        assert len(reached) == 1 and reached[0]["message"].startswith(reason)

        # Retrying as it is would stop at once: it says what to do instead.
        retry = f"/api/v1/projects/{pid}/runs/{run['id']}/retry"
        refused = await client.post(retry, headers=headers)
        assert refused.status_code == 409 and "higher budget_usd" in refused.json()["detail"]
        fake_llm.latency = 0.0
        response = await client.post(retry, json={"budget_usd": None}, headers=headers)
        assert response.status_code == 202, response.text
        run = await wait_for_run(client, headers, pid, run["id"])
        assert run["status"] == "completed" and run["error"] is None
        assert run["budget_reached"] is False
        assert run["budget_usd"] is None and run["counts"]["cancelled"] == 0
        assert len(fake_llm.requests) == 10
        logs = await client.get(f"/api/v1/projects/{pid}/runs/{run['id']}/logs", headers=headers)
        assert [e["event"] for e in logs.json()["items"]].count("run.budget_reached") == 1


@pytest.mark.parametrize("group", [1, 3])
def test_the_estimate_sums_call_tokens_exactly_without_rendering_them(group: int) -> None:
    rng = random.Random(group)
    blocks = ["x" * rng.randrange(0, 5000) for _ in range(25)]
    for _ in range(6):
        names = [f"v{n}" for n in range(group)]
        prompts = ["y" * rng.randrange(0, 900) for _ in range(group)]
        shape = CallShape.of(lambda block: render_call(block, names, prompts))  # noqa: B023
        each = [estimate_prompt_tokens(render_call(block, names, prompts)) for block in blocks]
        assert [shape.tokens(len(b)) for b in blocks] == each
        sizes = BlockSizes()
        for block in blocks:
            sizes.add(len(block))
        assert sizes.tokens_for(shape) == sum(each)
