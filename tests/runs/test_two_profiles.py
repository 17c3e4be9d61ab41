"""Two models, one answer: a run that names two profiles asks every pair of both, stores
whether they agree, lists the disagreements first for review, flags them in the exports, and
its evaluation measures each profile and their agreement against gold — on SQLite and
PostgreSQL, with the fake LLM answering differently per model name."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openpyxl
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
from tests.support.fake_llm import FakeLLM, FakeRequest, answer_each
from tests.support.postgres import temporary_postgres_database

API = "/api/v1"
Headers = dict[str, str]
DOCUMENTS = {
    "a.txt": "Site report. The trial ran in Lyon. It enrolled 120 patients. Design: RCT.",
    "b.txt": "Site report. The trial ran in Porto. It enrolled 64 patients. Design: RCT.",
    "c.txt": "Site report. The trial ran in Graz. It enrolled 31 patients. Design: RCT.",
}
CITIES = {"a.txt": "Lyon", "b.txt": "Porto", "c.txt": "Graz"}
ENROLLED = {"a.txt": 120, "b.txt": 64, "c.txt": 31}
#: The right answers; both models say RCT for b.txt, which is wrong.
GOLD = (
    "filename,site,enrolled,design\na.txt,Lyon,120,RCT\nb.txt,Porto,64,Cohort\nc.txt,Graz,31,RCT\n"
)
PRICES = {"first": (1.0, 2.0), "second": (10.0, 20.0)}


def document_of(text: str) -> str:
    return next(name for name, city in CITIES.items() if f"ran in {city}" in text)


def answer(model: str, name: str, text: str) -> dict[str, Any]:
    """Model "model-a" reads every document right (but calls b.txt an RCT); "model-b" writes
    cities in capitals (the same text), misreads b.txt's enrolment as 46, says c.txt does not
    state it, and answers c.txt's design outside the allowed values (so it fails)."""
    document = document_of(text)
    city, count = CITIES[document], ENROLLED[document]
    if name == "site":
        value = city.upper() + "." if model == "model-b" else city
        return {"found": True, "evidence": f"The trial ran in {city}.", "value": value}
    if name == "enrolled":
        if model == "model-b" and document == "c.txt":
            return {"found": False, "evidence": "", "value": None}
        if model == "model-b" and document == "b.txt":
            count = 46
        return {"found": True, "evidence": f"It enrolled {count} patients.", "value": count}
    if model == "model-b" and document == "c.txt":
        return {"found": True, "evidence": "Design: RCT.", "value": "Case series"}
    return {"found": True, "evidence": "Design: RCT.", "value": "RCT"}


def model_reply(request: FakeRequest) -> Any:
    return answer_each(lambda name: answer(request.model, name, request.text))(request)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def served(
    request: pytest.FixtureRequest, tmp_path: Path, fake_llm: FakeLLM
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, FakeLLM]]:
    fake_llm.default_reply = model_reply
    if request.param == "sqlite":
        async with running_app(make_settings(tmp_path, fake_llm)) as (app, client):
            yield app, client, fake_llm
        return
    with temporary_postgres_database("quarry_two_models") as database_url:
        settings = make_settings(tmp_path, fake_llm, database_url=database_url)
        async with running_app(settings) as (app, client):
            yield app, client, fake_llm


async def add_profile(
    client: httpx.AsyncClient, headers: Headers, pid: str, name: str, **fields: Any
) -> None:
    response = await client.post(
        f"{API}/projects/{pid}/profiles", json={"name": name, **fields}, headers=headers
    )
    assert response.status_code == 201, response.text


async def project(
    app: FastAPI, client: httpx.AsyncClient, fake: FakeLLM, email: str, group_size: int = 1
) -> tuple[Headers, str]:
    headers = await sign_up(app, client, email)
    pid = (await create_project(client, headers))["id"]
    if group_size > 1:
        response = await client.patch(
            f"{API}/projects/{pid}", json={"group_size": group_size}, headers=headers
        )
        assert response.status_code == 200, response.text
    await add_variable(client, headers, pid, name="site", description="The city", type="text")
    await add_variable(
        client, headers, pid, name="enrolled", description="Patients enrolled", type="integer"
    )
    await add_variable(
        client,
        headers,
        pid,
        name="design",
        description="Study design",
        type="category",
        allowed_values=["RCT", "Cohort"],
    )
    files = [(name, text.encode(), "text/plain") for name, text in DOCUMENTS.items()]
    assert (await upload(client, headers, pid, files)).status_code == 201
    await wait_for_documents(client, headers, pid)
    for name, model in (("first", "model-a"), ("second", "model-b")):
        price_in, price_out = PRICES[name]
        await add_profile(
            client,
            headers,
            pid,
            name,
            model=model,
            base_url=fake.base_url,
            price_input=price_in,
            price_output=price_out,
        )
    return headers, pid


