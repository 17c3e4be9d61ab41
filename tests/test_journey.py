"""The full API journey a user takes: token → project → codebook of every type → upload a PDF,
a DOCX and a TXT → run → wait → export CSV, XLSX and JSON, reading the values back out."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import openpyxl
from fastapi import FastAPI

from tests.support.api import (
    add_variable,
    create_project,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.documents import make_docx, make_pdf
from tests.support.fake_llm import FakeLLM

CODEBOOK: list[dict[str, Any]] = [
    {"name": "title", "description": "The trial's title", "type": "text"},
    {
        "name": "sample_size",
        "description": "Participants randomised",
        "type": "integer",
        "examples": [{"value": 120, "snippet": "120 patients were randomised"}],
    },
    {
        "name": "mean_age",
        "description": "Mean age of participants",
        "type": "number",
        "unit": "years",
    },
    {"name": "randomised", "description": "Was allocation randomised?", "type": "boolean"},
    {"name": "start_date", "description": "When recruitment started", "type": "date"},
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

PDF_TEXT = (
    "ALPHA trial of aspirin in older adults.\n"
    "A total of 1,234 patients were randomised between groups.\n"
    "Mean age was 61.5 years. Recruitment began in March 2020.\n"
    "Outcomes: mortality and quality of life."
)
DOCX_BLOCKS: list[str | list[list[str]]] = [
    "BETA cohort study of statins.",
    [["Participants", "87"], ["Mean age", "47"]],
    "Recruitment started on 12 May 2019. Participants received atorvastatin; rosuvastatin.",
]
TXT_TEXT = "GAMMA: a case-control study.\nNo age was reported.\nStart 2018.\n"

# What the "model" answers, per document marker and variable: raw, as a model might write it.
ANSWERS: dict[str, dict[str, Any]] = {
    "ALPHA": {
        "title": (
            "ALPHA trial of aspirin in older adults",
            "ALPHA trial of aspirin in older adults.",
        ),
        "sample_size": ("1,234", "1,234 patients were randomised"),
        "mean_age": (61.5, "Mean age was 61.5 years"),
        "randomised": ("yes", "patients were randomised"),
        "start_date": ("March 2020", "Recruitment began in March 2020"),
        "design": ("rct", "patients were randomised"),
        "outcomes": (["Mortality", "quality of life"], "Outcomes: mortality and quality of life"),
        "drugs": (["aspirin"], "ALPHA trial of aspirin"),
    },
    "BETA": {
        "title": ("BETA cohort study of statins", "BETA cohort study of statins."),
        "sample_size": (87, "Participants | 87"),
        "mean_age": ("47", "Mean age | 47"),
        "randomised": (False, "BETA cohort study"),
        "start_date": ("12 May 2019", "Recruitment started on 12 May 2019"),
        "design": ("Cohort", "BETA cohort study"),
        "outcomes": ([], "BETA cohort study"),
        "drugs": ("atorvastatin; rosuvastatin", "atorvastatin; rosuvastatin"),
    },
    "GAMMA": {
        "title": ("GAMMA", "GAMMA: a case-control study."),
        "mean_age": (None, None),
        "start_date": (2018, "Start 2018."),
        "design": ("Case-control", "a case-control study"),
    },
}

# The wide CSV cells the user should see for each document, formatted per type.
EXPECTED_CSV = {
    "alpha.pdf": {
        "title": "ALPHA trial of aspirin in older adults",
        "sample_size": "1234",
        "mean_age": "61.5",
        "randomised": "true",
        "start_date": "2020-03",
        "design": "RCT",
        "outcomes": "Mortality; Quality of life",
        "drugs": "aspirin",
    },
    "beta.docx": {
        "title": "BETA cohort study of statins",
        "sample_size": "87",
        "mean_age": "47",
        "randomised": "false",
        "start_date": "2019-05-12",
        "design": "Cohort",
        "outcomes": "",
        "drugs": "atorvastatin; rosuvastatin",
    },
    "gamma.txt": {
        "title": "GAMMA",
        "sample_size": "",
        "mean_age": "",
        "randomised": "",
        "start_date": "2018",
        "design": "Case-control",
        "outcomes": "",
        "drugs": "",
    },
}


def script_answers(fake: FakeLLM) -> None:
    for marker, answers in ANSWERS.items():
        for variable, (value, evidence) in answers.items():
            found = value is not None
            fake.script(
                variable=variable,
                contains=marker,
                reply={"found": found, "evidence": evidence, "value": value, "confidence": 0.9},
            )


async def test_full_journey_all_types(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    headers = await sign_up(app, client, "researcher@example.org")
    project = await create_project(client, headers, "Statin & aspirin review")
    pid = project["id"]
    for spec in CODEBOOK:
        await add_variable(client, headers, pid, **spec)

    response = await upload(
        client,
        headers,
        pid,
        [
            ("alpha.pdf", make_pdf([PDF_TEXT]), "application/pdf"),
            ("beta.docx", make_docx(DOCX_BLOCKS), "application/octet-stream"),
            ("gamma.txt", TXT_TEXT.encode(), "text/plain"),
        ],
    )
    assert response.status_code == 201, response.text
    documents = await wait_for_documents(client, headers, pid)
    assert {d["filename"]: d["status"] for d in documents} == {
        "alpha.pdf": "ready",
        "beta.docx": "ready",
        "gamma.txt": "ready",
    }
    beta = next(d for d in documents if d["filename"] == "beta.docx")
    text = (
        await client.get(f"/api/v1/projects/{pid}/documents/{beta['id']}/text", headers=headers)
    ).json()
    assert "Participants | 87" in text["pages"][0]["text"]

    script_answers(fake_llm)
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, response.json()["id"])
    assert run["status"] == "completed", run
    assert run["total"] == 24 and run["done"] == 24 and run["progress"] == 1.0
    assert run["counts"]["succeeded"] + run["counts"]["not_found"] == 24
    assert run["tokens_in"] > 0 and run["tokens_out"] > 0
    assert fake_llm.calls() == 24  # one call per pair, every answer valid first time

    # Evidence is located in the document text, across the PDF's line breaks.
    extractions = (
        await client.get(
            f"/api/v1/projects/{pid}/extractions", params={"limit": 100}, headers=headers
        )
    ).json()["items"]
    sample = next(
        e for e in extractions if e["variable_name"] == "sample_size" and e["value"] == 1234
    )
    assert sample["grounded"] is True and sample["page"] == 1
    assert sample["tokens_in"] > 0

    # Wide CSV: exactly the answered values, formatted per type.
    response = await client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "csv"}, headers=headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [r["filename"] for r in rows] == ["alpha.pdf", "beta.docx", "gamma.txt"]
    for row in rows:
        expected = EXPECTED_CSV[row["filename"]]
        assert {k: row[k] for k in expected} == expected, row["filename"]
    assert list(rows[0].keys()) == ["document_id", "filename", *[v["name"] for v in CODEBOOK]]

    # Long CSV: one row per (document, variable), with status and evidence.
    response = await client.get(
        f"/api/v1/projects/{pid}/export",
        params={"format": "csv", "layout": "long"},
        headers=headers,
    )
    long_rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert len(long_rows) == 24
    gamma_age = next(
        r for r in long_rows if r["filename"] == "gamma.txt" and r["variable"] == "mean_age"
    )
    assert gamma_age["status"] == "not_found" and gamma_age["value"] == ""

    # XLSX: three sheets, typed cells.
    response = await client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "xlsx"}, headers=headers
    )
    assert response.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert book.sheetnames[:3] == ["Results", "Details", "Codebook"]
    sheet = book["Results"]
    header = [c.value for c in sheet[1]]
    alpha = next(r for r in sheet.iter_rows(min_row=2, values_only=True) if r[1] == "alpha.pdf")
    cells = dict(zip(header, alpha, strict=True))
    assert cells["sample_size"] == 1234 and cells["mean_age"] == 61.5
    assert cells["randomised"] is True and cells["design"] == "RCT"
    beta_row = next(r for r in sheet.iter_rows(min_row=2, values_only=True) if r[1] == "beta.docx")
    assert dict(zip(header, beta_row, strict=True))["start_date"].date().isoformat() == "2019-05-12"
    codebook = [r[0] for r in book["Codebook"].iter_rows(min_row=2, values_only=True)]
    assert codebook == [v["name"] for v in CODEBOOK]

    # JSON keeps the JSON types.
    response = await client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "json"}, headers=headers
    )
    data = json.loads(response.content)
    alpha_json = next(r for r in data if r["filename"] == "alpha.pdf")
    assert (
        alpha_json["outcomes"] == ["Mortality", "Quality of life"]
        and alpha_json["sample_size"] == 1234
    )
