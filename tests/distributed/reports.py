"""A project whose every (document, variable) pair has one known right answer, and the
database check that a run stored exactly one correct outcome per pair."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select
from tests.support.api import add_variable, create_project, sign_up, upload, wait_for_documents
from tests.support.fake_llm import FakeLLM, FakeRequest

from quarry.models import Document, Extraction, ExtractionStatus, Run, RunEvent, Variable

VARIABLES = 10
_MARKER = re.compile(r"REPORT-(\d+)\b")


def right_value(document: int, variable: int) -> int:
    return document * 100 + variable


def report_text(document: int) -> str:
    lines = [f"REPORT-{document}"]
    lines += [f"Item v{i} is {right_value(document, i)}." for i in range(VARIABLES)]
    return "\n".join(lines)


def answer(request: FakeRequest) -> dict[str, Any]:
    """The fake LLM's reply: the right answer for whichever pair is asked about."""
    match = _MARKER.search(request.text)
    assert match is not None and request.variable is not None
    value = right_value(int(match.group(1)), int(request.variable.removeprefix("v")))
    return {"found": True, "evidence": f"is {value}.", "value": value, "confidence": 0.9}


async def make_project(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM, documents: int
) -> tuple[dict[str, str], str, int]:
    """Sign up, create the codebook, upload and parse the reports, script the fake LLM (with
    0.1 s of latency); returns the headers, the project id and the number of pairs."""
    headers = await sign_up(app, client, "fleet@example.org")
    pid = str((await create_project(client, headers, "Numbered reports"))["id"])
    for i in range(VARIABLES):
        spec = {"name": f"v{i}", "description": f"Item v{i}", "type": "integer"}
        await add_variable(client, headers, pid, **spec)
    files = [(f"r{n}.txt", report_text(n).encode(), "text/plain") for n in range(documents)]
    assert (await upload(client, headers, pid, files)).status_code == 201
    await wait_for_documents(client, headers, pid, timeout=30)
    fake_llm.default_reply = answer
    fake_llm.latency = 0.1
    return headers, pid, documents * VARIABLES


async def assert_stored_exactly_once(
    app: FastAPI, run: dict[str, Any], pairs: int, answers: int | None = None
) -> None:
    """One row per pair with the right value, each stored once by a lease holder.

    An outcome adds its model answers to the row's `attempts`, and is stored only while its
    lease is held, so an outcome stored twice would count twice: each row must show one
    answer — or, when answers were re-asked (`answers`: the model's answers in all), the rows
    must add up to exactly the answers the model gave."""
    assert run["status"] == "completed", run
    assert run["counts"]["succeeded"] == pairs
    run_id = uuid.UUID(run["id"])
    async with app.state.sessionmaker() as session:
        rows = (
            await session.execute(
                select(Extraction, Document.filename, Variable.name)
                .join(Document, Document.id == Extraction.document_id)
                .join(Variable, Variable.id == Extraction.variable_id)
                .where(Extraction.run_id == run_id)
            )
        ).all()
        db_run = await session.get(Run, run_id)
        finished_events = await session.scalar(
            select(func.count())
            .select_from(RunEvent)
            .where(RunEvent.run_id == run_id, RunEvent.event == "run.finished")
        )
    assert len(rows) == pairs
    assert len({(e.document_id, e.variable_id) for e, _, _ in rows}) == pairs
    for extraction, filename, variable in rows:
        document = int(filename.removeprefix("r").removesuffix(".txt"))
        assert extraction.status == ExtractionStatus.SUCCEEDED
        assert extraction.value == right_value(document, int(variable.removeprefix("v")))
        assert extraction.lease_owner is None
        assert answers is not None or extraction.attempts == 1
    if answers is not None:
        assert sum(e.attempts for e, _, _ in rows) == answers
    # The run's token total is the sum over its tasks.
    assert db_run is not None
    assert run["tokens_in"] == sum(e.tokens_in for e, _, _ in rows) > 0
    assert finished_events == 1