async def two_profile_run(
    app: FastAPI, client: httpx.AsyncClient, fake: FakeLLM, group_size: int = 1
) -> tuple[Headers, str, dict[str, Any]]:
    headers, pid = await project(app, client, fake, "two@example.org", group_size)
    response = await client.post(
        f"{API}/projects/{pid}/runs", json={"profiles": ["first", "second"]}, headers=headers
    )
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["total"] == 18  # 3 documents × 3 variables, asked of both
    assert await wait_for_run(client, headers, pid, run["id"]) is not None
    run = (await client.get(f"{API}/projects/{pid}/runs/{run['id']}", headers=headers)).json()
    return headers, pid, run


def by_variable(run: dict[str, Any]) -> dict[str, tuple[int, int, int, int, float | None]]:
    return {
        v["name"]: (v["compared"], v["agreed"], v["disagreed"], v["one_missing"], v["rate"])
        for v in run["agreement"]["per_variable"]
    }


async def test_a_two_profile_run_reports_agreement_and_lists_disagreements_first(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    headers, pid, run = await two_profile_run(app, client, fake)

    # Every pair was asked of both models, each under its own model name.
    asked = {(r.model, document_of(r.text), r.variable) for r in fake.requests if r.is_chat}
    assert {(m, d, v) for m, d, v in asked if v} == {
        (m, d, v)
        for m in ("model-a", "model-b")
        for d in DOCUMENTS
        for v in ("site", "enrolled", "design")
    }
    # One answer failed (model-b's design of c.txt, outside the allowed values).
    assert run["status"] == "completed_with_errors", run
    assert run["counts"]["failed"] == 1 and run["counts"]["succeeded"] == 16

    # Agreement per variable: capitals and a full stop are the same text; 46 is not 64, and
    # "not stated" is not 31; c.txt's design has only one answer.
    assert run["agreement"]["profiles"] == ["first", "second"]
    assert by_variable(run) == {
        "site": (3, 3, 0, 0, 1.0),
        "enrolled": (3, 1, 2, 0, 0.3333),
        "design": (2, 2, 0, 1, 1.0),
    }
    assert run["agreement"]["overall"] == {
        "compared": 8,
        "agreed": 6,
        "disagreed": 2,
        "one_missing": 1,
        "rate": 0.75,
    }

    # Each profile's tokens at its own price, adding up to the run's.
    first, second = run["profiles"]
    assert (first["profile"], first["model"], second["profile"], second["model"]) == (
        "first",
        "model-a",
        "second",
        "model-b",
    )
    assert first["tokens_in"] + second["tokens_in"] == run["tokens_in"]
    assert first["tokens_out"] + second["tokens_out"] == run["tokens_out"]
    for profile in (first, second):
        price_in, price_out = PRICES[profile["profile"]]
        expected = (profile["tokens_in"] * price_in + profile["tokens_out"] * price_out) / 1e6
        assert profile["cost_usd"] == pytest.approx(expected)
    assert run["cost_usd"] == pytest.approx(first["cost_usd"] + second["cost_usd"])

    # Review order: the disagreements first, then the pair only one answered, then the rest.
    rows = await list_extractions(client, headers, pid, run_id=run["id"])
    assert len(rows) == 9  # one row per pair: the first profile's value
    cells = [(r["variable_name"], r["agreement"]) for r in rows]
    assert sorted(cells[:2]) == [("enrolled", "disagree"), ("enrolled", "disagree")]
    assert cells[2] == ("design", "one_missing")
    assert {agreement for _, agreement in cells[3:]} == {"agree"}
    assert [r["models_disagree"] for r in rows] == [True, True] + [False] * 7
    assert all(r["profile"] == "first" for r in rows)
    top = {r["value"]: r["second"] for r in rows[:2]}
    assert top[64]["value"] == 46 and top[64]["profile"] == "second"
    assert top[31]["status"] == "not_found" and top[31]["value"] is None
    assert top[64]["model"] == "model-b" and top[64]["cost_usd"] == pytest.approx(
        (top[64]["tokens_in"] * 10.0 + top[64]["tokens_out"] * 20.0) / 1e6
    )
    assert rows[2]["second"]["status"] == "failed" and rows[2]["value"] == "RCT"
    filtered = await list_extractions(client, headers, pid, run_id=run["id"], agreement="disagree")
    assert [r["id"] for r in filtered] == [r["id"] for r in rows[:2]]
    # A pair is listed as failed when either profile's extraction failed.
    response = await client.get(
        f"{API}/projects/{pid}/extractions",
        params={"run_id": run["id"], "status": "failed"},
        headers=headers,
    )
    failed = response.json()
    assert failed["total"] == 1 and [r["id"] for r in failed["items"]] == [rows[2]["id"]]
    page = await client.get(
        f"{API}/projects/{pid}/extractions",
        params={"run_id": run["id"], "limit": 2, "offset": 2},
        headers=headers,
    )
    assert page.json()["total"] == 9 and page.json()["items"][0]["id"] == rows[2]["id"]

    # The exports show the first profile's value, flagged where the models disagree.
    response = await client.get(
        f"{API}/projects/{pid}/export", params={"format": "csv", "layout": "long"}, headers=headers
    )
    long = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    flagged = {
        (r["filename"], r["variable"], r["value"]) for r in long if "models_disagree" in r["flags"]
    }
    assert flagged == {("b.txt", "enrolled", "64"), ("c.txt", "enrolled", "31")}
    response = await client.get(
        f"{API}/projects/{pid}/export", params={"format": "json", "layout": "long"}, headers=headers
    )
    records = json.loads(response.content)
    assert sorted(
        (r["filename"], r["value"]) for r in records if "models_disagree" in r["flags"]
    ) == [("b.txt", 64), ("c.txt", 31)]
    assert {r["filename"]: r["value"] for r in records if r["variable"] == "site"} == CITIES

    # Evaluation against gold: each profile, and how far their agreement can be trusted.
    response = await client.post(
        f"{API}/projects/{pid}/evaluation",
        files={"gold": ("gold.csv", GOLD.encode(), "text/csv")},
        data={"run_id": run["id"]},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["overall"]["compared"] == 9 and report["overall"]["correct"] == 8
    profiles = {p["profile"]: p for p in report["profiles"]}
    assert profiles["first"]["model"] == "model-a"
    assert profiles["first"]["overall"]["correct"] == 8
    assert profiles["second"]["overall"]["correct"] == 5  # 3 sites, a's enrolment, a's design
    second_vars = {v["variable"]: v for v in profiles["second"]["variables"]}
    assert second_vars["design"]["no_answer"] == 1 and second_vars["enrolled"]["accuracy"] == 0.3333
    agreement = report["agreement"]["overall"]
    assert agreement == {
        "compared": 8,
        "agreed": 6,
        "agreed_correct": 5,  # both said RCT for b.txt, a Cohort
        "agreed_accuracy": 0.8333,
        "disagreed": 2,
        "first_correct": 2,
        "second_correct": 0,
        "neither_correct": 0,
        "first_accuracy": 1.0,
        "second_accuracy": 0.0,
        "one_missing": 1,
    }
    design = {v["variable"]: v for v in report["agreement"]["variables"]}["design"]
    assert (design["agreed"], design["agreed_correct"], design["one_missing"]) == (2, 1, 1)
    response = await client.post(
        f"{API}/projects/{pid}/evaluation",
        params={"format": "xlsx"},
        files={"gold": ("gold.csv", GOLD.encode(), "text/csv")},
        data={"run_id": run["id"]},
        headers=headers,
    )
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert book.sheetnames[:3] == ["Summary", "Profiles", "Agreement"]
    sheet = [[c.value for c in row] for row in book["Agreement"].iter_rows()]
    overall = dict(zip(sheet[0], sheet[-1], strict=True))
    assert (overall["variable"], overall["agreed"], overall["agreed_correct"]) == (
        "(all variables)",
        6,
        5,
    )


async def test_a_grouped_two_profile_run_groups_each_profile_s_calls_apart(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = model_reply
    async with running_app(make_settings(tmp_path, fake_llm)) as (app, client):
        _, _, run = await two_profile_run(app, client, fake_llm, group_size=3)
    assert run["settings"]["group_size"] == 3
    assert by_variable(run) == {
        "site": (3, 3, 0, 0, 1.0),
        "enrolled": (3, 1, 2, 0, 0.3333),
        "design": (2, 2, 0, 1, 1.0),
    }
    groups = [r for r in fake_llm.requests if r.is_chat and r.is_group]
    # One call per document and profile, never mixing the two models' variables.
    assert sorted((r.model, document_of(r.text)) for r in groups) == sorted(
        (m, d) for m in ("model-a", "model-b") for d in DOCUMENTS
    )


async def test_each_profile_s_answers_are_cached_under_its_own_settings(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    headers, pid, first_run = await two_profile_run(app, client, fake)
    before = len([r for r in fake.requests if r.is_chat])
    again = await client.post(
        f"{API}/projects/{pid}/runs", json={"profiles": ["first", "second"]}, headers=headers
    )
    run = await wait_for_run(client, headers, pid, again.json()["id"])
    run = (await client.get(f"{API}/projects/{pid}/runs/{run['id']}", headers=headers)).json()
    # Only the failed answer is asked again (a failure is never reused); the rest come from
    # the cache, each profile's from its own earlier answers.
    asked = [r for r in fake.requests if r.is_chat][before:]
    assert {(r.model, document_of(r.text), r.variable) for r in asked} == {
        ("model-b", "c.txt", "design")
    }
    assert run["agreement"]["per_variable"] == first_run["agreement"]["per_variable"]
    rows = await list_extractions(client, headers, pid, run_id=run["id"])
    assert sum(r["cached"] for r in rows) == 9
    assert sum(r["second"]["cached"] for r in rows) == 8
    # A one-profile run of the second profile reuses the answers it gave as the second.
    alone = await client.post(
        f"{API}/projects/{pid}/runs", json={"profile": "second"}, headers=headers
    )
    await wait_for_run(client, headers, pid, alone.json()["id"])
    rows = await list_extractions(client, headers, pid, run_id=alone.json()["id"])
    reused = Counter((r["variable_name"], r["value"]) for r in rows if r["cached"])
    assert reused == Counter(
        [
            *[("site", f"{city.upper()}.") for city in CITIES.values()],
            *[("enrolled", 120), ("enrolled", 46), ("enrolled", None)],
            *[("design", "RCT"), ("design", "RCT")],
        ]
    )


async def test_retrying_the_missing_answer_completes_the_pair_s_verdict(
    served: tuple[FastAPI, httpx.AsyncClient, FakeLLM],
) -> None:
    app, client, fake = served
    headers, pid, run = await two_profile_run(app, client, fake)
    # model-b now answers c.txt's design within the allowed values, differently from model-a.
    fake.script(
        variable="design",
        contains="ran in Graz",
        reply=lambda request: (
            {"found": True, "evidence": "Design: RCT.", "value": "Cohort"}
            if request.model == "model-b"
            else {"found": True, "evidence": "Design: RCT.", "value": "RCT"}
        ),
    )
    response = await client.post(f"{API}/projects/{pid}/runs/{run['id']}/retry", headers=headers)
    assert response.status_code == 202, response.text
    await wait_for_run(client, headers, pid, run["id"])
    run = (await client.get(f"{API}/projects/{pid}/runs/{run['id']}", headers=headers)).json()
    assert run["status"] == "completed"
    assert by_variable(run)["design"] == (3, 2, 1, 0, 0.6667)
    rows = await list_extractions(client, headers, pid, run_id=run["id"])
    # Disagreements first, in document order: b's and c's enrolment, then c's design.
    assert [(r["variable_name"], r["value"], r["second"]["value"]) for r in rows[:3]] == [
        ("enrolled", 64, 46),
        ("enrolled", 31, None),
        ("design", "RCT", "Cohort"),
    ]
    assert {r["agreement"] for r in rows[3:]} == {"agree"}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"profiles": ["first"]}, 400, "exactly two profiles"),
        ({"profiles": ["first", "second", "third"]}, 400, "exactly two profiles"),
        ({"profiles": ["first", "first"]}, 400, "must differ"),
        ({"profiles": ["first", "nope"]}, 404, "nope"),
        ({"profiles": ["first", "second"], "profile": "first"}, 400, "not both"),
        ({"profiles": ["first", "batch"]}, 400, "provider batches"),
        (
            {"profiles": ["first", "unpriced"], "budget_usd": 1.0},
            400,
            "price of model-z is unknown",
        ),
        ({"profiles": ["first", "twin"]}, 400, "the same model the same way"),
        ({"profiles": "first"}, 422, ""),
    ],
)
async def test_a_two_profile_run_is_refused_with_a_reason(
    tmp_path: Path, fake_llm: FakeLLM, body: dict[str, Any], status: int, words: str
) -> None:
    async with running_app(make_settings(tmp_path, fake_llm)) as (app, client):
        headers, pid = await project(app, client, fake_llm, "refused@example.org")
        await add_profile(
            client, headers, pid, "batch", model="model-c", base_url=fake_llm.base_url, batch=True
        )
        await add_profile(
            client, headers, pid, "unpriced", model="model-z", base_url=fake_llm.base_url
        )
        await add_profile(
            client,
            headers,
            pid,
            "twin",
            model="model-a",
            base_url=fake_llm.base_url,
            price_input=5.0,
            price_output=5.0,
        )
        for dry_run in (False, True):
            response = await client.post(
                f"{API}/projects/{pid}/runs", json={**body, "dry_run": dry_run}, headers=headers
            )
            assert response.status_code == status, response.text
            assert words in response.json()["detail"] if words else True
        runs = (await client.get(f"{API}/projects/{pid}/runs", headers=headers)).json()
        assert runs["total"] == 0 and not [r for r in fake_llm.requests if r.is_chat]


