"""A task's lease and deadline as a user notices them: a long LLM call is not handed to a
second worker while the first still waits for it, and a task that takes too long ends failed
with a reason instead of running on (or being re-run) forever."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from tests.support.fake_llm import FakeLLM

AGE = {"name": "age", "description": "Age of the patient in years", "type": "integer"}
ANSWER = {"found": True, "evidence": "42 years old", "value": 42, "confidence": 0.9}


async def _run_one_pair(
    settings_path: Path, fake_llm: FakeLLM, **settings: object
) -> dict[str, Any]:
    app_settings = make_settings(settings_path, fake_llm, **settings)
    async with running_app(app_settings) as (app, client):
        headers = await sign_up(app, client, "lease@example.org")
        pid = (await create_project(client, headers))["id"]
        await add_variable(client, headers, pid, **AGE)
        files = [("p.txt", b"The patient is 42 years old.", "text/plain")]
        assert (await upload(client, headers, pid, files)).status_code == 201
        await wait_for_documents(client, headers, pid)
        response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
        assert response.status_code == 202, response.text
        await wait_for_run(client, headers, pid, response.json()["id"], timeout=30)
        items = (await client.get(f"/api/v1/projects/{pid}/extractions", headers=headers)).json()
        extraction: dict[str, Any]
        [extraction] = items["items"]
        return extraction


async def test_a_call_longer_than_the_lease_is_not_handed_out_twice(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = ANSWER
    fake_llm.latency = 3.0  # outlives the 2 s lease: only renewals keep it
    extraction = await _run_one_pair(
        tmp_path, fake_llm, task_lease_seconds=2, sweep_interval_seconds=0.5
    )
    assert extraction["status"] == "succeeded" and extraction["value"] == 42
    assert fake_llm.calls(status=None) == 1


async def test_a_task_past_its_deadline_fails_with_a_reason(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = ANSWER
    fake_llm.latency = 3.0
    extraction = await _run_one_pair(tmp_path, fake_llm, task_timeout_seconds=1)
    assert extraction["status"] == "failed"
    assert extraction["error"] == "The extraction did not finish within 1 s."
