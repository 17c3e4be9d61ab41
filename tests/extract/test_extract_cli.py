"""`quarry extract` as a user runs it: a real subprocess against the fake LLM, no server."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import yaml

from quarry.settings import Settings
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
from tests.support.documents import make_docx, make_pdf
from tests.support.fake_llm import FakeLLM, FakeRequest, ReplyValue, answer_each
from tests.support.processes import ProcessGroup, quarry_command

#: A hang guard only: a run of a few pairs takes seconds.
DEADLINE = 180

CODEBOOK = """\
quarry_codebook: 1
name: Statin trials
description: Trials of statins
variables:
  - name: sample_size
    label: Sample size
    type: integer
    description: Number of participants randomised
    examples:
      - value: 240
        snippet: "240 patients were randomised"
  - name: design
    type: category
    description: Study design
    allowed_values: [RCT, Cohort, Case-control]
  - name: blinded
    type: boolean
    description: Whether the trial was double blind
  - name: start_date
    type: date
    description: When enrolment started
"""
VARIABLES = ("sample_size", "design", "blinded", "start_date")


def _sentence(number: int) -> str:
    return (
        f"Trial {number}. We randomised {number * 100} patients in an RCT. The trial was "
        f"double blind. Enrolment started on 2020-0{number}-15."
    )


def _documents(folder: Path) -> list[Path]:
    """A TXT, a DOCX and a PDF, each stating every variable."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "a-trial1.txt": _sentence(1).encode(),
        "b-trial2.docx": make_docx([_sentence(2)]),
        "c-trial3.pdf": make_pdf([_sentence(3)]),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def _answer(name: str, text: str) -> dict[str, Any]:
    if name == "sample_size":
        found = re.search(r"randomised\s+(\d+)\s+patients", text)
        assert found is not None
        return {"evidence": found.group(0), "value": int(found.group(1)), "found": True}
    if name == "design":
        return {"evidence": "RCT", "value": "RCT", "found": True}
    if name == "blinded":
        return {"evidence": "double blind", "value": True, "found": True}
    found = re.search(r"Enrolment\s+started\s+on\s+(\d{4}-\d{2}-\d{2})", text)
    assert found is not None
    return {"evidence": found.group(0), "value": found.group(1), "found": True}


def _document_of(request: FakeRequest) -> str:
    found = re.search(r"Trial (\d)\.", request.text)
    assert found is not None, request.text[:500]
    return found.group(1)


class Answers:
    """The fake's answers, with every (document, variable) asked counted; `hold_at` makes
    that call (0-based) wait until `release` is set, signalling `held` meanwhile."""

    def __init__(self, hold_at: int | None = None) -> None:
        self.asked: list[tuple[str, str]] = []
        self.hold_at = hold_at
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: FakeRequest) -> ReplyValue:
        with self._lock:
            number = len(self.asked)
            self.asked += [(_document_of(request), name) for name in request.variables]
        if number == self.hold_at:
            self.held.set()
            assert self.release.wait(DEADLINE), "the test never released the held call"
        return answer_each(lambda name: _answer(name, request.text))(request)


def _env(fake: FakeLLM, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "QUARRY_LLM_MODEL": "gpt-4o-mini",
        "QUARRY_LLM_MAX_RETRIES": "1",
        "QUARRY_WORKER_SHUTDOWN_GRACE_SECONDS": "60",
        **extra,
    }


