"""`quarry.client` against a real server: `quarry serve` in a child process, the fake LLM."""

from __future__ import annotations

import asyncio
import io
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from quarry.client import AsyncQuarry, CodebookError, Quarry, QuarryAPIError
from quarry.runs.schemas import RunOut
from tests.support.documents import make_docx, make_pdf
from tests.support.fake_llm import FakeLLM, FakeRequest, ReplyValue, answer_each
from tests.support.processes import ProcessGroup, quarry_command

#: Hang guards only.
STARTUP_DEADLINE = 120
RUN_DEADLINE = 180
EMAIL, PASSWORD = "analyst@example.org", "a long enough password"

CODEBOOK = """\
quarry_codebook: 1
name: Statin trials
settings:
  group_size: 1
variables:
  - name: sample_size
    type: integer
    description: Number of participants randomised
  - name: dose
    type: number
    unit: mg
    description: Daily dose
  - name: blinded
    type: boolean
    description: Whether the trial was double blind
  - name: start_date
    type: date
    description: When enrolment started
  - name: design
    type: category
    description: Study design
    allowed_values: [RCT, Cohort]
  - name: outcomes
    type: list
    description: The outcomes measured
  - name: sponsor
    type: text
    description: Who paid for the trial
"""
TEXTS = {
    "a-trial1.txt": "Trial 1. We randomised 100 patients to 10 mg daily. Double blind. "
    "Enrolment started on 2020-01-15. Outcomes: LDL and MI. Funded by Acme.",
    "b-trial2.docx": "Trial 2. We randomised 200 patients to 12.5 mg daily. Double blind. "
    "Enrolment started on 2020-02-15. Outcomes: LDL. Funded by Beta.",
    "c-trial3.pdf": "Trial 3. We randomised 300 patients to 20 mg daily. "
    "Enrolment started on 2020-03-15. Outcomes: MI and stroke. Funded by Acme.",
}


def _answer(name: str, text: str) -> dict[str, Any]:
    def found(pattern: str) -> re.Match[str]:
        match = re.search(pattern, text)
        assert match is not None, (pattern, text[:300])
        return match

    if name == "sample_size":
        m = found(r"randomised\s+(\d+)")
        return {"evidence": m.group(0), "value": int(m.group(1)), "found": True}
    if name == "dose":
        m = found(r"([\d.]+)\s+mg")
        return {"evidence": m.group(0), "value": float(m.group(1)), "found": True}
    if name == "blinded":
        if "Double blind" not in text:
            return {"evidence": None, "value": None, "found": False}
        return {"evidence": "Double blind", "value": True, "found": True}
    if name == "start_date":
        m = found(r"started\s+on\s+(\S+)\.")
        return {"evidence": m.group(0), "value": m.group(1), "found": True}
    if name == "design":
        return {"evidence": "randomised", "value": "RCT", "found": True}
    if name == "outcomes":
        m = found(r"Outcomes:\s+([^.]+)\.")
        return {"evidence": m.group(0), "value": m.group(1).split(" and "), "found": True}
    m = found(r"Funded\s+by\s+(\w+)")
    return {"evidence": m.group(0), "value": m.group(1), "found": True}


def _reply(request: FakeRequest) -> ReplyValue:
    return answer_each(lambda name: _answer(name, request.text))(request)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path, fake_llm: FakeLLM) -> Iterator[str]:
    """`quarry serve` on a free port, with a user; yields its URL once it is ready."""
    fake_llm.default_reply = _reply
    port = _free_port()
    env = {
        "QUARRY_ENV": "test",
        "QUARRY_PASSWORD_HASH_PROFILE": "test",
        "QUARRY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/server.db",
        "QUARRY_STORAGE_DIR": str(tmp_path / "storage"),
        "QUARRY_SECRET_KEY": "test-secret-key-that-is-long-enough-for-hs256",
        "QUARRY_ADMIN_EMAIL": EMAIL,
        "QUARRY_ADMIN_PASSWORD": PASSWORD,
        "OPENAI_BASE_URL": fake_llm.base_url,
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "QUARRY_LLM_MODEL": "gpt-4o-mini",
        "QUARRY_LOG_JSON": "false",
    }
    url = f"http://127.0.0.1:{port}"
    with ProcessGroup(tmp_path / "logs") as group:
        process = group.start(
            "serve", quarry_command("serve", "--port", str(port)), env=env, cwd=tmp_path
        )
        deadline = time.monotonic() + STARTUP_DEADLINE
        while True:
            assert process.alive, group.report()
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, group.report()
            time.sleep(0.1)
        yield url


def _documents(folder: Path) -> Path:
    folder.mkdir()
    for name, text in TEXTS.items():
        if name.endswith(".txt"):
            (folder / name).write_text(text)
        elif name.endswith(".docx"):
            (folder / name).write_bytes(make_docx([text]))
        else:
            (folder / name).write_bytes(make_pdf([text]))
    return folder


