"""Scans through the whole product: uploaded, OCRed in the parser child, extracted by a run
(the fake LLM answers from the text it is sent), evidence boxes on the page image; hostile
images refused or failed with a reason while the server stays ready."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

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
from tests.support.documents import make_docx, make_pdf
from tests.support.fake_llm import FakeLLM, FakeRequest

# CI installs Tesseract (.ci/run); elsewhere these tests need it installed.
pytestmark = pytest.mark.skipif(
    shutil.which("tesseract") is None and not os.environ.get("CI"),
    reason="Tesseract is not installed (apt: tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd)",
)

Headers = dict[str, str]

REPORT = [
    "Trial report. In total 240 participants were randomised to aspirin or placebo.",
    "Methods. The primary outcome was stroke within two years of follow-up.",
    "Results. Mean age at baseline was 64.5 years in both arms.",
]
LETTER = ["Referral letter. The patient is 57 years old and reports chest pain since May."]

#: What the fake model looks for in the text it is sent, per variable: (pattern, value group).
ANSWERS = {
    "randomised": (r"In total (\d+) participants were randomised[^.]*\.", int),
    "outcome": (r"The primary outcome was (\w+)[^.]*\.", str),
    "mean_age": (r"Mean age at baseline was ([\d.]+) years[^.]*\.", float),
    "patient_age": (r"The patient is (\d+) years old", int),
}
VARIABLES = [
    {"name": "randomised", "description": "Participants randomised", "type": "integer"},
    {"name": "outcome", "description": "Primary outcome", "type": "text"},
    {"name": "mean_age", "description": "Mean age at baseline, years", "type": "number"},
    {"name": "patient_age", "description": "The patient's age in years", "type": "integer"},
]


def answer_from_text(request: FakeRequest) -> dict[str, Any]:
    """Answer as a model would from the document text it was sent (whitespace as sent)."""
    pattern, convert = ANSWERS[str(request.variable)]
    document = " ".join(request.text.split())
    found = re.search(pattern, document)
    if found is None:
        return {"found": False, "evidence": None, "value": None, "confidence": 0.9}
    return {
        "found": True,
        "evidence": found.group(0),
        "value": convert(found.group(1)),
        "confidence": 0.9,
    }


async def _run(
    client: httpx.AsyncClient, headers: Headers, pid: str
) -> dict[str, dict[str, dict[str, Any]]]:
    response = await client.post(f"/api/v1/projects/{pid}/runs", json={}, headers=headers)
    assert response.status_code == 202, response.text
    run = await wait_for_run(client, headers, pid, response.json()["id"], timeout=300)
    assert run["status"] == "completed", run
    by_document: dict[str, dict[str, dict[str, Any]]] = {}
    for extraction in await list_extractions(client, headers, pid, run_id=run["id"]):
        by_document.setdefault(extraction["document_id"], {})[extraction["variable_name"]] = (
            extraction
        )
    return by_document


async def _image(
    client: httpx.AsyncClient, headers: Headers, pid: str, doc_id: str, page: int, **params: Any
) -> httpx.Response:
    return await client.get(
        f"/api/v1/projects/{pid}/documents/{doc_id}/pages/{page}/image",
        params=params,
        headers=headers,
    )


async def _pages(
    client: httpx.AsyncClient, headers: Headers, pid: str, doc_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/projects/{pid}/documents/{doc_id}/text", headers=headers)
    assert response.status_code == 200
    return response.json()["pages"]  # type: ignore[no-any-return]


def _ocr_text(image: Image.Image) -> str:
    """What Tesseract reads in `image` (one block of text)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    done = subprocess.run(
        ["tesseract", "-", "-", "--psm", "6"],
        input=buffer.getvalue(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return done.stdout.decode()


async def test_scans_yield_the_values_of_their_born_digital_originals_with_boxes_on_the_quote(
    app: FastAPI, client: httpx.AsyncClient, fake_llm: FakeLLM
) -> None:
    fake_llm.default_reply = answer_from_text
    headers = await sign_up(app, client, "scans@example.org")
    pid = (await create_project(client, headers))["id"]
    for spec in VARIABLES:
        await add_variable(client, headers, pid, **spec)
    dpi = 200
    report_pages = scans.render_pages(make_pdf(REPORT), dpi)
    [letter_page] = scans.render_pages(make_pdf(LETTER), dpi)
    files = {
        "report.pdf": (make_pdf(REPORT), "application/pdf"),
        "report-scan.pdf": (scans.image_only_pdf(report_pages, dpi), "application/pdf"),
        "report-fax.tiff": (scans.tiff(report_pages, dpi), "image/tiff"),
        "letter.pdf": (make_pdf(LETTER), "application/pdf"),
        "letter-photo.png": (scans.png(scans.photographed(letter_page)), "image/png"),
    }
    response = await upload(
        client, headers, pid, [(name, data, ctype) for name, (data, ctype) in files.items()]
    )
    assert response.status_code == 201, response.text
    documents = {d["filename"]: d for d in await wait_for_documents(client, headers, pid, 300)}
    assert {name: d["status"] for name, d in documents.items()} == dict.fromkeys(files, "ready")
    assert documents["report-fax.tiff"]["content_type"] == "image/tiff"
    assert documents["report-fax.tiff"]["page_count"] == 3

    results = await _run(client, headers, pid)

    def values(name: str) -> dict[str, Any]:
        return {v: e["value"] for v, e in results[documents[name]["id"]].items()}

    assert values("report.pdf") == {
        "randomised": 240,
        "outcome": "stroke",
        "mean_age": 64.5,
        "patient_age": None,
    }
    assert values("report-scan.pdf") == values("report.pdf")
    assert values("report-fax.tiff") == values("report.pdf")
    assert values("letter.pdf")["patient_age"] == 57
    assert values("letter-photo.png") == values("letter.pdf")

    # Every value's quote was found, on the right page, with boxes on that page.
    for name in files:
        for variable, extraction in results[documents[name]["id"]].items():
            if extraction["value"] is None:
                continue
            assert extraction["grounded"] is True, (name, variable, extraction)
            assert extraction["boxes"], (name, variable)
            assert {box["page"] for box in extraction["boxes"]} == {extraction["page"]}
            scanned = name not in ("report.pdf", "letter.pdf")
            assert (extraction["ocr_confidence"] is not None) is scanned
            assert extraction["ocr_low_confidence"] is False

    # The scanned PDF's boxes (in points, like the original's) sit where the original's do.
    born = results[documents["report.pdf"]["id"]]
    scan = results[documents["report-scan.pdf"]["id"]]
    fax = results[documents["report-fax.tiff"]["id"]]
    for variable in ("randomised", "outcome", "mean_age"):
        original = born[variable]["boxes"][0]
        for copy, scale in ((scan, 1.0), (fax, 72 / dpi)):  # the TIFF's boxes are in pixels
            box = copy[variable]["boxes"][0]
            centre_x = (box["x0"] + box["x1"]) / 2 * scale
            centre_y = (box["y0"] + box["y1"]) / 2 * scale
            assert original["x0"] < centre_x < original["x1"], (variable, original, box)
            assert original["y0"] - 2 < centre_y < original["y1"] + 2, (variable, original, box)

    # The photographed PNG: crop its page image at the box and read it again.
    photo_id = documents["letter-photo.png"]["id"]
    [page] = await _pages(client, headers, pid, photo_id)
    assert page["text_source"] == "ocr" and page["ocr_confidence"] > 70
    response = await _image(client, headers, pid, photo_id, 1, width=1000)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.width == 1000
    scale = image.width / page["width"]
    extraction = results[photo_id]["patient_age"]
    [box] = extraction["boxes"]
    crop = image.crop(
        (
            int(box["x0"] * scale) - 4,
            int(box["y0"] * scale) - 4,
            int(box["x1"] * scale) + 4,
            int(box["y1"] * scale) + 4,
        )
    )
    assert "57 years old" in " ".join(
        _ocr_text(crop.resize((crop.width * 2, crop.height * 2))).split()
    )


async def test_page_images_are_the_owners_only_and_cached(
    app: FastAPI, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    headers = await sign_up(app, client, "owner@example.org")
    pid = (await create_project(client, headers))["id"]
    files = [
        ("report.pdf", make_pdf(REPORT), "application/pdf"),
        ("notes.docx", make_docx(["Some notes."]), "application/octet-stream"),
    ]
    assert (await upload(client, headers, pid, files)).status_code == 201
    documents = {d["filename"]: d for d in await wait_for_documents(client, headers, pid, 120)}
    pdf_id, docx_id = documents["report.pdf"]["id"], documents["notes.docx"]["id"]

    first = await _image(client, headers, pid, pdf_id, 2, width=400)
    assert first.status_code == 200, first.text
    assert Image.open(io.BytesIO(first.content)).size[0] == 400
    cached = list((tmp_path / "storage" / "page-images").rglob("2-400.png"))
    assert len(cached) == 1
    again = await _image(client, headers, pid, pdf_id, 2, width=400)
    assert again.content == first.content
    webp = await _image(client, headers, pid, pdf_id, 1, width=300, format="webp")
    assert webp.status_code == 200 and webp.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(webp.content)).format == "WEBP"

    for page, params in ((4, {}), (0, {}), (1, {"width": 5}), (1, {"format": "gif"})):
        response = await _image(client, headers, pid, pdf_id, page, **params)
        assert response.status_code in (404, 422), (page, params, response.text)
        assert response.json()["detail"]
    docx = await _image(client, headers, pid, docx_id, 1)
    assert docx.status_code == 404 and "PDF and image" in docx.json()["detail"]

    stranger = await sign_up(app, client, "stranger@example.org")
    other = await _image(client, stranger, pid, pdf_id, 1)
    assert other.status_code == 404

    # Deleting the document removes its cached page images with its file.
    response = await client.delete(f"/api/v1/projects/{pid}/documents/{pdf_id}", headers=headers)
    assert response.status_code == 204
    assert not list((tmp_path / "storage" / "page-images").rglob("*.png"))


async def test_hostile_images_are_refused_or_fail_with_a_reason_and_the_server_stays_ready(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = await sign_up(app, client, "hostile@example.org")
    pid = (await create_project(client, headers))["id"]

    async def ready() -> None:
        response = await client.get("/health/ready")
        assert response.status_code == 200, response.text

    refused = {
        # 60,000 × 60,000 pixels in a few bytes: refused from its header, never decoded.
        "bomb.png": (scans.png_declaring(60_000, 60_000), 413, "more pixels than Quarry reads"),
        "big.png": (scans.png_declaring(12_000, 9_000), 413, "12,000 × 9,000 pixels"),
        "empty.png": (b"", 400, "empty"),
        "header-only.jpg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", 415, "damaged or incomplete"),
        "noise.tiff": (b"II*\x00" + bytes(range(256)) * 8, 415, "damaged or incomplete"),
    }
    for name, (data, status, says) in refused.items():
        response = await upload(client, headers, pid, [(name, data, "image/png")])
        assert response.status_code == status, (name, response.text)
        assert says in response.json()["detail"], (name, response.json())
        await ready()

    [page] = scans.render_pages(make_pdf(LETTER), 150)
    whole = scans.png(page)
    failing = {
        # A valid header over pixel data cut short.
        "truncated.png": whole[: len(whole) // 3],
        # A header promising pixels the compressed data does not hold.
        "hollow.png": scans.png_declaring(3_000, 3_000),
        "pages.tiff": scans.many_page_tiff(1_001),
    }
    response = await upload(
        client, headers, pid, [(name, data, "image/png") for name, data in failing.items()]
    )
    assert response.status_code == 201, response.text
    await ready()
    documents = {d["filename"]: d for d in await wait_for_documents(client, headers, pid, 300)}
    await ready()
    for name in failing:
        document = documents[name]
        assert document["status"] == "failed", document
        assert document["error"] and " " in document["error"], document
    assert "more than 1,000 pages" in documents["pages.tiff"]["error"]
    assert "damaged or incomplete" in documents["truncated.png"]["error"]

    # Pages of a document that failed have no image.
    response = await _image(client, headers, pid, documents["truncated.png"]["id"], 1)
    assert response.status_code == 404
