"""The records-team corpus of issue 14: three clients, two or three documents each, one
document of each client a scan (an image-only PDF or a PNG, read by OCR).

The client list spells one name wrong (Jonathon for the documents' Jonathan) and has a
near-duplicate of another (María García, born a week later, beside Maria Garcia). One
document gives a date of birth that differs from the list (Smith's report, a scan), and one
case's two documents give different accident dates (Chen's, the report a scan).

The fake model answers from the document text it is sent, as a model would: each document's
rule (keyed by its reference marker, "Ref SM-2") looks for its cue in the prompt and quotes
what it finds there, value as written ("10 May 1980"). For a scan that text is Tesseract's:
had OCR text not reached the prompt, the marker and the cues would not be found and the
documents would have no client, no date and no finding.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support import scans
from tests.support.api import (
    add_variable,
    create_project,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.documents import make_pdf
from tests.support.fake_llm import FakeLLM, FakeRequest

CLIENTS_CSV = (
    "client_id,name,date_of_birth,policy_number\n"
    "C001,Jonathon Smith,1980-05-01,PN-1001\n"
    "C002,Maria Garcia,1975-11-23,PN-1002\n"
    "C003,Robert Chen,1990-02-14,PN-1003\n"
    "C004,María García,1975-11-30,PN-1004\n"
).encode()

_DATE = r"(\d{1,2} [A-Z][a-z]+ \d{4})"
_NAME = r"((?:[A-Z][a-z]+|[A-Z]\.) [A-Z][a-z]+)"

#: filename → (text, {variable: the pattern a reader finds its quote by, the value its group});
#: a missing variable is "not stated". The filename's extension says how it is uploaded:
#: .txt as text, .pdf as an image-only scan of the text's page, .png as a scanned page image.
DOCUMENTS: dict[str, tuple[str, dict[str, str]]] = {
    "smith_referral.txt": (
        "Ref SM-1. Referral. Client: Jonathan Smith. Date of birth: 1 May 1980. "
        "Accident date: 10 March 2024.",
        {
            "client_name": rf"Client: {_NAME}",
            "date_of_birth": rf"Date of birth: {_DATE}",
            "accident_date": rf"Accident date: {_DATE}",
        },
    ),
    "smith_report.pdf": (
        "Ref SM-2. Medical report for Jonathan Smith, born 10 May 1980. "
        "The accident happened on 10 March 2024.",
        {
            "client_name": rf"Medical report for {_NAME}",
            "date_of_birth": rf"born {_DATE}",
            "accident_date": rf"The accident happened on {_DATE}",
        },
    ),
    "chen_referral.txt": (
        "Ref CH-1. Referral. Client: Robert Chen. Date of birth: 14 February 1990. "
        "Accident date: 2 June 2024.",
        {
            "client_name": rf"Client: {_NAME}",
            "date_of_birth": rf"Date of birth: {_DATE}",
            "accident_date": rf"Accident date: {_DATE}",
        },
    ),
    "chen_report.png": (
        "Ref CH-2. Report on R. Chen. The accident occurred on 9 June 2024.",
        {
            "client_name": rf"Report on {_NAME}",
            "accident_date": rf"The accident occurred on {_DATE}",
        },
    ),
    "chen_letter.txt": (
        "Ref CH-3. Letter to Robert Chen about his claim, date of birth 14 February 1990.",
        {
            "client_name": rf"Letter to {_NAME}",
            "date_of_birth": rf"date of birth {_DATE}",
        },
    ),
    "garcia_referral.txt": (
        "Ref GA-1. Referral. Client: Maria Garcia. Date of birth: 23 November 1975. "
        "Accident date: 5 January 2024.",
        {
            "client_name": rf"Client: {_NAME}",
            "date_of_birth": rf"Date of birth: {_DATE}",
            "accident_date": rf"Accident date: {_DATE}",
        },
    ),
    "garcia_letter.pdf": (
        "Ref GA-2. Letter regarding Maria Garcia. Accident date: 5 January 2024.",
        {
            "client_name": rf"Letter regarding {_NAME}",
            "accident_date": rf"Accident date: {_DATE}",
        },
    ),
}
#: The scans: one document of each client.
SCANNED = frozenset(name for name in DOCUMENTS if not name.endswith(".txt"))
_DPI = 200

CLIENT_MATCH = {
    "list": "clients",
    "column": "name",
    "key_column": "client_id",
    "method": "name",
}
VARIABLES: list[dict[str, Any]] = [
    {
        "name": "client_name",
        "description": "The client's full name",
        "type": "text",
        "match": CLIENT_MATCH,
    },
    {"name": "date_of_birth", "description": "The client's date of birth", "type": "date"},
    {"name": "accident_date", "description": "The date of the accident", "type": "date"},
]


@functools.cache
def corpus_files(scanned: bool = True) -> tuple[tuple[str, bytes, str], ...]:
    """The corpus as uploaded: (filename, bytes, content type), the scans rendered once;
    with `scanned` false every document is uploaded as text (named .txt)."""
    files = []
    for name, (text, _) in DOCUMENTS.items():
        if name.endswith(".txt") or not scanned:
            files.append((f"{name.rsplit('.', 1)[0]}.txt", text.encode(), "text/plain"))
            continue
        pages = scans.render_pages(make_pdf([text]), _DPI)
        if name.endswith(".pdf"):
            files.append((name, scans.image_only_pdf(pages, _DPI), "application/pdf"))
        else:
            files.append((name, scans.png(pages[0], _DPI), "image/png"))
    return tuple(files)


def _reader(pattern: str) -> Callable[[FakeRequest], dict[str, Any]]:
    """A model's answer from the text it is sent: the quote where `pattern` is found in it
    (whitespace as one space), the value as written there."""

    def answer(request: FakeRequest) -> dict[str, Any]:
        found = re.search(pattern, " ".join(request.text.split()))
        if found is None:
            return {"found": False, "evidence": None, "value": None, "confidence": 0.9}
        quote, value = found.group(0), found.group(1)
        return {"found": True, "evidence": quote, "value": value, "confidence": 0.9}

    return answer


def script_answers(fake_llm: FakeLLM) -> None:
    """Each document's answers, by its reference marker ("Ref SM-1") in the text sent."""
    for text, patterns in DOCUMENTS.values():
        marker = text.split(".")[0]
        for variable in ("client_name", "date_of_birth", "accident_date"):
            reply: Any = (
                _reader(patterns[variable])
                if variable in patterns
                else {"found": False, "evidence": None, "value": None, "confidence": 0.9}
            )
            fake_llm.script(variable=variable, contains=marker, reply=reply)