def _as_csv_text(value: Any) -> str:
    """A DataFrame cell as the CSV export writes it."""
    if isinstance(value, list):
        return "; ".join(value)
    if value is None or value is pd.NaT or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def test_the_client_runs_a_project_end_to_end_and_exports_typed_frames(
    tmp_path: Path, server: str
) -> None:
    (tmp_path / "codebook.yaml").write_text(CODEBOOK)
    folder = _documents(tmp_path / "papers")
    with Quarry(server).sign_in(EMAIL, PASSWORD) as q:
        assert q.me().email == EMAIL
        project = q.create_project("Statin trials")
        imported = q.import_codebook(project, tmp_path / "codebook.yaml")
        assert [v.name for v in imported] == [
            "sample_size", "dose", "blinded", "start_date", "design", "outcomes", "sponsor"
        ]  # fmt: skip
        # Importing again changes nothing: the prompts keep their versions.
        assert [v.prompt_version for v in q.import_codebook(project, tmp_path / "codebook.yaml")]
        assert {v.prompt_version for v in q.variables(project)} == {1}

        uploaded = q.upload(project, folder)
        assert [item.filename for item in uploaded] == list(TEXTS)
        assert all(d.status == "ready" for d in q.wait_for_documents(project, timeout=60))

        estimate = q.estimate_run(project)
        assert estimate.pairs == 21 and estimate.calls == 21
        readings: list[RunOut] = []
        run = q.start_run(project)
        finished = q.wait_for_run(
            project, run.id, progress=readings.append, poll_seconds=0.1, timeout=RUN_DEADLINE
        )
        assert finished.status == "completed", finished
        assert readings[-1] == finished and readings[-1].done == 21
        assert [r.done for r in readings] == sorted(r.done for r in readings)

        extracted = q.extractions(project, run_id=run.id)
        assert len(extracted) == 21
        assert {e.status for e in extracted} == {"succeeded", "not_found"}
        by_name = {v.name: v for v in imported}
        documents = {d.filename: d for d in q.documents(project)}
        corrected = q.review(
            project,
            documents["b-trial2.docx"].id,
            by_name["sample_size"].id,
            "corrected",
            value=250,
        )
        assert corrected.status == "corrected" and corrected.value == 250

        gold = pd.DataFrame({"filename": list(TEXTS), "sample_size": [100, 250, 300]})
        evaluation = q.evaluate(project, gold)
        assert evaluation.overall.compared == 3 and evaluation.overall.accuracy == 1.0
        by_reviews = q.evaluate_reviews(project)
        assert by_reviews.overall.compared == 1 and by_reviews.overall.wrong == 1

        frame = q.export_dataframe(project)
        csv = pd.read_csv(
            io.BytesIO(q.export(project, "csv")),
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
        )
        long = q.export_dataframe(project, layout="long")

        with pytest.raises(QuarryAPIError) as missing:
            q.project(uuid.uuid4())
        assert missing.value.status_code == 404 and missing.value.detail == "No such project."

    # The frame is the CSV export, cell for cell, with a type per variable type.
    assert list(frame.columns) == list(csv.columns)
    as_text = [[_as_csv_text(v) for v in row] for row in frame.astype(object).values.tolist()]
    assert as_text == csv.values.tolist()
    assert {column: str(dtype) for column, dtype in frame.dtypes.items()} == {
        "document_id": "string",
        "filename": "string",
        "sample_size": "Int64",
        "dose": "Float64",
        "blinded": "boolean",
        "start_date": "datetime64[ns]",
        "design": "string",
        "outcomes": "object",
        "sponsor": "string",
    }
    assert frame["sample_size"].tolist() == [100, 250, 300]  # the review wins
    assert frame["dose"].tolist() == [10.0, 12.5, 20.0]
    assert frame["blinded"].tolist()[:2] == [True, True] and pd.isna(frame["blinded"][2])
    assert frame["start_date"].dt.month.tolist() == [1, 2, 3]
    assert frame["outcomes"].tolist() == [["LDL", "MI"], ["LDL"], ["MI", "stroke"]]
    assert frame["sample_size"].sum() == 650
    assert len(long) == 21 and str(long["confidence"].dtype) == "Float64"

    async def the_same_asynchronously() -> None:
        async with AsyncQuarry(server) as aq:
            await aq.sign_in(EMAIL, PASSWORD)
            projects = await aq.projects()
            assert [p.name for p in projects] == ["Statin trials"]
            again = await aq.export_dataframe(projects[0])
            pd.testing.assert_frame_equal(again, frame)
            second = await aq.create_project("Second")
            await aq.import_codebook(second, tmp_path / "codebook.yaml")
            await aq.upload(second, folder / "a-trial1.txt")
            await aq.wait_for_documents(second, timeout=60)
            run = await aq.start_run(second)
            seen: list[int] = []
            done = await aq.wait_for_run(
                second, run.id, progress=lambda r: seen.append(r.done), poll_seconds=0.1
            )
            assert done.status == "completed" and seen[-1] == 7
            assert done.tokens_in > 0  # the result cache is per project: these were asked

    asyncio.run(the_same_asynchronously())


def test_a_bad_codebook_is_refused_before_any_request(tmp_path: Path, server: str) -> None:
    (tmp_path / "bad.yaml").write_text(
        "variables:\n  - name: n\n    type: integer\n    description: N\n    examples: [240]\n"
    )
    with Quarry(server).sign_in(EMAIL, PASSWORD) as q:
        project = q.create_project("Bad")
        with pytest.raises(CodebookError) as refused:
            q.import_codebook(project, tmp_path / "bad.yaml")
        assert "Variable 'n' (entry 1 of variables): examples must be a list" in str(refused.value)
        assert q.variables(project) == []
