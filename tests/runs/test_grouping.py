"""Grouping (a project's `group_size`): several variables of a document per LLM call, with
single calls for the variables whose part of a grouped answer cannot be used."""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarry.app import create_app
from quarry.jobs import JobContext
from quarry.llm.client import ANSWER_SCHEMA, GROUP_ANSWER_SCHEMA, GROUP_RESPONSE_FORMAT
from quarry.llm.client import RESPONSE_FORMAT as SINGLE_RESPONSE_FORMAT
from quarry.runs.engine import split_evenly
from quarry.runs.executor import TaskExecutor
from quarry.variables.prompts import DOCUMENT_END, GROUP_SYSTEM_PROMPT, SYSTEM_PROMPT
from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_schema,
    list_extractions,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import (
    FakeLLM,
    FakeRequest,
    ReplyValue,
    answer_each,
    estimate_prompt_tokens,
)
from tests.support.postgres import temporary_postgres_database

Headers = dict[str, str]

VARIABLES: list[dict[str, Any]] = [
    {"name": "title", "description": "The report's title", "type": "text"},
    {"name": "site", "description": "Where the study took place", "type": "text"},
    {"name": "patients", "description": "Number of patients enrolled", "type": "integer"},
    {"name": "start", "description": "When the study started", "type": "date"},
    {
        "name": "design",
        "description": "Study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort"],
    },
    {"name": "blinded", "description": "Whether the study was blinded", "type": "boolean"},
    {"name": "arms", "description": "The treatment arms", "type": "list"},
]
DOC_NUMBER = re.compile(r"Report (\d+)\.")


def report(n: int) -> str:
    return (
        f"Report {n}. The study took place in Lyon. A total of {40 + n} patients were "
        f"enrolled. It started on 2021-03-{n + 1:02d}. Design: RCT. The study was blinded. "
        "Arms: placebo and drug."
    )


def truth(n: int, name: str) -> dict[str, Any]:
    """The right answer about variable `name` in report `n`, with a quote from it."""
    value, evidence = {
        "title": (f"Report {n}", f"Report {n}."),
        "site": ("Lyon", "took place in Lyon"),
        "patients": (40 + n, f"A total of {40 + n} patients"),
        "start": (f"2021-03-{n + 1:02d}", f"started on 2021-03-{n + 1:02d}"),
        "design": ("RCT", "Design: RCT"),
        "blinded": (True, "The study was blinded"),
        "arms": (["placebo", "drug"], "Arms: placebo and drug"),
    }[name]
    return {"found": True, "evidence": evidence, "value": value, "confidence": 0.9}


EXPECTED = {
    "title": lambda n: f"Report {n}",
    "site": lambda n: "Lyon",
    "patients": lambda n: 40 + n,
    "start": lambda n: f"2021-03-{n + 1:02d}",
    "design": lambda n: "RCT",
    "blinded": lambda n: True,
    "arms": lambda n: ["placebo", "drug"],
}


def document_of(request: FakeRequest) -> int:
    match = DOC_NUMBER.search(request.text)
    assert match is not None, request.text
    return int(match.group(1))


def right_answers(request: FakeRequest) -> ReplyValue:
    """Answers every call, single or grouped, about every report correctly."""
    n = document_of(request)
    return answer_each(lambda name: truth(n, name))(request)


async def project(
    app: FastAPI,
    client: httpx.AsyncClient,
    *,
    group_size: int,
    documents: int,
    variables: list[dict[str, Any]] = VARIABLES,
    texts: dict[str, str] | None = None,
) -> tuple[Headers, str, dict[str, str]]:
    """A signed-in user's project with `variables` and ready reports; returns the headers,
    the project id and each document id's report number."""
    headers = await sign_up(app, client, f"group{uuid.uuid4().hex[:8]}@example.org")
    response = await client.post(
        "/api/v1/projects", json={"name": "Grouped", "group_size": group_size}, headers=headers
    )
    assert response.status_code == 201, response.text
    pid = response.json()["id"]
    for spec in variables:
        await add_variable(client, headers, pid, **spec)
    texts = texts or {f"r{n}.txt": report(n) for n in range(documents)}
    files = [(name, text.encode(), "text/plain") for name, text in texts.items()]
    assert (await upload(client, headers, pid, files)).status_code == 201
    docs = await wait_for_documents(client, headers, pid)
    assert all(d["status"] == "ready" for d in docs)
    numbers = {d["id"]: str(d["filename"]).removeprefix("r").removesuffix(".txt") for d in docs}
    return headers, pid, numbers


