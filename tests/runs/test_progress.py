"""Live progress as a browser gets it: every open stream of a run follows it to its end, and
however many streams are open, one reader per run does the database work."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.conftest import make_settings
from tests.support.api import (
    add_variable,
    create_project,
    running_app,
    sign_up,
    upload,
    wait_for_documents,
)
from tests.support.fake_llm import FakeLLM

STREAMS = 10


async def test_many_streams_of_a_run_share_one_reader_and_all_see_the_end(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = {"found": True, "evidence": "text", "value": "x", "confidence": 0.9}
    fake_llm.latency = 0.3
    settings = make_settings(tmp_path, fake_llm, llm_concurrency=2)
    async with running_app(settings) as (app, client):
        headers = await sign_up(app, client, "watch@example.org")
        pid = (await create_project(client, headers))["id"]
        await add_variable(client, headers, pid, name="v", description="A value", type="text")
        files = [(f"d{n}.txt", f"Document {n}: text.".encode(), "text/plain") for n in range(8)]
        assert (await upload(client, headers, pid, files)).status_code == 201
        await wait_for_documents(client, headers, pid)
        run = (await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)).json()
        url = f"/api/v1/projects/{pid}/runs/{run['id']}/events"

        async def follow() -> str:
            body = ""
            async with client.stream("GET", url, headers=headers) as stream:
                async for chunk in stream.aiter_text():
                    body += chunk
            return body

        followers = [asyncio.create_task(follow()) for _ in range(STREAMS)]
        most = 0
        while not all(f.done() for f in followers):
            watched = app.state.progress.watched()
            assert len(watched) <= 1  # one reader for the run, whatever the streams
            most = max([most, *watched.values()])
            await asyncio.sleep(0.02)
        bodies = [await f for f in followers]
    assert most == STREAMS
    for body in bodies:
        assert body.count("event: end") == 1
        final = [line for line in body.splitlines() if line.startswith('data: {"id"')][-1]
        assert json.loads(final[6:])["status"] == "completed"
        # Every stream got the whole log, from the run's creation to its end.
        logs = [json.loads(line[6:])["event"] for line in body.splitlines() if '"event":' in line]
        assert logs[0] == "run.created" and logs[-1] == "run.finished"
