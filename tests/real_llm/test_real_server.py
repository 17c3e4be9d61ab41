"""A small extraction against a live OpenAI-compatible server (by hand, never in CI).

Skipped unless ``QUARRY_TEST_REAL_LLM_URL`` is set, e.g. for the llama.cpp server of
``../shared/real_llm/`` (Qwen2.5-Coder-1.5B-Instruct on the CPU)::

    QUARRY_TEST_REAL_LLM_URL=http://127.0.0.1:8088/v1 \\
    QUARRY_TEST_REAL_LLM_MODEL=qwen2.5-coder-1.5b-instruct \\
    QUARRY_TEST_REAL_LLM_CONTEXT=8192 QUARRY_TEST_REAL_LLM_TIMEOUT=1800 \\
    .venv/bin/pytest -s tests/real_llm

Three trial reports — a PDF, a DOCX and a TXT — and five variables of five types, asked one
variable per call and then five per call (grouped). What must hold is the protocol: no pair
fails (every pair succeeds or is "not found"), whatever the model's accuracy. Accuracy against
the known values, calls, tokens and wall time are printed, and written as JSON to
``QUARRY_TEST_REAL_LLM_REPORT`` if set (the figures in benchmarks/RESULTS.md come from it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from quarry.settings import Settings
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
from tests.support.documents import make_docx, make_pdf

URL = os.environ.get("QUARRY_TEST_REAL_LLM_URL")
MODEL = os.environ.get("QUARRY_TEST_REAL_LLM_MODEL", "qwen2.5-coder-1.5b-instruct")
REPORT = os.environ.get("QUARRY_TEST_REAL_LLM_REPORT")
#: A CPU server answers one call at a time, in seconds to minutes.
RUN_TIMEOUT_SECONDS = float(os.environ.get("QUARRY_TEST_REAL_LLM_RUN_TIMEOUT", "3600"))

SUPPORT_VERDICTS = ("supported", "unsupported", "unchecked", None)

pytestmark = pytest.mark.skipif(not URL, reason="QUARRY_TEST_REAL_LLM_URL is not set")

VARIABLES: list[dict[str, Any]] = [
    {"name": "sample_size", "type": "integer",
     "description": "Number of participants randomised (enrolled) in the trial"},
    {"name": "randomised", "type": "boolean",
     "description": "Whether participants were randomly assigned to the arms"},
    {"name": "design", "type": "category", "allowed_values": ["parallel", "crossover", "cluster"],
     "description": "The trial's design"},
    {"name": "start_date", "type": "date",
     "description": "When recruitment started (year and month)"},
    {"name": "country", "type": "text",
     "description": "The country where the trial took place"},
]  # fmt: skip

TRIALS: list[dict[str, Any]] = [
    {"filename": "heart.pdf", "text": (
        "A randomised parallel-group trial of early mobilisation after cardiac surgery. "
        "Recruitment began in March 2019 at four hospitals in Norway. "
        "In total 240 patients were randomised to mobilisation or usual care. "
        "The mean age was 64.3 years."),
     "gold": {"sample_size": 240, "randomised": True, "design": "parallel",
              "start_date": "2019-03", "country": "Norway"}},
    {"filename": "sleep.docx", "text": (
        "We ran a crossover study of two sleep hygiene programmes. "
        "Participants were randomly allocated to the order of the programmes. "
        "Enrolment started in October 2020 in Canada, and 58 adults took part."),
     "gold": {"sample_size": 58, "randomised": True, "design": "crossover",
              "start_date": "2020-10", "country": "Canada"}},
    {"filename": "schools.txt", "text": (
        "This cluster trial allocated 30 schools in Kenya, with 1,210 pupils, at random to a "
        "deworming programme or to control. Recruitment of schools began in January 2018."),
     "gold": {"sample_size": 1210, "randomised": True, "design": "cluster",
              "start_date": "2018-01", "country": "Kenya"}},
]  # fmt: skip


def _file(trial: dict[str, Any]) -> tuple[str, bytes, str]:
    name, text = trial["filename"], trial["text"]
    if name.endswith(".pdf"):
        return name, make_pdf([text]), "application/pdf"
    if name.endswith(".docx"):
        mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        return name, make_docx([text]), mime
    return name, text.encode(), "text/plain"


def _matches(value: Any, gold: Any) -> bool:
    if isinstance(gold, str) and isinstance(value, str):
        return value.strip().lower().startswith(gold.lower())
    return bool(value == gold)


def _settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        None,
        openai_base_url=URL,
        openai_api_key=SecretStr(os.environ.get("QUARRY_TEST_REAL_LLM_KEY", "local")),
        llm_model=MODEL,
        llm_concurrency=1,  # one slot: a second call would only queue inside the timeout
        llm_timeout_seconds=float(os.environ.get("QUARRY_TEST_REAL_LLM_TIMEOUT", "600")),
        llm_max_retries=1,
        # What llama-server was started with (-c): the document budget is taken from it.
        llm_context_window=int(os.environ.get("QUARRY_TEST_REAL_LLM_CONTEXT", "8192")),
        log_level="INFO",
    )


@pytest.mark.parametrize("group_size", [1, 5], ids=["single", "grouped"])
@pytest.mark.timeout(RUN_TIMEOUT_SECONDS + 120)
async def test_an_extraction_against_a_real_server(tmp_path: Path, group_size: int) -> None:
    async with running_app(_settings(tmp_path)) as (app, client):
        headers = await sign_up(app, client, "real@example.org")
        pid = (await create_project(client, headers, f"Real model, groups of {group_size}"))["id"]
        patched = await client.patch(
            f"/api/v1/projects/{pid}", json={"group_size": group_size}, headers=headers
        )
        assert patched.status_code == 200, patched.text
        for variable in VARIABLES:
            await add_variable(client, headers, pid, **variable)
        assert (await upload(client, headers, pid, [_file(t) for t in TRIALS])).status_code == 201
        documents = await wait_for_documents(client, headers, pid, timeout=120)
        assert all(d["status"] == "ready" for d in documents), documents

        started = time.monotonic()
        response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
        assert response.status_code == 202, response.text
        run = await wait_for_run(
            client, headers, pid, response.json()["id"], timeout=RUN_TIMEOUT_SECONDS
        )
        wall = time.monotonic() - started
        cells = await list_extractions(client, headers, pid, run_id=run["id"])

    by_document = {d["id"]: d["filename"] for d in documents}
    gold = {t["filename"]: t["gold"] for t in TRIALS}
    rows = []
    for cell in cells:
        expected = gold[by_document[cell["document_id"]]][cell["variable_name"]]
        rows.append(
            {
                "document": by_document[cell["document_id"]],
                "variable": cell["variable_name"],
                "status": cell["status"],
                "value": cell["value"],
                "expected": expected,
                "right": cell["status"] == "succeeded" and _matches(cell["value"], expected),
                "grounded": cell["grounded"],
                "support": cell.get("support"),
                "confidence": cell["confidence"],
                "evidence": cell["evidence"],
                "error": cell["error"],
                "attempts": cell["attempts"],
                "tokens_in": cell["tokens_in"],
                "tokens_out": cell["tokens_out"],
            }
        )
    report = {
        "model": MODEL,
        "group_size": group_size,
        "pairs": len(rows),
        "run_status": run["status"],
        "counts": run["counts"],
        "right": sum(r["right"] for r in rows),
        "grounded": sum(bool(r["grounded"]) for r in rows),
        "support": {v: sum(r["support"] == v for r in rows) for v in SUPPORT_VERDICTS},
        "answers": sum(r["attempts"] for r in rows),
        "tokens_in": sum(r["tokens_in"] for r in rows),
        "tokens_out": sum(r["tokens_out"] for r in rows),
        "wall_seconds": round(wall, 1),
        "cells": rows,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "cells"}, indent=1))
    for r in rows:
        print(f"  {r['document']:<12} {r['variable']:<12} {r['status']:<10} "
              f"{json.dumps(r['value'])!s:<14} want {json.dumps(r['expected'])}  "
              f"{'ok' if r['right'] else '--'}  {r['support']}  {r['confidence']}  "
              f"{r['error'] or ''}")  # fmt: skip
    if REPORT:
        path = Path(REPORT)
        previous = json.loads(path.read_text()) if path.exists() else {}
        previous[f"group_size={group_size}"] = report
        path.write_text(json.dumps(previous, indent=1, default=str))

    # The protocol held: every pair has an answer or an honest "not found", none failed.
    failed = [r for r in rows if r["status"] not in ("succeeded", "not_found")]
    assert run["status"] == "completed", run
    assert len(rows) == len(TRIALS) * len(VARIABLES)
    assert not failed, failed