async def run_to_end(
    client: httpx.AsyncClient, headers: Headers, pid: str, **body: Any
) -> dict[str, Any]:
    response = await client.post(f"/api/v1/projects/{pid}/runs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return await wait_for_run(client, headers, pid, response.json()["id"])


async def log_events(
    client: httpx.AsyncClient, headers: Headers, pid: str, run_id: str
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/api/v1/projects/{pid}/runs/{run_id}/logs", params={"limit": 500}, headers=headers
    )
    return response.json()["items"]  # type: ignore[no-any-return]


def assert_all_right(rows: list[dict[str, Any]], numbers: dict[str, str]) -> None:
    for row in rows:
        n = int(numbers[row["document_id"]])
        name = row["variable_name"]
        assert row["status"] == "succeeded", row
        assert row["value"] == EXPECTED[name](n), row
        assert row["grounded"] is True, row


def chat_requests(fake: FakeLLM) -> list[FakeRequest]:
    return [r for r in fake.requests if r.is_chat]


async def test_a_group_of_five_over_seven_variables_makes_two_calls_per_document(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = right_answers
    documents = 3
    headers, pid, numbers = await project(app, client, group_size=5, documents=documents)

    grouped = await run_to_end(client, headers, pid)
    assert grouped["status"] == "completed", grouped
    assert grouped["settings"]["group_size"] == 5
    requests = chat_requests(fake_llm)
    assert len(requests) == documents * math.ceil(7 / 5)
    assert all(r.is_group for r in requests)
    assert sorted(len(r.variables) for r in requests) == [2, 2, 2, 5, 5, 5]
    for n in range(documents):  # every variable of every report asked exactly once
        asked = Counter(v for r in requests if document_of(r) == n for v in r.variables)
        assert asked == Counter(spec["name"] for spec in VARIABLES)
    # One constant schema and system prompt; each report's calls share everything up to the
    # end of its document block.
    assert all(r.body["response_format"] == GROUP_RESPONSE_FORMAT for r in requests)
    assert all(r.messages[0]["content"] == GROUP_SYSTEM_PROMPT for r in requests)
    for n in range(documents):
        blocks = {
            r.messages[1]["content"].split(DOCUMENT_END)[0] for r in requests if document_of(r) == n
        }
        assert len(blocks) == 1

    rows = await list_extractions(client, headers, pid, run_id=grouped["id"])
    assert len(rows) == documents * 7
    assert_all_right(rows, numbers)
    assert all(row["attempts"] == 1 and not row["cached"] for row in rows)
    # The grouped calls' tokens are split over their variables: the run's totals are exact.
    assert grouped["tokens_in"] == sum(estimate_prompt_tokens(r.messages) for r in requests)
    assert grouped["tokens_in"] == sum(row["tokens_in"] for row in rows)
    assert all(row["tokens_in"] > 0 and row["tokens_out"] > 0 for row in rows)

    # The same pairs one call each, for comparison.
    response = await client.patch(
        f"/api/v1/projects/{pid}", json={"group_size": 1}, headers=headers
    )
    assert response.status_code == 200
    fake_llm.reset()
    fake_llm.default_reply = right_answers
    single = await run_to_end(client, headers, pid, force_fresh=True)
    assert single["status"] == "completed"
    requests = chat_requests(fake_llm)
    assert len(requests) == documents * 7
    assert all(r.body["response_format"] == SINGLE_RESPONSE_FORMAT for r in requests)
    assert all(r.messages[0]["content"] == SYSTEM_PROMPT for r in requests)
    assert_all_right(await list_extractions(client, headers, pid, run_id=single["id"]), numbers)

    pairs = documents * 7
    per_pair_grouped = grouped["tokens_in"] / pairs
    per_pair_single = single["tokens_in"] / pairs
    saving = 1 - per_pair_grouped / per_pair_single
    print(
        f"input tokens per pair: single {per_pair_single:.0f}, groups of 5 "
        f"{per_pair_grouped:.0f} ({saving:.0%} fewer)"
    )
    assert per_pair_grouped < 0.7 * per_pair_single


def faulty_group_answer(request: FakeRequest) -> ReplyValue:
    """Grouped calls: site left out, an unknown variable added, patients not a number and
    design answered twice; everything else right. Single calls: right."""
    if not request.is_group:
        return right_answers(request)
    n = document_of(request)
    answers = []
    for name in request.variables:
        entry = {"variable": name, **truth(n, name)}
        if name == "site":
            continue
        if name == "patients":
            entry["value"] = "a lot of them"
        if name == "design":
            answers.append({**entry, "value": "Cohort"})
        answers.append(entry)
    answers.append({"variable": "sponsor", **truth(n, "site")})
    return {"answers": answers}


async def test_only_the_unusable_parts_of_a_grouped_answer_are_asked_again_alone(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = faulty_group_answer
    headers, pid, numbers = await project(app, client, group_size=7, documents=1)
    run = await run_to_end(client, headers, pid)
    assert run["status"] == "completed", run

    requests = chat_requests(fake_llm)
    assert [r.is_group for r in requests] == [True, False, False, False]
    assert sorted(str(r.variable) for r in requests[1:]) == ["design", "patients", "site"]
    rows = await list_extractions(client, headers, pid, run_id=run["id"])
    assert_all_right(rows, numbers)
    fell_back = {"site", "patients", "design"}
    for row in rows:
        assert row["attempts"] == (2 if row["variable_name"] in fell_back else 1), row
    # Each fallback's tokens: its share of the grouped call plus its own call.
    assert run["tokens_in"] == sum(estimate_prompt_tokens(r.messages) for r in requests)
    assert run["tokens_in"] == sum(row["tokens_in"] for row in rows)

    events = await log_events(client, headers, pid, run["id"])
    fallbacks = [e for e in events if e["event"] == "task.group_fallback"]
    assert len(fallbacks) == 3
    reasons = " ".join(e["message"] for e in fallbacks)
    assert "left it out" in reasons and "more than one entry" in reasons
    assert "r0.txt × patients" in reasons


async def test_an_unreadable_grouped_answer_asks_every_variable_alone(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = right_answers
    variables = VARIABLES[:3]
    headers, pid, numbers = await project(
        app, client, group_size=3, documents=1, variables=variables
    )
    fake_llm.inject("malformed")  # the grouped call's answer is prose
    run = await run_to_end(client, headers, pid)
    assert run["status"] == "completed", run
    requests = chat_requests(fake_llm)
    assert [r.is_group for r in requests] == [True, False, False, False]
    rows = await list_extractions(client, headers, pid, run_id=run["id"])
    assert_all_right(rows, numbers)
    assert all(row["attempts"] == 2 for row in rows)


async def test_not_stated_answers_in_a_group_are_not_found_not_fallbacks(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    def not_stated(request: FakeRequest) -> ReplyValue:
        n = document_of(request)
        placeholders: dict[str, dict[str, Any]] = {
            "site": {"found": True, "evidence": None, "value": "N/A", "confidence": 0.5},
            "patients": {"found": True, "evidence": None, "value": "Not reported", "confidence": 1},
            "start": {"found": False, "evidence": None, "value": None, "confidence": None},
        }
        return answer_each(lambda name: placeholders.get(name) or truth(n, name))(request)

    fake_llm.default_reply = not_stated
    headers, pid, _ = await project(app, client, group_size=4, documents=1, variables=VARIABLES[:4])
    run = await run_to_end(client, headers, pid)
    assert run["status"] == "completed", run
    assert fake_llm.calls() == 1
    rows = {
        row["variable_name"]: row
        for row in await list_extractions(client, headers, pid, run_id=run["id"])
    }
    assert rows["title"]["status"] == "succeeded" and rows["title"]["value"] == "Report 0"
    for name in ("site", "patients", "start"):
        assert rows[name]["status"] == "not_found" and rows[name]["value"] is None
        assert rows[name]["attempts"] == 1


async def test_a_grouped_call_that_fails_fails_its_variables_with_the_reason(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = right_answers
    headers, pid, _ = await project(app, client, group_size=3, documents=1, variables=VARIABLES[:3])
    fake_llm.inject("401")  # permanent: not retried, and not worth three more calls
    run = await run_to_end(client, headers, pid)
    assert run["status"] == "failed"
    assert fake_llm.calls(status=None) == 1
    rows = await list_extractions(client, headers, pid, run_id=run["id"])
    assert {row["status"] for row in rows} == {"failed"}
    assert all("rejected the API key" in str(row["error"]) for row in rows)

    # Retrying the run asks them again, grouped.
    response = await client.post(
        f"/api/v1/projects/{pid}/runs/{run['id']}/retry", json={}, headers=headers
    )
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, run["id"])
    assert run["status"] == "completed", run
    assert fake_llm.calls(status=None) == 2


async def run_with_a_second_worker(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM, documents: int
) -> tuple[list[FakeRequest], dict[str, Any]]:
    """A grouped run that a second executor (another worker id: another worker, as far as
    the database can tell) is woken for again and again while the app's own works on it;
    returns the calls made and the finished run."""
    fake_llm.default_reply = right_answers
    fake_llm.latency = 0.2
    headers, pid, numbers = await project(app, client, group_size=5, documents=documents)
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    run_id = uuid.UUID(response.json()["id"])
    second = JobContext(
        settings=app.state.settings,
        sessionmaker=app.state.sessionmaker,
        storage=app.state.storage,
        llm=app.state.llm,
        queue=app.state.queue,
        worker_id="second-worker",
    )
    executor = TaskExecutor.for_context(second)
    for _ in range(5):
        executor.wake(run_id)
        await asyncio.sleep(0.05)
    run = await wait_for_run(client, headers, pid, str(run_id))
    await executor.stop(grace=5)
    assert run["status"] == "completed", run

    requests = chat_requests(fake_llm)
    asked = Counter((document_of(r), v) for r in requests for v in r.variables)
    assert len(asked) == documents * 7 and set(asked.values()) == {1}  # none asked twice
    rows = await list_extractions(client, headers, pid, run_id=str(run_id))
    assert len(rows) == documents * 7
    assert_all_right(rows, numbers)
    assert all(row["attempts"] == 1 for row in rows)
    assert run["tokens_in"] == sum(estimate_prompt_tokens(r.messages) for r in requests)
    return requests, run


async def test_every_task_is_stored_once_when_two_workers_run_the_same_jobs(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    requests, _ = await run_with_a_second_worker(app, client, fake_llm, documents=2)
    # Claims take a document's variables in order, whoever claims them: groups of 5 and 2
    # per document, unless a batch boundary cut a document in two.
    assert 2 * 2 <= len(requests) <= 2 * 3


@pytest.mark.postgres
async def test_every_task_is_stored_once_on_postgresql(tmp_path: Path, fake_llm: FakeLLM) -> None:
    with temporary_postgres_database("quarry_grouping") as database_url:
        settings = make_settings(tmp_path, fake_llm, database_url=database_url)
        await create_schema(database_url)
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client,
        ):
            # Claims skip each other's rows here: a document's variables may be split
            # between the two workers' batches, and then asked in smaller groups.
            requests, _ = await run_with_a_second_worker(app, client, fake_llm, documents=3)
            assert 3 * 2 <= len(requests) <= 3 * 4


async def test_the_result_cache_works_with_grouping(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = right_answers
    documents = 3
    variables = VARIABLES[:5]
    headers, pid, numbers = await project(
        app, client, group_size=5, documents=documents, variables=variables
    )
    first = await run_to_end(client, headers, pid)
    assert first["status"] == "completed"
    assert fake_llm.calls() == documents

    listed = (await client.get(f"/api/v1/projects/{pid}/variables", headers=headers)).json()
    ids = {v["name"]: v["id"] for v in listed["items"]}

    async def edit(name: str, description: str) -> None:
        response = await client.patch(
            f"/api/v1/projects/{pid}/variables/{ids[name]}",
            json={"description": description},
            headers=headers,
        )
        assert response.status_code == 200, response.text

    # One variable edited: one call per report, a single one (a group of one).
    await edit("site", "The city where the study took place")
    fake_llm.reset()
    fake_llm.default_reply = right_answers
    second = await run_to_end(client, headers, pid)
    requests = chat_requests(fake_llm)
    assert len(requests) == documents
    assert all(not r.is_group and r.variable == "site" for r in requests)
    rows = await list_extractions(client, headers, pid, run_id=second["id"])
    assert_all_right(rows, numbers)
    assert all(row["cached"] is (row["variable_name"] != "site") for row in rows)

    # Two edited: one grouped call of the two per report; the cached ones are not sent.
    await edit("site", "The city of the study")
    await edit("patients", "How many patients were enrolled")
    fake_llm.reset()
    fake_llm.default_reply = right_answers
    third = await run_to_end(client, headers, pid)
    requests = chat_requests(fake_llm)
    assert len(requests) == documents
    assert all(r.is_group and sorted(r.variables) == ["patients", "site"] for r in requests)
    assert_all_right(await list_extractions(client, headers, pid, run_id=third["id"]), numbers)


async def test_cancelling_a_grouped_run_stops_new_calls(tmp_path: Path, fake_llm: FakeLLM) -> None:
    settings = make_settings(tmp_path, fake_llm, llm_concurrency=2)
    async with running_app(settings) as (app, client):
        fake_llm.default_reply = right_answers
        headers, pid, _ = await project(
            app, client, group_size=3, documents=20, variables=VARIABLES[:3]
        )
        fake_llm.latency = 0.3
        response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
        run_id = response.json()["id"]
        await asyncio.sleep(0.5)
        response = await client.post(
            f"/api/v1/projects/{pid}/runs/{run_id}/cancel", headers=headers
        )
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        await asyncio.sleep(0.8)  # calls already in flight finish
        calls = len(fake_llm.requests)
        await asyncio.sleep(1.0)
        assert len(fake_llm.requests) == calls  # nothing new started
        assert calls <= 6
        run = (await client.get(f"/api/v1/projects/{pid}/runs/{run_id}", headers=headers)).json()
        assert run["counts"]["pending"] == 0 and run["counts"]["running"] == 0
        assert run["counts"]["cancelled"] >= 14 * 3
        assert run["counts"]["succeeded"] == 3 * calls  # every call answered a whole group


def long_report_text() -> str:
    filler = "The committee reviewed the schedule and the budget of the unit. " * 20
    return f"Report 2. {filler}" * 6 + report(2)


async def test_a_long_document_is_not_grouped(tmp_path: Path, fake_llm: FakeLLM) -> None:
    settings = make_settings(tmp_path, fake_llm, llm_max_document_chars=4000)
    async with running_app(settings) as (app, client):
        fake_llm.default_reply = right_answers
        texts = {"r0.txt": report(0), "r2.txt": long_report_text()}
        headers, pid, _ = await project(
            app, client, group_size=3, documents=2, variables=VARIABLES[:3], texts=texts
        )
        run = await run_to_end(client, headers, pid)
        assert run["status"] == "completed", run
        requests = chat_requests(fake_llm)
        short = [r for r in requests if "Excerpts of a" not in r.text]
        long = [r for r in requests if "Excerpts of a" in r.text]
        assert len(short) == 1 and short[0].is_group
        assert len(long) == 3 and not any(r.is_group for r in long)


def test_the_group_schema_is_the_answer_schema_per_variable() -> None:
    item = GROUP_ANSWER_SCHEMA["schema"]["properties"]["answers"]["items"]
    single = ANSWER_SCHEMA["schema"]
    assert item["properties"] == {"variable": {"type": "string"}, **single["properties"]}
    assert item["required"] == ["variable", *single["required"]]
    assert GROUP_ANSWER_SCHEMA["strict"] is True


def test_tokens_are_split_exactly() -> None:
    assert split_evenly(10, 3) == [4, 3, 3]
    assert split_evenly(2, 5) == [2, 0, 0, 0, 0]
    assert sum(split_evenly(1234, 7)) == 1234
