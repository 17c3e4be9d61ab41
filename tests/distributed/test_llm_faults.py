"""A provider that fails 30 % of the calls — 429 with Retry-After, 500, timeouts, malformed
answers — and two real workers: every pair still succeeds, exactly once, because transient
failures are retried with backoff and malformed answers are asked again."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx
import pytest
from fastapi import FastAPI
from tests.distributed.conftest import Workers
from tests.distributed.reports import assert_stored_exactly_once, make_project
from tests.support.fake_llm import FakeLLM

from quarry.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: The longest a run may take before the test calls it hung (see CONVENTIONS, Tests).
HANG_GUARD_SECONDS = 480  # below pytest-timeout (600 s), so this message is the one seen

DOCUMENTS = 20  # × 10 variables = 200 pairs


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Generous retries and re-asks: at a 30 % fault rate a pair needs several tries now and
    # then, and the test is that it gets them. A short HTTP timeout keeps timeouts quick, but
    # not so short that a busy machine makes one of its own: the accounting below counts every
    # client timeout as an injected one (at 1 s, a 200 answer delayed by a stalled worker loop
    # was given up on, counted by the fake and by no row).
    return settings.model_copy(
        update={
            "llm_max_retries": 8,
            "llm_repair_attempts": 4,
            "llm_timeout_seconds": 3.0,
            "llm_concurrency": 8,
        }
    )


async def test_every_pair_succeeds_through_a_30_percent_fault_rate(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM, workers: Workers
) -> None:
    await asyncio.gather(workers.start_ready(), workers.start_ready())
    headers, pid, pairs = await make_project(app, client, fake_llm, DOCUMENTS)
    fake_llm.latency = 0.05
    fake_llm.retry_after = "1"
    fake_llm.timeout_hold = 10  # longer than the 3 s client timeout
    fake_llm.fault_kinds = ("429", "500", "timeout", "malformed")
    fake_llm.fault_rate = 0.3
    fake_llm.seed(30)

    started = time.monotonic()
    # A hang guard, not a timing: the run takes 10-25 s here, more than 20x less.
    hang_guard = started + HANG_GUARD_SECONDS
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run_url = f"/api/v1/projects/{pid}/runs/{response.json()['id']}"
    while (run := (await client.get(run_url, headers=headers)).json())["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < hang_guard, f"run did not finish: {run}"
        await asyncio.sleep(0.2)

    faults = Counter(r.fault for r in fake_llm.requests if r.fault)
    # Every kind of fault happened, many times, and none of them cost a pair.
    assert all(faults[kind] >= 10 for kind in ("429", "500", "timeout", "malformed")), faults
    # Malformed answers are answers too (HTTP 200): each was counted by exactly one pair.
    await assert_stored_exactly_once(app, run, pairs, answers=fake_llm.calls(status=200))
    # Retries were made by the workers themselves, waiting as the provider asked.
    retries = [
        event
        for p in workers.group.processes
        for line in p.output().splitlines()
        if line.startswith("{") and (event := json.loads(line)).get("event") == "llm.call.retried"
    ]
    assert len(retries) == faults["429"] + faults["500"] + faults["timeout"]
    assert {e["reason"] for e in retries} == {"429", "500", "timeout"}
    assert all(e["wait_seconds"] >= 1.0 for e in retries if e["reason"] == "429")
    # The malformed answers were asked again, and the run's log says so.
    events = (await client.get(f"{run_url}/logs?limit=1000", headers=headers)).json()["items"]
    assert sum(e["event"] == "task.reasked" for e in events) == faults["malformed"]
    print(
        f"\n{pairs} pairs through {sum(faults.values())} injected faults {dict(faults)}: "
        f"completed in {time.monotonic() - started:.1f} s with {len(fake_llm.requests)} calls"
    )
