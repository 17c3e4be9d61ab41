"""The whole journey in a real browser: sign in → create a project → define three variables
(one a category) → upload a PDF and a DOCX → start a run and watch it reach 100% → open a
cell's evidence → correct a value → download the Excel file and find the correction in it."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openpyxl
import pytest

from tests.support.api import PASSWORD
from tests.support.documents import make_docx, make_pdf
from tests.support.fake_llm import FakeLLM
from tests.web.conftest import EMAIL, LiveServer, add_variable, project_tab, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import FilePayload, Page

pytestmark = pytest.mark.browser

PDF_TEXT = (
    "ALPHA trial of aspirin in older adults.\n"
    "A total of 1,234 patients were randomised between groups.\n"
    "This was a randomised controlled trial (RCT) run in 12 centres."
)
DOCX_BLOCKS: list[str | list[list[str]]] = [
    "BETA cohort study of statins.",
    [["Participants", "87"], ["Mean age", "47"]],
    "Recruitment started in May 2019.",
]
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

# What the model answers, per document marker and variable: (value, evidence, confidence).
ANSWERS: dict[str, dict[str, tuple[Any, str, float]]] = {
    "ALPHA": {
        "title": ("ALPHA trial of aspirin in older adults", "ALPHA trial of aspirin", 0.95),
        "sample_size": ("1,234", "1,234 patients were randomised", 0.9),
        "design": ("rct", "a randomised controlled trial (RCT)", 0.9),
    },
    "BETA": {
        "title": ("BETA cohort study of statins", "BETA cohort study of statins.", 0.3),
        "sample_size": (87, "Participants | 87", 0.8),
        "design": ("Cohort", "BETA cohort study", 0.85),
    },
}


def script_answers(fake: FakeLLM) -> None:
    for marker, answers in ANSWERS.items():
        for variable, (value, evidence, confidence) in answers.items():
            fake.script(
                variable=variable,
                contains=marker,
                reply={
                    "found": True,
                    "evidence": evidence,
                    "value": value,
                    "confidence": confidence,
                },
            )


def test_full_journey_in_the_browser(page: Page, live_server: LiveServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    script_answers(live_server.fake)

    # Sign in: the app starts at the sign-in page when there is no session.
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in to Quarry")).to_be_visible()
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    screenshot(page, "01-sign-in")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Projects", level=1)).to_be_visible()
    expect(page.locator("#account")).to_contain_text(EMAIL)

    # Create a project.
    page.get_by_label("Name", exact=True).fill("Statin trials")
    screenshot(page, "02-projects")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", name="Statin trials", level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="Codebook")).to_be_visible()

    # The codebook: three variables, one a category with its allowed values.
    add_variable(page, label="Title", description="The trial's title", type_label="Text")
    add_variable(
        page, label="Sample size", description="Participants randomised", type_label="Integer"
    )
    add_variable(
        page,
        label="Design",
        description="Study design",
        type_label="Category (one of)",
        allowed=["RCT", "Cohort", "Case-control"],
    )
    cards = page.locator("li.variable")
    expect(cards).to_have_count(3)
    expect(cards.locator("code.slug")).to_have_text(["title", "sample_size", "design"])
    expect(cards.nth(2).locator(".chips li")).to_have_text(["RCT", "Cohort", "Case-control"])
    design = cards.nth(2)
    design.get_by_role("button", name="Show prompt").click()
    expect(design.locator("pre.prompt").first).to_contain_text("Case-control")
    screenshot(page, "03-codebook")

    # Upload a PDF and a DOCX at once; each shows its progress and then "Ready".
    project_tab(page, "Documents").click()
    files: list[FilePayload] = [
        {"name": "alpha.pdf", "mimeType": "application/pdf", "buffer": make_pdf([PDF_TEXT])},
        {"name": "beta.docx", "mimeType": DOCX_TYPE, "buffer": make_docx(DOCX_BLOCKS)},
    ]
    page.get_by_label("Choose files to upload").set_input_files(files)
    uploads = page.locator("li.upload")
    expect(uploads).to_have_count(2)
    for index in range(2):
        expect(uploads.nth(index)).to_have_attribute("data-status", "ready", timeout=30_000)
        expect(uploads.nth(index).locator("progress")).to_have_attribute("value", "1")
    expect(page.locator("tr[data-status=ready]")).to_have_count(2)
    screenshot(page, "04-documents")
    page.get_by_role("link", name="View the text of beta.docx").click()
    expect(page.locator("pre.doctext")).to_contain_text("Participants | 87")
    screenshot(page, "05-document-text")

    # Start a run after seeing its size; the progress bar is fed live by server-sent events.
    project_tab(page, "Runs").click()
    expect(page.locator(".estimate")).to_contain_text("6 = 2 × 3")
    screenshot(page, "06-run-estimate")
    live_server.fake.latency = 0.8  # slow enough to see the bar move (2 calls at a time)
    try:
        page.get_by_role("button", name="Start run").click()
        expect(page.get_by_role("heading", name=re.compile("^Run of"))).to_be_visible()
        page.wait_for_function(
            "() => { const p = document.querySelector('#run-progress');"
            " return p && p.value > 0 && p.value < 1; }",
            timeout=30_000,
        )
        screenshot(page, "07-run-in-progress")
        expect(page.locator(".progress-text")).to_contain_text("100%", timeout=60_000)
    finally:
        live_server.fake.latency = 0
    expect(page.locator(".run-status")).to_contain_text("Completed")
    expect(page.locator('dd[data-count="succeeded"]')).to_have_text("6")
    expect(page.locator('dd[data-count="failed"]')).to_have_text("0")
    expect(page.locator("table.log")).to_contain_text("Run created")
    screenshot(page, "08-run-completed")

    # Results: the grid, with the low-confidence answer marked.
    project_tab(page, "Results").click()
    grid = page.get_by_role("grid")
    cell = grid.locator('td[data-document="alpha.pdf"][data-variable="sample_size"]')
    expect(cell).to_contain_text("1234")
    expect(grid.locator('td[data-document="alpha.pdf"][data-variable="design"]')).to_contain_text(
        "RCT"
    )
    expect(grid.locator('td[data-document="beta.docx"][data-variable="title"]')).to_have_attribute(
        "data-flags", re.compile(r"\blow\b")
    )
    screenshot(page, "09-results")

    # A cell's evidence: the quote highlighted in the document text, confidence and model.
    cell.click()
    panel = page.locator("aside.review-panel")
    expect(panel).to_have_attribute("data-variable", "sample_size")
    expect(panel.locator("svg.page-boxes rect.evidence-box")).not_to_have_count(0)
    panel.get_by_role("button", name="Text", exact=True).click()
    expect(panel.locator("mark.evidence")).to_have_text("1,234 patients were randomised")
    expect(panel).to_contain_text("0.9")
    expect(panel).to_contain_text("fake-model")
    expect(panel).to_contain_text("Found on page 1")
    screenshot(page, "10-evidence")

    # Correct it with the keyboard: c opens a number field.
    cell.focus()
    page.keyboard.press("c")
    value = panel.get_by_label("Value", exact=True)
    expect(value).to_be_focused()
    expect(value).to_have_attribute("type", "number")
    value.fill("1250")
    panel.get_by_role("button", name="Save correction").click()
    expect(cell).to_contain_text("1250")
    expect(cell).to_have_attribute("data-flags", re.compile(r"\bcorrected\b"))
    expect(cell).to_be_focused()
    screenshot(page, "11-corrected")

    # Export: the Excel file holds the corrected value; the CSV too.
    project_tab(page, "Export").click()
    # One workbook holds both layouts: one button for it.
    expect(page.locator('button[data-format="xlsx"]')).to_have_count(1)
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download Excel (both layouts)").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".xlsx")
    xlsx = tmp_path / download.suggested_filename
    download.save_as(xlsx)
    book = openpyxl.load_workbook(xlsx)
    sheet = book["Results"]
    header = [c.value for c in sheet[1]]
    rows = {
        row[1]: dict(zip(header, row, strict=True))
        for row in sheet.iter_rows(min_row=2, values_only=True)
    }
    assert rows["alpha.pdf"]["sample_size"] == 1250
    assert rows["alpha.pdf"]["design"] == "RCT"
    assert rows["beta.docx"]["sample_size"] == 87
    expect(page.get_by_text(f"Downloaded {download.suggested_filename}.").first).to_be_visible()
    screenshot(page, "12-export")

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download CSV (long)").click()
    long_csv = tmp_path / "long.csv"
    download_info.value.save_as(long_csv)
    long_rows = list(csv.DictReader(io.StringIO(long_csv.read_text(encoding="utf-8-sig"))))
    alpha_size = next(
        r for r in long_rows if r["filename"] == "alpha.pdf" and r["variable"] == "sample_size"
    )
    assert alpha_size["value"] == "1250"

    # The wide CSV with a flag column per variable, on request.
    page.get_by_label("Wide CSV and JSON: add a").check()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download CSV (wide)").click()
    wide_csv = tmp_path / "wide.csv"
    download_info.value.save_as(wide_csv)
    wide = list(csv.DictReader(io.StringIO(wide_csv.read_text(encoding="utf-8-sig"))))
    assert {"sample_size", "sample_size__flag", "design__flag"} <= set(wide[0])

    # Toasts belong to the page that showed them.
    expect(page.locator(".toast")).not_to_have_count(0)
    page.wait_for_timeout(1600)  # older than a toast kept for the next page
    project_tab(page, "Codebook").click()
    expect(page.locator(".toast")).to_have_count(0)
