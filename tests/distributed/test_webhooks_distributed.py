"""Webhooks in distributed mode: the API only writes the outbox (with the run's end, in the
workers' transactions); two `quarry worker` processes send it, and no delivery is sent by
both."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tests.conftest import make_settings
from tests.distributed.conftest import FAST_RECOVERY, Workers, purge_queue
from tests.support.api import (
    add_variable,
    create_project,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.fake_llm import FakeLLM
from tests.support.webhook_receiver import WebhookReceiver

from quarry.settings import Settings
from quarry.webhooks import signing

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SECRET = "distributed-signing-secret"
HOOKS = 4
RUNS = 3
#: A hang guard only.
DEADLINE = 90


@pytest.fixture
def settings(
    tmp_path: Path, fake_llm: FakeLLM, database_url: str, redis_url: str
) -> Iterator[Settings]:
    queue = f"quarry-test:{uuid.uuid4().hex[:12]}"
    try:
        yield make_settings(
            tmp_path,
            fake_llm,
            database_url=database_url,
            redis_url=redis_url,
            redis_queue=queue,
            webhook_allow_private=True,  # the receiver is on 127.0.0.1
            webhook_poll_seconds=0.1,
            webhook_backoff_seconds=0.1,
            **FAST_RECOVERY,
        )
    finally:
        purge_queue(redis_url, queue)


async def test_two_workers_send_every_delivery_once(
    app: FastAPI, client: httpx.AsyncClient, workers: Workers
) -> None:
    await workers.start_ready()
    await workers.start_ready()
    headers = await sign_up(app, client, "fleet@example.org")
    pid = (await create_project(client, headers))["id"]
    await add_variable(client, headers, pid, name="age", description="Age", type="integer")
    with WebhookReceiver() as receiver:
        receiver.answer(500)  # one failed attempt, retried by whichever worker claims it
        for n in range(HOOKS):
            response = await client.post(
                f"/api/v1/projects/{pid}/webhooks",
                json={
                    "url": f"{receiver.url}?hook={n}",
                    "events": ["run.finished"],
                    "secret": SECRET,
                },
                headers=headers,
            )
            assert response.status_code == 201, response.text
        files = [("a.txt", b"The patient is 42 years old.", "text/plain")]
        assert (await upload(client, headers, pid, files)).status_code == 201
        await wait_for_documents(client, headers, pid)
        runs = []
        for _ in range(RUNS):
            started = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
            assert started.status_code == 202, started.text
            runs.append((await wait_for_run(client, headers, pid, started.json()["id"]))["id"])

        got = await receiver.arrived(HOOKS * RUNS, DEADLINE)
        pairs = collections.Counter(
            (r.path.rsplit("=", 1)[1], r.json["data"]["run"]["id"]) for r in got
        )
        assert pairs == {(str(n), run): 1 for n in range(HOOKS) for run in runs}
        assert all(signing.verify(SECRET, r.headers["quarry-signature"], r.body) for r in got)
        assert len(receiver.received) == HOOKS * RUNS + 1  # and the one 500
        # Each delivery recorded by one worker (the log line follows the answer).
        deadline = time.monotonic() + DEADLINE
        while _delivered_lines(workers) < HOOKS * RUNS:
            assert time.monotonic() < deadline, _delivered_lines(workers)
            await asyncio.sleep(0.05)
        assert _delivered_lines(workers) == HOOKS * RUNS


def _delivered_lines(workers: Workers) -> int:
    logs = "".join(p.output() for p in workers.group.processes)
    return logs.count('"event": "webhooks.delivered"')
