"""A run bigger than one chunk of task rows: created at once as `preparing`, its first tasks
running while the rest of its rows are created, every pair asked exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from quarry.runs import lifecycle
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
from tests.support.fake_llm import FakeLLM


async def test_a_large_run_is_prepared_while_it_runs_and_asks_each_pair_once(
    tmp_path: Path, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "CHUNK_ROWS", 6)  # two documents × three variables a chunk
    monkeypatch.setattr(lifecycle, "PREPARE_CHUNK_ROWS", 6)
    fake_llm.default_reply = {"found": True, "evidence": "text", "value": "x", "confidence": 0.9}
    async with running_app(make_settings(tmp_path, fake_llm)) as (app, client):
        headers = await sign_up(app, client, "large@example.org")
        pid = (await create_project(client, headers))["id"]
        for n in range(3):
            await add_variable(
                client, headers, pid, name=f"v{n}", description="A value", type="text"
            )
        files = [(f"d{n}.txt", f"Document {n}: text.".encode(), "text/plain") for n in range(9)]
        assert (await upload(client, headers, pid, files)).status_code == 201
        await wait_for_documents(client, headers, pid)

        response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
        assert response.status_code == 202, response.text
        created = response.json()
        assert created["status"] == "preparing"
        assert created["total"] == 27 and created["counts"]["pending"] == 27

        run = await wait_for_run(client, headers, pid, created["id"])
        assert run["status"] == "completed", run
        assert run["counts"]["succeeded"] == 27 and run["done"] == 27
        rows = await list_extractions(client, headers, pid, run_id=run["id"])
        assert len({(r["document_id"], r["variable_id"]) for r in rows}) == 27
        asked = Counter(r.text for r in fake_llm.requests)
        assert len(fake_llm.requests) == 27 and set(asked.values()) == {1}