async def test_a_budget_holds_over_both_profiles_calls_at_their_prices(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = model_reply
    settings = make_settings(tmp_path, fake_llm, llm_concurrency=1)
    async with running_app(settings) as (app, client):
        headers, pid = await project(app, client, fake_llm, "budget@example.org")
        url = f"{API}/projects/{pid}/runs"
        body = {"profiles": ["first", "second"]}
        estimate = (await client.post(url, json={**body, "dry_run": True}, headers=headers)).json()
        budget = round(estimate["estimated_cost_usd"] * 0.3, 6)  # a third of the way
        fake_llm.latency = 0.2
        response = await client.post(url, json={**body, "budget_usd": budget}, headers=headers)
        assert response.status_code == 202, response.text
        await wait_for_run(client, headers, pid, response.json()["id"])
        run = (await client.get(f"{url}/{response.json()['id']}", headers=headers)).json()

    assert run["status"] == "completed_with_errors", run
    assert run["error"].startswith("The run's budget of $") and "was reached" in run["error"]
    first, second = run["profiles"]
    # Both profiles' calls were made and counted, each at its price, within the budget (one
    # call at a time: the call that would pass it is never sent).
    assert first["tokens_in"] and second["tokens_in"]
    assert run["cost_usd"] == pytest.approx(first["cost_usd"] + second["cost_usd"])
    assert run["cost_usd"] <= budget
    assert run["counts"]["cancelled"] > 0


async def test_a_two_profile_estimate_adds_both_profiles_at_their_prices(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    async with running_app(make_settings(tmp_path, fake_llm)) as (app, client):
        headers, pid = await project(app, client, fake_llm, "estimate@example.org")
        url = f"{API}/projects/{pid}/runs"
        one = [
            (await client.post(url, json={"profile": p, "dry_run": True}, headers=headers)).json()
            for p in ("first", "second")
        ]
        both = (
            await client.post(
                url, json={"profiles": ["first", "second"], "dry_run": True}, headers=headers
            )
        ).json()
    assert both["pairs"] == 9 and both["calls"] == one[0]["calls"] + one[1]["calls"] == 18
    assert both["estimated_input_tokens"] == sum(e["estimated_input_tokens"] for e in one)
    assert both["estimated_cost_usd"] == pytest.approx(
        one[0]["estimated_cost_usd"] + one[1]["estimated_cost_usd"]
    )
    assert both["model"] == "model-a"
