"""Evaluation through the API: a real run against the fake model, then gold values from a CSV
(JSON and xlsx) and from reviews, and the bad files a user will upload.

The project and its run are made once for the module, through the API (`world`); every test
starts its own app on a copy of that database and storage, so what one test records (a
review) is seen by no other.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
from fastapi import FastAPI

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
from tests.support.fake_llm import FakeLLM

CODEBOOK: list[dict[str, Any]] = [
    {"name": "title", "description": "The trial's title", "type": "text"},
    {"name": "sample_size", "description": "Participants", "type": "integer"},
    {"name": "mean_age", "description": "Mean age", "type": "number", "unit": "years"},
    {"name": "randomised", "description": "Randomised?", "type": "boolean"},
    {"name": "start_date", "description": "Recruitment start", "type": "date"},
    {
        "name": "design",
        "description": "Study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort", "Case-control"],
    },
    {
        "name": "outcomes",
        "description": "Outcomes reported",
        "type": "multi_category",
        "allowed_values": ["Mortality", "Morbidity", "Quality of life"],
    },
    {"name": "drugs", "description": "Drugs given", "type": "list"},
]

DOCUMENTS = {
    "alpha.txt": "ALPHA trial of aspirin in older adults.\n"
    "A total of 1,234 patients were randomised.\n"
    "Mean age was 61.5 years. Recruitment began in March 2020.\n"
    "Outcomes: mortality and quality of life.\nDrugs: aspirin.\n",
    "beta.txt": "BETA cohort study of statins.\nParticipants: 87. Mean age 47.\n"
    "Recruitment started on 12 May 2019.\nParticipants received atorvastatin; rosuvastatin.\n",
    "gamma.txt": "GAMMA: a case-control study.\nNo age was reported.\nStart 2018.\n",
}

# (value, evidence) the model answers; unlisted pairs are answered "not found".
ANSWERS: dict[str, dict[str, tuple[Any, str]]] = {
    "ALPHA": {
        "title": ("ALPHA trial of aspirin in older adults", "ALPHA trial of aspirin in older"),
        "sample_size": ("1,234", "1,234 patients were randomised"),
        "mean_age": (61.5, "Mean age was 61.5 years"),
        "randomised": ("yes", "patients were randomised"),
        "start_date": ("March 2020", "Recruitment began in March 2020"),
        "design": ("RCT", "patients were randomised"),
        "outcomes": (["Mortality", "Quality of life"], "Outcomes: mortality and quality of life"),
        "drugs": (["aspirin"], "Drugs: aspirin"),
    },
    "BETA": {
        "title": ("BETA cohort study of statins", "BETA cohort study of statins."),
        "sample_size": (78, "Participants: 78"),  # wrong, and not in the document
        "mean_age": ("47 years", "Mean age 47"),
        "randomised": (False, "BETA cohort study"),
        "start_date": ("2019-05", "Recruitment started on 12 May 2019"),  # less precise
        "design": ("Cohort", "BETA cohort study"),
        "outcomes": ([], "BETA cohort study"),
        "drugs": (
            "atorvastatin; simvastatin",
            "Drugs given were atorvastatin and simvastatin daily",  # not in the document
        ),
    },
    "GAMMA": {
        "title": ("GAMMA", "GAMMA: a case-control study."),
        "sample_size": ("lots", "GAMMA: a case-control study."),  # never valid: fails
        "start_date": (2018, "Start 2018."),
        "design": ("Case-control", "a case-control study"),
        "outcomes": (["Morbidity"], "GAMMA: a case-control study."),
    },
}

GOLD_CSV = (
    "document_id,filename,title,sample_size,mean_age,randomised,start_date,design,outcomes,"
    "drugs,notes\r\n"
    ',alpha.txt,ALPHA trial of aspirin in older adults,"1,234",61.5 years,maybe,2020,rct,'
    "Mortality; Quality of life,Aspirin,x\r\n"
    ",beta.txt,BETA cohort study of statins.,87,47.0,no,2019-05-12,Cohort,,"
    '"atorvastatin; rosuvastatin",\r\n'
    ",GAMMA.TXT,Gamma.,40,52,,2018,case-control,,,\r\n"
    ",delta.pdf,Delta,1,,,,,,,\r\n"
)

# Per variable: (compared, correct, accuracy), worked out by hand from ANSWERS and GOLD_CSV.
EXPECTED_ACCURACY = {
    "title": (3, 3, 1.0),
    "sample_size": (3, 1, 0.3333),  # 1234 ✓, 78 ≠ 87, gamma failed (no answer)
    "mean_age": (3, 2, 0.6667),  # 61.5 ✓, 47 = 47.0 ✓, gamma missed 52
    "randomised": (2, 2, 1.0),  # alpha's gold "maybe" is skipped; beta no ✓; gamma blank ✓
    "start_date": (3, 2, 0.6667),  # 2020-03 ✓ at year precision, 2019-05 too coarse, 2018 ✓
    "design": (3, 3, 1.0),
    "outcomes": (3, 2, 0.6667),  # ✓, [] = blank ✓, Morbidity where gold is blank
    "drugs": (3, 2, 0.6667),  # ✓, simvastatin ≠ rosuvastatin, both blank ✓
}
EXPECTED_SETS = {  # (precision, recall, f1)
    "outcomes": (0.6667, 1.0, 0.8),
    "drugs": (0.6667, 0.6667, 0.6667),
}


async def setup_project(
    app: FastAPI, client: httpx.AsyncClient, fake: FakeLLM
) -> tuple[dict[str, str], str, dict[str, str], dict[str, str], str]:
    """A project with the codebook and documents, after one completed run."""
    headers = await sign_up(app, client, "evaluator@example.org")
    pid = (await create_project(client, headers, "Gold = Standard"))["id"]
    variables = {}
    for spec in CODEBOOK:
        variables[spec["name"]] = (await add_variable(client, headers, pid, **spec))["id"]
    files = [(name, text.encode(), "text/plain") for name, text in DOCUMENTS.items()]
    assert (await upload(client, headers, pid, files)).status_code == 201
    documents = {d["filename"]: d["id"] for d in await wait_for_documents(client, headers, pid)}
    for marker, answers in ANSWERS.items():
        for variable, (answer, evidence) in answers.items():
            fake.script(
                variable=variable,
                contains=marker,
                reply={"found": True, "evidence": evidence, "value": answer, "confidence": 0.9},
            )
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, response.json()["id"])
    assert run["status"] == "completed_with_errors", run  # gamma × sample_size fails
    return headers, pid, variables, documents, run["id"]


async def post_gold(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    pid: str,
    data: bytes,
    params: dict[str, Any] | None = None,
    form: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        f"/api/v1/projects/{pid}/evaluation",
        files={"gold": ("gold.csv", data, "text/csv")},
        data=form or {},
        params=params or {},
        headers=headers,
    )


def figures(evaluation: dict[str, Any]) -> dict[str, tuple[int, int, float | None]]:
    return {
        v["variable"]: (v["compared"], v["correct"], v["accuracy"]) for v in evaluation["variables"]
    }


Project = tuple[dict[str, str], str, dict[str, str], dict[str, str], str]


@dataclass(frozen=True)
class World:
    """The database and stored files after `setup_project`, and what it returned."""

    directory: Path
    project: Project


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    directory = tmp_path_factory.mktemp("evaluation-world")

    async def build() -> World:
        with FakeLLM() as fake:
            async with running_app(make_settings(directory, fake)) as (app, client):
                return World(directory, await setup_project(app, client, fake))

    made: list[World] = []
    # A thread of its own: asyncio.run must not meet the event loop of the test being set up.
    builder = threading.Thread(target=lambda: made.append(asyncio.run(build())))
    builder.start()
    builder.join()
    assert made, "building the evaluation project failed (see the output above)"
    return made[0]


@pytest.fixture
def settings(tmp_path: Path, fake_llm: FakeLLM, world: World) -> Settings:
    """The root conftest's settings, on a copy of the world (the app is shut down, so the
    SQLite file is complete without its WAL; the sign-in token stays valid: same key, same
    user)."""
    shutil.copyfile(world.directory / "quarry.db", tmp_path / "quarry.db")
    shutil.copytree(world.directory / "storage", tmp_path / "storage")
    return make_settings(tmp_path, fake_llm)


@pytest.fixture
def project(world: World, app: FastAPI) -> Project:
    return world.project


async def test_a_gold_csv_gives_per_variable_accuracy(
    client: httpx.AsyncClient, project: tuple[dict[str, str], str, dict[str, str], Any, str]
) -> None:
    headers, pid, _, documents, _ = project
    response = await post_gold(client, headers, pid, GOLD_CSV.encode())
    assert response.status_code == 200, response.text
    evaluation = response.json()
    assert evaluation["gold_source"] == "csv" and evaluation["predictions"] == "final"
    assert figures(evaluation) == EXPECTED_ACCURACY
    for variable in evaluation["variables"]:
        sets = EXPECTED_SETS.get(variable["variable"], (None, None, None))
        assert (variable["precision"], variable["recall"], variable["f1"]) == sets
    by_name = {v["variable"]: v for v in evaluation["variables"]}
    assert by_name["sample_size"]["no_answer"] == 1 and by_name["sample_size"]["wrong"] == 1
    assert by_name["mean_age"]["missed"] == 1 and by_name["outcomes"]["spurious"] == 1
    assert by_name["randomised"]["skipped_gold_invalid"] == 1
    assert by_name["randomised"]["gold_not_stated"] == 1
    assert by_name["randomised"]["predicted_not_stated"] == 1

    overall = evaluation["overall"]
    assert (overall["compared"], overall["correct"], overall["accuracy"]) == (23, 17, 0.7391)
    assert evaluation["documents"] == 3
    # Grounding: 19 compared values have a quote verdict; 17 were found, 15 of them correct;
    # the 2 whose quote is not in the document (78, simvastatin) are both wrong.
    assert overall["grounding"] == {
        "grounded_values": 17,
        "grounded_correct": 15,
        "ungrounded_values": 2,
        "ungrounded_correct": 0,
        "grounded_share": 0.8947,
        "grounding_precision": 0.8824,
        "ungrounded_accuracy": 0.0,
    }
    # Calibration: every answer said 0.9; the two whose quote is not in the document were
    # capped at 0.5, and both are wrong. (Synthetic: the fake's confidences are scripted.)
    assert [(b["upper"], b["values"], b["correct"]) for b in overall["calibration"]] == [
        (0.5, 2, 0),
        (0.7, 0, 0),
        (0.9, 17, 15),
        (1.0, 0, 0),
    ]
    # Support: unchecked are RCT and False (no cue words), Morbidity (wrong) and the title
    # (quoted without "adults"); 78, 2019-05 and simvastatin are in their own quotes.
    assert {v["support"]: (v["values"], v["correct"]) for v in overall["support"]} == {
        "supported": (15, 12),
        "unsupported": (0, 0),
        "unchecked": (4, 3),
    }

    # Per document: every pair, with gold, prediction, verdict and reason.
    beta = next(d for d in evaluation["per_document"] if d["filename"] == "beta.txt")
    assert beta["document_id"] == documents["beta.txt"]
    assert (beta["compared"], beta["correct"]) == (8, 5)
    cells = {c["variable"]: c for c in beta["cells"]}
    assert cells["sample_size"] == {
        "variable": "sample_size",
        "gold": 87,
        "gold_raw": "87",
        "predicted": 78,
        "prediction": "value",
        "correct": False,
        "outcome": "wrong",
        "reason": "78 differs from 87 by 9.",
        "grounded": False,
    }
    assert cells["start_date"]["reason"] == "2019-05 is less precise than the gold date 2019-05-12."
    assert cells["drugs"]["reason"] == "Missing rosuvastatin; extra simvastatin."
    gamma = next(d for d in evaluation["per_document"] if d["filename"] == "gamma.txt")
    failed = next(c for c in gamma["cells"] if c["variable"] == "sample_size")
    assert failed["outcome"] == "no_answer" and failed["prediction"] == "no_answer"
    alpha = next(d for d in evaluation["per_document"] if d["filename"] == "alpha.txt")
    skipped = next(c for c in alpha["cells"] if c["variable"] == "randomised")
    assert skipped["correct"] is None and skipped["outcome"] == "gold_invalid"

    warnings = "\n".join(evaluation["warnings"])
    assert "'notes' is not a variable" in warnings
    assert "'delta.pdf' (line 5) is not a document" in warnings
    assert "alpha.txt × randomised: the gold value 'maybe' does not fit" in warnings
    assert "document_id" not in warnings


async def test_the_xlsx_shows_the_same_figures(
    client: httpx.AsyncClient, project: tuple[dict[str, str], str, Any, Any, str]
) -> None:
    headers, pid, _, _, _ = project
    gold = GOLD_CSV.replace("Aspirin,x", 'Aspirin,=HYPERLINK("http://x")').encode()
    response = await post_gold(client, headers, pid, gold, params={"format": "xlsx"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert 'filename="gold-standard-evaluation.xlsx"' in response.headers["content-disposition"]
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert book.sheetnames == ["Summary", "Per document", "Notes"]
    rows = list(book["Summary"].iter_rows(values_only=True))
    header = rows[0]
    summary = {row[0]: dict(zip(header, row, strict=True)) for row in rows[1:]}
    assert {
        name: (row["compared"], row["correct"], row["accuracy"])
        for name, row in summary.items()
        if name != "(all variables)"
    } == EXPECTED_ACCURACY
    assert (summary["outcomes"]["precision"], summary["outcomes"]["f1"]) == (0.6667, 0.8)
    total = summary["(all variables)"]
    assert (total["compared"], total["correct"], total["accuracy"]) == (23, 17, 0.7391)
    assert total["grounding_precision"] == 0.8824

    details = list(book["Per document"].iter_rows(values_only=True))
    columns = details[0]
    pairs = {(r[0], r[2]): dict(zip(columns, r, strict=True)) for r in details[1:]}
    assert len(pairs) == 24
    beta_drugs = pairs[("beta.txt", "drugs")]
    assert beta_drugs["gold"] == "atorvastatin; rosuvastatin"
    assert beta_drugs["predicted"] == "atorvastatin; simvastatin"
    assert beta_drugs["correct"] is False and beta_drugs["outcome"] == "wrong"
    alpha_randomised = pairs[("alpha.txt", "randomised")]
    assert alpha_randomised["gold"] == "maybe" and alpha_randomised["correct"] is None
    # Text that looks like a formula stays text.
    notes = list(book["Notes"].iter_rows(values_only=True))
    assert ("warning", "Column 'notes' is not a variable of this project; it was ignored.") in notes
    for sheet in book.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (sheet.title, cell.coordinate, cell.value)


async def test_reviewed_values_win_and_reviews_can_be_the_gold(
    client: httpx.AsyncClient, project: tuple[dict[str, str], str, dict[str, str], Any, str]
) -> None:
    headers, pid, variables, documents, run_id = project

    async def review(filename: str, variable: str, body: dict[str, Any]) -> None:
        url = f"/api/v1/projects/{pid}/reviews/{documents[filename]}/{variables[variable]}"
        response = await client.put(url, json=body, headers=headers)
        assert response.status_code == 200, response.text

    await review("beta.txt", "sample_size", {"status": "corrected", "value": 87})
    await review("alpha.txt", "title", {"status": "accepted"})
    await review("gamma.txt", "mean_age", {"status": "corrected", "value": "52 years"})
    await review("gamma.txt", "outcomes", {"status": "rejected"})

    # CSV gold against the final values: the corrections now agree with the gold file.
    evaluation = (await post_gold(client, headers, pid, GOLD_CSV.encode())).json()
    accuracy = figures(evaluation)
    assert accuracy["sample_size"] == (3, 2, 0.6667)
    assert accuracy["mean_age"] == (3, 3, 1.0)
    assert accuracy["outcomes"] == (3, 3, 1.0)  # the rejected value is blank, like the gold
    # A corrected value is a person's, not an extraction's: no grounding verdict for it.
    beta = next(d for d in evaluation["per_document"] if d["filename"] == "beta.txt")
    corrected = next(c for c in beta["cells"] if c["variable"] == "sample_size")
    assert corrected["predicted"] == 87 and corrected["grounded"] is None

    # The same file against the run's own extractions ignores the reviews.
    response = await post_gold(client, headers, pid, GOLD_CSV.encode(), form={"run_id": run_id})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == "run"
    assert figures(response.json()) == EXPECTED_ACCURACY

    # Reviews as gold: only the accepted and corrected pairs count, against what was extracted.
    response = await client.get(
        f"/api/v1/projects/{pid}/evaluation", params={"gold": "reviews"}, headers=headers
    )
    assert response.status_code == 200, response.text
    evaluation = response.json()
    assert evaluation["gold_source"] == "reviews" and evaluation["predictions"] == "extracted"
    assert figures(evaluation) == {
        "title": (1, 1, 1.0),
        "sample_size": (1, 0, 0.0),
        "mean_age": (1, 0, 0.0),
    }
    assert evaluation["overall"]["missed"] == 1 and evaluation["overall"]["wrong"] == 1
    assert evaluation["documents"] == 3

    response = await client.get(
        f"/api/v1/projects/{pid}/evaluation",
        params={"gold": "reviews", "run_id": run_id, "format": "xlsx"},
        headers=headers,
    )
    assert response.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    summary = list(book["Summary"].iter_rows(min_row=2, values_only=True))
    assert [(r[0], r[3], r[4]) for r in summary] == [
        ("title", 1, 1),
        ("sample_size", 1, 0),
        ("mean_age", 1, 0),
        ("(all variables)", 3, 1),
    ]


async def test_tolerances_are_query_parameters(
    client: httpx.AsyncClient, project: tuple[dict[str, str], str, Any, Any, str]
) -> None:
    headers, pid, _, _, _ = project
    gold = b"filename,sample_size,mean_age\nbeta.txt,80,47.4\n"
    strict = (await post_gold(client, headers, pid, gold)).json()
    assert figures(strict) == {"sample_size": (1, 0, 0.0), "mean_age": (1, 0, 0.0)}
    loose = (
        await post_gold(
            client,
            headers,
            pid,
            gold,
            params={"absolute_tolerance": 0.5, "relative_tolerance": 0.1},
        )
    ).json()
    assert figures(loose) == {"sample_size": (1, 1, 1.0), "mean_age": (1, 1, 1.0)}
    assert loose["tolerance"] == {"absolute": 0.5, "relative": 0.1}


@pytest.mark.parametrize(
    ("data", "status", "detail"),
    [
        (b"", 400, "The gold CSV is empty."),
        (b"name,title\nalpha.txt,A\n", 400, "needs a 'filename' (or 'document') column"),
        (b"filename,colour\nalpha.txt,red\n", 400, "None of the gold CSV's columns names"),
        (b"filename,title\nomega.pdf,A\n", 400, "None of the 1 filenames in the gold CSV"),
        (b"PK\x03\x04rest-of-a-zip", 400, "save it as CSV"),
        (b'filename,title\nalpha.txt,"unterminated\n' + b"x" * 140_000, 400, "could not be read"),
        (b"filename,title\n" + b"x" * (10 * 1024 * 1024), 413, "larger than 10 MB"),
    ],
)
async def test_bad_gold_files_are_refused_with_a_sentence(
    client: httpx.AsyncClient,
    project: tuple[dict[str, str], str, Any, Any, str],
    data: bytes,
    status: int,
    detail: str,
) -> None:
    headers, pid, _, _, _ = project
    response = await post_gold(client, headers, pid, data)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


async def test_a_windows_1252_gold_file_is_read(
    client: httpx.AsyncClient, project: tuple[dict[str, str], str, Any, Any, str]
) -> None:
    headers, pid, _, _, _ = project
    # Also: semicolons, and a filename with the folder it was kept in on the user's machine.
    gold = "filename;title\nC:\\papers\\gamma.txt;Gamma\u2019s\n".encode("cp1252")
    evaluation = (await post_gold(client, headers, pid, gold)).json()
    assert evaluation["warnings"][0] == "The gold CSV is not UTF-8; it was read as Windows-1252."
    cell = evaluation["per_document"][0]["cells"][0]
    assert cell["gold"] == "Gamma\u2019s" and cell["outcome"] == "wrong"


async def test_bad_requests_are_4xx(
    client: httpx.AsyncClient, project: tuple[dict[str, str], str, Any, Any, str]
) -> None:
    headers, pid, _, _, _ = project
    base = f"/api/v1/projects/{pid}/evaluation"
    other_run = "00000000-0000-4000-8000-000000000000"
    response = await post_gold(client, headers, pid, GOLD_CSV.encode(), form={"run_id": other_run})
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    response = await client.get(base, headers=headers)  # no gold=reviews
    assert response.status_code == 422
    response = await client.get(base, params={"gold": "reviews"}, headers=headers)
    assert (
        response.status_code == 400
        and "no accepted or corrected reviews" in (response.json()["detail"])
    )
    response = await client.post(base, headers=headers, json={"gold": "a,b"})  # not a form
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]
    response = await client.post(base, headers=headers, files={"other": ("g.csv", b"x")})
    assert response.status_code == 422 and "gold" in response.json()["detail"]
    response = await post_gold(client, headers, pid, GOLD_CSV.encode(), form={"run_id": "7"})
    assert response.status_code == 422 and "run_id" in response.json()["detail"]
    response = await post_gold(client, headers, pid, GOLD_CSV.encode(), params={"format": "pdf"})
    assert response.status_code == 422
