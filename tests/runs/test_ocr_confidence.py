"""A value quoted from OCR text that Tesseract read with low confidence (issue 13, item 6):
its confidence is lowered and it is flagged `ocr_low_confidence` in the API and the exports."""

from __future__ import annotations

import csv
import io
import os
import shutil
import uuid

import httpx
import openpyxl
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import undefer

from quarry.db import session_scope
from quarry.exports.xlsx_writer import FLAG_FILLS
from quarry.models import DocumentPage
from tests.documents.test_scans_api import VARIABLES, answer_from_text
from tests.support import scans
from tests.support.api import (
    add_variable,
    create_project,
    list_extractions,
    sign_up,
    upload,
    wait_for_documents,
    wait_for_run,
)
from tests.support.documents import make_pdf
from tests.support.fake_llm import FakeLLM

pytestmark = pytest.mark.skipif(
    shutil.which("tesseract") is None and not os.environ.get("CI"),
    reason="Tesseract is not installed (apt: tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd)",
)

LETTER = "Referral letter. The patient is 57 years old and reports chest pain since May."


async def test_a_quote_on_poorly_read_ocr_text_is_flagged_and_less_confident(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = answer_from_text
    headers = await sign_up(app, client, "ocr-confidence@example.org")
    pid = (await create_project(client, headers))["id"]
    await add_variable(client, headers, pid, **VARIABLES[3])  # patient_age
    [page] = scans.render_pages(make_pdf([LETTER]), 200)
    faded = page.copy()
    faded.putpixel((0, 0), 200)  # other bytes, the same text
    files = [
        ("clean.png", scans.png(page), "image/png"),
        ("faded.png", scans.png(faded), "image/png"),
    ]
    assert (await upload(client, headers, pid, files)).status_code == 201
    documents = {d["filename"]: d for d in await wait_for_documents(client, headers, pid, 120)}
    assert {d["status"] for d in documents.values()} == {"ready"}

    # Tesseract reads these renders cleanly; the faded copy's words are stored as a poor scan
    # would leave them (the quote's words at 40 of 100), which is what the run goes by.
    async with session_scope(app.state.sessionmaker) as session:
        stored = (
            await session.execute(
                select(DocumentPage)
                .where(DocumentPage.document_id == uuid.UUID(documents["faded.png"]["id"]))
                .options(undefer(DocumentPage.words))
            )
        ).scalar_one()
        stored.words = [[*row[:6], 40] for row in stored.words]

    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, response.json()["id"], timeout=120)
    assert run["status"] == "completed", run
    rows = {
        e["document_id"]: e for e in await list_extractions(client, headers, pid, run_id=run["id"])
    }
    clean, poor = rows[documents["clean.png"]["id"]], rows[documents["faded.png"]["id"]]
    assert clean["value"] == poor["value"] == 57
    assert clean["ocr_confidence"] > 0.9 and clean["ocr_low_confidence"] is False
    assert poor["ocr_confidence"] == 0.4 and poor["ocr_low_confidence"] is True
    assert poor["confidence"] < clean["confidence"]

    response = await client.get(
        f"/api/v1/projects/{pid}/export",
        params={"format": "csv", "layout": "long"},
        headers=headers,
    )
    records = {
        r["filename"]: r for r in csv.DictReader(io.StringIO(response.text.lstrip("\ufeff")))
    }
    assert "ocr_low_confidence" in records["faded.png"]["flags"].split("; ")
    assert "ocr_low_confidence" not in records["clean.png"]["flags"]

    response = await client.get(
        f"/api/v1/projects/{pid}/export", params={"format": "xlsx"}, headers=headers
    )
    workbook = openpyxl.load_workbook(io.BytesIO(response.content))
    results = list(workbook["Results"].iter_rows())
    names = [c.value for c in results[0]]
    by_file = {row[names.index("filename")].value: row for row in results[1:]}
    fill = next(f for flag, f, _ in FLAG_FILLS if flag == "ocr_low_confidence")
    faded_cell = by_file["faded.png"][names.index("patient_age")]
    assert faded_cell.fill.fgColor.rgb.endswith(fill.fgColor.rgb[-6:])
    assert by_file["clean.png"][names.index("patient_age")].fill.fgColor.rgb in (None, "00000000")
