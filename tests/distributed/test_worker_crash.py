"""Workers killed with SIGKILL in the middle of a run, several times, with new ones started:
the run still completes with exactly one stored extraction per pair — none missing, none
stored twice — because tasks are claimed with leases that a dead worker stops renewing and
the sweeper hands back out (see quarry/worker.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from tests.distributed.conftest import Workers
from tests.distributed.reports import assert_stored_exactly_once, make_project
from tests.support.fake_llm import FakeLLM
from tests.support.processes import ManagedProcess

from quarry.models import Extraction, ExtractionStatus

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: The longest a run may take before the test calls it hung (see CONVENTIONS, Tests).
HANG_GUARD_SECONDS = 480  # below pytest-timeout (600 s), so this message is the one seen

DOCUMENTS = 30  # × 10 variables = 300 pairs
KILLS = 3


async def _held_by(app: FastAPI, process: ManagedProcess) -> set[uuid.UUID]:
    """Tasks the worker process holds a lease on (its worker id embeds its pid)."""
    async with app.state.sessionmaker() as session:
        rows = await session.execute(
            select(Extraction.id).where(
                Extraction.status == ExtractionStatus.RUNNING,
                Extraction.lease_owner.like(f"%-{process.pid}-%"),
            )
        )
        return set(rows.scalars())


async def test_killed_workers_lose_and_duplicate_nothing(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM, workers: Workers
) -> None:
    pool = list(await asyncio.gather(workers.start_ready(), workers.start_ready()))
    headers, pid, pairs = await make_project(app, client, fake_llm, DOCUMENTS)

    started = time.monotonic()
    # A hang guard, not a timing: the run takes 10-25 s here, more than 20x less.
    hang_guard = started + HANG_GUARD_SECONDS
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run_url = f"/api/v1/projects/{pid}/runs/{response.json()['id']}"

    async def run_state() -> dict[str, Any]:
        run: dict[str, Any] = (await client.get(run_url, headers=headers)).json()
        return run

    orphaned: set[uuid.UUID] = set()  # tasks a worker held when it was killed
    for kill in range(1, KILLS + 1):
        # Spread the kills over the run, each at a moment the victim has calls in flight.
        while (await run_state())["done"] < kill * pairs // (KILLS + 2):
            assert time.monotonic() < hang_guard, "the run stalled before every kill"
            await asyncio.sleep(0.05)
        # A worker can be between two tasks at the instant we look: look again briefly.
        for _ in range(100):
            held = {p.pid: await _held_by(app, p) for p in pool if p.alive}
            victim = max((p for p in pool if p.alive), key=lambda p: len(held[p.pid]))
            if held[victim.pid]:
                break
            await asyncio.sleep(0.02)
        assert held[victim.pid], "the worker to kill holds no task: not mid-run"
        victim.kill()
        orphaned |= held[victim.pid]
        pool.append(workers.start())  # the survivors carry on while it starts
    while (run := await run_state())["status"] in ("preparing", "queued", "running"):
        assert time.monotonic() < hang_guard, f"run did not finish: {run}"
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started

    await assert_stored_exactly_once(app, run, pairs)
    # The killed workers' calls were lost and made again by the others.
    assert orphaned and fake_llm.calls(status=None) > pairs
    print(
        f"\n{pairs} pairs, {KILLS} workers SIGKILLed holding {len(orphaned)} tasks: "
        f"completed in {elapsed:.1f} s with {fake_llm.calls(status=None)} LLM calls"
    )