def _extract(
    group: ProcessGroup,
    name: str,
    tmp_path: Path,
    fake: FakeLLM,
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    process = group.start(
        name, quarry_command("extract", *args), env=env or _env(fake), cwd=tmp_path
    )
    code = process.wait_or_kill(DEADLINE)
    return code, process.output()


def _sheets(path: Path) -> dict[str, list[list[Any]]]:
    """Every sheet's cell values, without the columns that hold ids of one database."""
    workbook = openpyxl.load_workbook(path)
    sheets = {}
    for sheet in workbook.worksheets:
        rows = [list(row) for row in sheet.iter_rows(values_only=True)]
        keep = [i for i, header in enumerate(rows[0]) if header not in ("document_id", "run_id")]
        sheets[sheet.title] = [[row[i] for i in keep] for row in rows]
    return sheets


async def _api_export(settings: Settings, documents: list[Path]) -> bytes:
    """The same extraction through the API: project, variables, uploads, run, export."""
    async with running_app(settings) as (app, client):
        headers = await sign_up(app, client, "api@example.org")
        project = await create_project(client, headers, "Statin trials")
        pid = project["id"]
        response = await client.patch(
            f"/api/v1/projects/{pid}", json={"description": "Trials of statins"}, headers=headers
        )
        assert response.status_code == 200, response.text
        for variable in yaml.safe_load(CODEBOOK)["variables"]:
            await add_variable(client, headers, pid, **variable)
        for path in documents:  # one at a time: the upload order is the rows' order
            response = await upload(client, headers, pid, [(path.name, path.read_bytes(), "")])
            assert response.status_code == 201, response.text
        await wait_for_documents(client, headers, pid)
        response = await client.post(f"/api/v1/projects/{pid}/runs", headers=headers)
        assert response.status_code == 202, response.text
        run = await wait_for_run(client, headers, pid, response.json()["id"], timeout=DEADLINE)
        assert run["status"] == "completed", run
        response = await client.get(
            f"/api/v1/projects/{pid}/export", params={"format": "xlsx"}, headers=headers
        )
        assert response.status_code == 200
        return response.content


async def test_extract_writes_the_workbook_the_api_exports(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    answers = Answers()
    fake_llm.default_reply = answers
    (tmp_path / "codebook.yaml").write_text(CODEBOOK)
    documents = _documents(tmp_path / "docs")
    with ProcessGroup(tmp_path / "logs") as group:
        code, output = _extract(
            group, "extract", tmp_path, fake_llm, "codebook.yaml", "docs", "-o", "out.xlsx"
        )
        assert code == 0, output
    assert "12 of 12 pairs done" in output and "Wrote out.xlsx" in output
    assert sorted(answers.asked) == sorted((d, v) for d in "123" for v in VARIABLES)
    # The terminal stayed quiet; the whole story is in the work directory's log.
    events = [
        json.loads(line)["event"]
        for line in (tmp_path / ".quarry" / "extract.log").read_text().splitlines()
    ]
    assert events.count("documents.parse.ready") == 3 and "runs.finished" in events
    assert "runs.finished" not in output

    settings = make_settings(tmp_path / "api", fake_llm, llm_model="gpt-4o-mini")
    exported = await _api_export(settings, documents)
    (tmp_path / "api.xlsx").write_bytes(exported)
    cli, api = _sheets(tmp_path / "out.xlsx"), _sheets(tmp_path / "api.xlsx")
    assert list(cli) == ["Results", "Details", "Codebook", "Legend"]
    assert cli == api
    assert cli["Results"][1:] == [
        ["a-trial1.txt", 100, "RCT", True, cli["Results"][1][4]],
        ["b-trial2.docx", 200, "RCT", True, cli["Results"][2][4]],
        ["c-trial3.pdf", 300, "RCT", True, cli["Results"][3][4]],
    ]
    assert [row[4].date().isoformat() for row in cli["Results"][1:]] == [
        "2020-01-15",
        "2020-02-15",
        "2020-03-15",
    ]

    # Again, as CSV: every answer comes from the work directory's cache, no call is made.
    before = len(answers.asked)
    with ProcessGroup(tmp_path / "logs-again") as group:
        code, output = _extract(
            group, "again", tmp_path, fake_llm, "codebook.yaml", "docs/*", "-o", "out.csv"
        )
        assert code == 0, output
    assert len(answers.asked) == before
    lines = (tmp_path / "out.csv").read_text(encoding="utf-8-sig").splitlines()
    assert lines[0] == "document_id,filename,sample_size,design,blinded,start_date"
    assert [line.split(",", 1)[1] for line in lines[1:]] == [
        "a-trial1.txt,100,RCT,true,2020-01-15",
        "b-trial2.docx,200,RCT,true,2020-02-15",
        "c-trial3.pdf,300,RCT,true,2020-03-15",
    ]

    # One variable edited: only its pairs are asked again.
    (tmp_path / "codebook.yaml").write_text(
        CODEBOOK.replace("description: Study design", "description: The study's design")
    )
    with ProcessGroup(tmp_path / "logs-edited") as group:
        code, output = _extract(
            group, "edited", tmp_path, fake_llm, "codebook.yaml", "docs", "-o", "out.csv"
        )
        assert code == 0, output
    assert sorted(answers.asked[before:]) == [("1", "design"), ("2", "design"), ("3", "design")]


def _report(group: ProcessGroup, tmp_path: Path, lines: int = 80) -> str:
    """The processes' output, and the end of the extract's own log (its INFO lines)."""
    log = tmp_path / ".quarry" / "extract.log"
    tail = log.read_text(encoding="utf-8").splitlines()[-lines:] if log.exists() else []
    return "\n".join([group.report(), f"----- {log} (last {len(tail)} lines)", *tail])


def _wait_for_stored(database: Path, count: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            stored = db.execute(
                "SELECT count(*) FROM extractions WHERE status = 'succeeded'"
            ).fetchone()[0]
        if stored >= count:
            return
        assert time.monotonic() < deadline, f"only {stored} answers stored"
        time.sleep(0.05)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "crash"])
def test_an_interrupted_extract_goes_on_without_asking_a_pair_twice(
    tmp_path: Path, fake_llm: FakeLLM, stop: signal.Signals
) -> None:
    answers = Answers(hold_at=5)
    fake_llm.default_reply = answers
    (tmp_path / "codebook.yaml").write_text(CODEBOOK)
    _documents(tmp_path / "docs")
    args = ("extract", "codebook.yaml", "docs", "-o", "out.json", "--concurrency", "1")
    with ProcessGroup(tmp_path / "logs") as group:
        first = group.start("first", quarry_command(*args), env=_env(fake_llm), cwd=tmp_path)
        assert answers.held.wait(DEADLINE), _report(group, tmp_path)
        # The five answers before the held call are stored (the runner stores in batches).
        _wait_for_stored(tmp_path / ".quarry" / "quarry.db", 5)
        first.send(stop)
        if stop is signal.SIGINT:
            first.wait_for_output("Ctrl-C", timeout=DEADLINE)
        answers.release.set()  # after a Ctrl-C the held call is answered and stored
        code = first.wait_or_kill(DEADLINE)
        assert code == (130 if stop is signal.SIGINT else -signal.SIGKILL), _report(group, tmp_path)
        asked_first = list(answers.asked)
        # A crash stops at the held call; after Ctrl-C a call admitted just before the run
        # was cancelled may still be made (and is stored).
        assert len(asked_first) == 6 if stop is signal.SIGKILL else len(asked_first) >= 6
        if stop is signal.SIGINT:
            assert "Interrupted" in first.output()

        second = group.start("second", quarry_command(*args), env=_env(fake_llm), cwd=tmp_path)
        assert second.wait_or_kill(DEADLINE) == 0, _report(group, tmp_path)
        assert "12 of 12 pairs done" in second.output()

    asked = Counter(answers.asked)
    pairs = {(d, v) for d in "123" for v in VARIABLES}
    assert set(asked) == pairs
    twice = {pair for pair, count in asked.items() if count > 1}
    if stop is signal.SIGINT:
        # The call in flight at Ctrl-C was answered and stored: nothing is asked again.
        assert twice == set()
    else:
        # Only the call the crash cut off (never answered, so never stored) is asked again.
        assert twice == {asked_first[5]}
        assert asked[asked_first[5]] == 2
    rows = json.loads((tmp_path / "out.json").read_text())
    assert [row["sample_size"] for row in rows] == [100, 200, 300]
    assert all(row["design"] == "RCT" and row["blinded"] is True for row in rows)


def test_dry_run_prints_the_estimate_and_makes_no_call(tmp_path: Path, fake_llm: FakeLLM) -> None:
    (tmp_path / "codebook.yaml").write_text(CODEBOOK)
    _documents(tmp_path / "docs")
    with ProcessGroup(tmp_path / "logs") as group:
        code, output = _extract(
            group,
            "dry",
            tmp_path,
            fake_llm,
            "codebook.yaml",
            "docs",
            "-o",
            "out.xlsx",
            "--dry-run",
            "--group-size",
            "2",
        )
    assert code == 0, output
    assert fake_llm.calls() == 0
    assert "Estimate for 3 documents × 4 variables = 12 pairs with gpt-4o-mini" in output
    assert "calls: 6 (answered from the cache: 0 pairs)" in output
    assert not (tmp_path / "out.xlsx").exists()


def test_failed_pairs_exit_non_zero_with_the_reasons(tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.default_reply = Answers()
    fake_llm.script(
        variable="design", reply={"evidence": "RCT", "value": "Crossover", "found": True}
    )
    (tmp_path / "codebook.yaml").write_text(CODEBOOK)
    _documents(tmp_path / "docs")
    (tmp_path / "docs" / "d-broken.pdf").write_bytes(b"%PDF-1.7\nnot really a PDF\n")
    with ProcessGroup(tmp_path / "logs") as group:
        code, output = _extract(
            group, "failing", tmp_path, fake_llm, "codebook.yaml", "docs", "-o", "out.csv"
        )
    assert code == 1, output
    assert "12 pairs done: 9 found, 0 not stated, 3 failed" in output
    assert "3 pairs have no answer:" in output
    reason = re.search(r"  3 × (.+)", output)
    assert reason is not None and "Crossover" in reason.group(1), output
    assert "Not read: d-broken.pdf: " in output
    # What was answered is written all the same.
    lines = (tmp_path / "out.csv").read_text(encoding="utf-8-sig").splitlines()
    assert [line.split(",")[2:] for line in lines[1:]] == [
        ["100", "", "true", "2020-01-15"],
        ["200", "", "true", "2020-02-15"],
        ["300", "", "true", "2020-03-15"],
        ["", "", "", ""],
    ]


def test_bad_input_is_refused_with_every_problem_before_anything_runs(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    (tmp_path / "codebook.yaml").write_text(
        "variables:\n"
        "  - name: sample_size\n    type: integer\n    description: N\n    examples: [240]\n"
        "  - name: Design\n    type: colour\n    description: D\n"
        "  - name: weight\n    type: integer\n    unit: kg\n    description: W\n"
    )
    _documents(tmp_path / "docs")
    with ProcessGroup(tmp_path / "logs") as group:
        code, output = _extract(
            group, "bad", tmp_path, fake_llm, "codebook.yaml", "docs", "-o", "out.xlsx"
        )
        assert code == 2, output
        assert "Variable 'sample_size' (entry 1 of variables): examples must be a list" in output
        assert "Variable 'Design' (entry 2 of variables): name must be" in output
        assert "Variable 'Design' (entry 2 of variables): type must be one of" in output
        assert "Variable 'weight' (entry 3 of variables): Only number variables" in output
        (tmp_path / "codebook.yaml").write_text(CODEBOOK)
        code, output = _extract(
            group, "no-docs", tmp_path, fake_llm, "codebook.yaml", "nowhere", "-o", "out.xlsx"
        )
        assert code == 2 and "There is no file or folder nowhere." in output
        assert not (tmp_path / ".quarry").exists()  # nothing ran

        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "scan.pdf").write_bytes(b"%PDF-1.7\nnot really a PDF\n")
        code, output = _extract(
            group, "unreadable", tmp_path, fake_llm, "codebook.yaml", "broken", "-o", "out.xlsx"
        )
        assert code == 2, output
        assert "Not read: scan.pdf: " in output
        assert "There are no ready documents to process" in output
    assert fake_llm.calls() == 0


def test_a_budget_stops_the_extract_and_says_so(tmp_path: Path, fake_llm: FakeLLM) -> None:
    """The model and the server from the command line; the environment names neither."""
    answers = Answers()
    fake_llm.default_reply = answers
    (tmp_path / "codebook.yaml").write_text(CODEBOOK)
    _documents(tmp_path / "docs")
    env = {"OPENAI_API_KEY": "sk-test-not-a-real-key", "QUARRY_LLM_MODEL": "unpriced-model"}
    with ProcessGroup(tmp_path / "logs") as group:
        code, output = _extract(
            group,
            "budget",
            tmp_path,
            fake_llm,
            "codebook.yaml",
            "docs",
            "-o",
            "out.csv",
            "--base-url",
            fake_llm.base_url,
            "--model",
            "gpt-4o-mini",
            "--budget",
            "0.0002",
            "--concurrency",
            "1",
            env=env,
        )
    assert code == 1, output
    assert {request.model for request in fake_llm.requests if request.is_chat} == {"gpt-4o-mini"}
    asked = len(answers.asked)
    assert 0 < asked < 12
    assert f"{12 - asked} × The run's budget of $0.0002 was reached." in output, output
    assert f"{12 - asked} pairs have no answer:" in output


REPO = Path(__file__).resolve().parents[2]


def _example_answer(name: str, text: str) -> dict[str, Any]:
    """What a careful model answers about the example documents, quoting them."""
    patterns: dict[str, tuple[str, Callable[[re.Match[str]], Any]]] = {
        # Not the codebook's own example ("A total of 240 patients were randomised."), which
        # the prompt carries too.
        "sample_size": (
            r"cohort of (\d[\d,]*) adults|(\d+) patients were\s+randomised to",
            lambda m: int((m[1] or m[2]).replace(",", "")),
        ),
        "design": (r"RCT|cohort", lambda m: "RCT" if m[0] == "RCT" else "Cohort"),
        "blinded": (
            r"double-blind|not blinded|nobody was blinded",
            lambda m: m[0] == "double-blind",
        ),
        "mean_age": (r"[Mm]ean age[^\d]*(\d+\.\d)", lambda m: float(m[1])),
    }
    if name in patterns:
        pattern, value = patterns[name]
        found = re.search(pattern, text)
        if found is not None:
            return {"found": True, "evidence": found[0], "value": value(found)}
    return {"found": False, "value": None, "evidence": ""}


def _examples_reply(request: FakeRequest) -> ReplyValue:
    text = request.text
    if request.is_group:
        return {"answers": [{"variable": n, **_example_answer(n, text)} for n in request.variables]}
    return _example_answer(str(request.variable), text)


async def test_the_readme_s_example_extracts_what_the_api_flow_exports(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    """`quarry extract examples/codebook.yaml examples/docs -o out.xlsx` on a fresh clone."""
    fake_llm.default_reply = _examples_reply
    with ProcessGroup(tmp_path / "logs") as group:
        code, output = _extract(
            group,
            "example",
            tmp_path,
            fake_llm,
            str(REPO / "examples" / "codebook.yaml"),
            str(REPO / "examples" / "docs"),
            "-o",
            "out.xlsx",
        )
        assert code == 0, output
    asked = fake_llm.calls()

    settings = make_settings(tmp_path / "api", fake_llm, llm_model="gpt-4o-mini")
    async with running_app(settings) as (app, client):
        headers = await sign_up(app, client, "api@example.org")
        pid = (await create_project(client, headers, "Statin trials"))["id"]
        response = await client.put(
            f"/api/v1/projects/{pid}/codebook",
            content=(REPO / "examples" / "codebook.yaml").read_bytes(),
            params={"format": "yaml"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        response = await client.patch(
            f"/api/v1/projects/{pid}",
            json={"description": "Design, size and outcome of randomised statin trials."},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        for path in sorted((REPO / "examples" / "docs").iterdir()):
            response = await upload(client, headers, pid, [(path.name, path.read_bytes(), "")])
            assert response.status_code == 201, response.text
        await wait_for_documents(client, headers, pid)
        response = await client.post(f"/api/v1/projects/{pid}/runs", headers=headers)
        assert response.status_code == 202, response.text
        run = await wait_for_run(client, headers, pid, response.json()["id"], timeout=DEADLINE)
        assert run["status"] == "completed", run
        exported = await client.get(
            f"/api/v1/projects/{pid}/export", params={"format": "xlsx"}, headers=headers
        )
        assert exported.status_code == 200
    (tmp_path / "api.xlsx").write_bytes(exported.content)
    cli, api = _sheets(tmp_path / "out.xlsx"), _sheets(tmp_path / "api.xlsx")
    assert cli == api
    results = {row[0]: row for row in cli["Results"][1:]}
    assert results["trial-ldl.txt"][1:4] == [240, "RCT", True]
    assert results["cohort-statins.docx"][1:4] == [5020, "Cohort", False]
    assert asked == 21 and fake_llm.calls() == 42  # 3 documents × 7 variables, each way