async def upload_list(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    pid: str,
    data: bytes,
    name: str = "clients",
    filename: str = "clients.csv",
) -> httpx.Response:
    return await client.post(
        f"/api/v1/projects/{pid}/reference-lists",
        files={"file": (filename, data, "text/csv")},
        data={"name": name},
        headers=headers,
    )


async def corpus_project(
    app: FastAPI,
    client: httpx.AsyncClient,
    fake_llm: FakeLLM,
    email: str = "records@example.org",
    variables: list[dict[str, Any]] | None = None,
    scanned: bool = True,
) -> tuple[dict[str, str], str, dict[str, str]]:
    """The corpus uploaded (its scans OCRed), the client list uploaded, the variables added
    and one run completed; returns the headers, the project id and the document ids by
    filename. `scanned=False` uploads the scans' text instead (for tests of something else:
    OCR costs seconds)."""
    if scanned and shutil.which("tesseract") is None and not os.environ.get("CI"):
        pytest.skip("Tesseract is not installed (apt: tesseract-ocr tesseract-ocr-eng)")
    headers = await sign_up(app, client, email)
    pid = (await create_project(client, headers, "Claims"))["id"]
    response = await upload_list(client, headers, pid, CLIENTS_CSV)
    assert response.status_code == 201, response.text
    for spec in variables or VARIABLES:
        await add_variable(client, headers, pid, **spec)
    files = corpus_files(scanned)
    assert (await upload(client, headers, pid, list(files))).status_code == 201
    # A hang guard: OCR of the three scanned pages takes a few seconds.
    documents = await wait_for_documents(client, headers, pid, timeout=300)
    statuses = {d["filename"]: d["status"] for d in documents}
    assert statuses == {name: "ready" for name, _, _ in files}
    script_answers(fake_llm)
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, response.json()["id"])
    assert run["status"] == "completed", run
    return headers, pid, {d["filename"]: d["id"] for d in documents}
