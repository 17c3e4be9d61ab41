"""Reviewing results with the keyboard alone: the cell states are told apart, arrow keys move,
Enter opens the evidence panel, Escape closes it, a / r / c accept, reject and correct with an
input that fits the type (select for booleans and categories, a list editor for lists)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.documents import make_pdf
from tests.web.conftest import LiveServer, arrange_project, at_both_widths, screenshot, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.browser

CODEBOOK: list[dict[str, Any]] = [
    {
        "name": "design",
        "label": "Design",
        "description": "Study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort"],
    },
    {"name": "randomised", "label": "Randomised", "description": "Randomised?", "type": "boolean"},
    {"name": "drugs", "label": "Drugs", "description": "Drugs given", "type": "list"},
]
DOC_A = "DOC-A: a randomised trial of aspirin and heparin in 40 adults.\n"
DOC_B = "DOC-B: an observational cohort of 300 adults.\n"


def script(server: LiveServer) -> None:
    fake = server.fake
    answers = {
        ("DOC-A", "design"): ("RCT", "a randomised trial", 0.9),
        ("DOC-A", "randomised"): (True, "a randomised trial", 0.95),
        ("DOC-A", "drugs"): (["aspirin", "heparin"], "aspirin and heparin", 0.9),
        # A quote that is not in the document: the value is flagged as ungrounded.
        ("DOC-B", "design"): ("Cohort", "a prospective cohort study design", 0.9),
    }
    for (marker, variable), (value, evidence, confidence) in answers.items():
        fake.script(
            variable=variable,
            contains=marker,
            reply={"found": True, "evidence": evidence, "value": value, "confidence": confidence},
        )
    fake.script(variable="randomised", contains="DOC-B", reply={"found": False, "value": None})
    # Never valid JSON, even when re-asked: the extraction fails.
    fake.script(variable="drugs", contains="DOC-B", reply="I cannot answer in JSON, sorry")


@at_both_widths
def test_review_with_the_keyboard(page: Page, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    script(live_server)
    arranged = arrange_project(
        live_server,
        "Keyboard review",
        CODEBOOK,
        [("a.txt", DOC_A.encode(), "text/plain"), ("b.txt", DOC_B.encode(), "text/plain")],
        run=True,
    )
    assert arranged["run"]["status"] == "completed_with_errors", arranged["run"]
    pid = arranged["project"]["id"]

    sign_in(page)
    page.goto(f"/#/projects/{pid}/results")
    grid = page.get_by_role("grid")

    def cell(document: str, variable: str) -> Locator:
        return grid.locator(f'td[data-document="{document}"][data-variable="{variable}"]')

    # Every kind of cell looks different, and says so in words too.
    expect(cell("a.txt", "design")).to_have_attribute("data-state", "value")
    expect(cell("b.txt", "randomised")).to_have_attribute("data-state", "not-found")
    expect(cell("b.txt", "randomised")).to_contain_text("not stated")
    expect(cell("b.txt", "drugs")).to_have_attribute("data-state", "failed")
    expect(cell("b.txt", "design")).to_have_attribute("data-flags", re.compile(r"\bungrounded\b"))
    expect(cell("b.txt", "design")).to_contain_text("quote not found in the document")
    screenshot(page, "13-review-states")

    # Tab enters the grid once (roving tabindex), at the first cell.
    page.get_by_role("button", name="Refresh").focus()
    page.keyboard.press("Tab")  # the legend's summary
    page.keyboard.press("Tab")
    expect(cell("a.txt", "design")).to_be_focused()
    expect(grid.locator('td[tabindex="0"]')).to_have_count(1)

    # → then a: accept.
    page.keyboard.press("ArrowRight")
    expect(cell("a.txt", "randomised")).to_be_focused()
    page.keyboard.press("a")
    expect(cell("a.txt", "randomised")).to_have_attribute("data-flags", re.compile(r"\baccepted"))

    # ↓ then Enter: the panel opens on that cell with focus on its heading; Escape closes it.
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    panel = page.locator("aside.review-panel")
    expect(panel).to_have_attribute("data-document", "b.txt")
    expect(panel).to_have_attribute("data-variable", "randomised")
    expect(page.locator("#panel-title")).to_be_focused()
    expect(panel).to_contain_text("Not stated in the document")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(cell("b.txt", "randomised")).to_be_focused()

    # The open panel follows the focused cell; an ungrounded quote is called out.
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    expect(panel).to_have_attribute("data-variable", "design")
    expect(panel).to_contain_text("This quote was not found in the document's text")
    page.keyboard.press("Escape")

    # r: reject the ungrounded value.
    expect(cell("b.txt", "design")).to_be_focused()
    page.keyboard.press("r")
    expect(cell("b.txt", "design")).to_have_attribute("data-flags", re.compile(r"\brejected\b"))

    # c on a boolean: a yes/no select.
    page.keyboard.press("ArrowRight")
    page.keyboard.press("c")
    value = panel.get_by_label("Value", exact=True)
    expect(value).to_be_focused()
    expect(value.locator("option")).to_have_text(["Choose…", "Yes", "No"])
    value.select_option("false")
    value.press("Enter")
    panel.get_by_role("button", name="Save correction").click()
    expect(cell("b.txt", "randomised")).to_contain_text("No")
    expect(cell("b.txt", "randomised")).to_be_focused()

    # a on a failed cell: there is nothing to accept, and the API says so.
    page.keyboard.press("ArrowRight")
    expect(cell("b.txt", "drugs")).to_be_focused()
    page.keyboard.press("a")
    expect(
        page.get_by_role("alert").filter(has_text="no extracted value to accept")
    ).to_be_visible()

    # c on a failed list cell: a list editor.
    page.keyboard.press("c")
    first_item = panel.get_by_label("Item 1", exact=True)
    expect(first_item).to_be_focused()
    first_item.fill("atorvastatin")
    first_item.press("Enter")  # Enter adds the next item
    panel.get_by_label("Item 2", exact=True).fill("placebo")
    screenshot(page, "14-review-correct-list")
    panel.get_by_role("button", name="Save correction").click()
    expect(cell("b.txt", "drugs")).to_contain_text("atorvastatin; placebo")

    # c on a category: a select of the allowed values.
    page.keyboard.press("Home")
    page.keyboard.press("ArrowUp")
    expect(cell("a.txt", "design")).to_be_focused()
    page.keyboard.press("c")
    category = panel.get_by_label("Value", exact=True)
    expect(category.locator("option")).to_have_text(["Choose…", "RCT", "Cohort"])
    expect(category).to_have_value("RCT")
    page.keyboard.press("Escape")  # closes the correction form, not the panel
    expect(panel).to_be_visible()
    screenshot(page, "15-review-keyboard")

    # a from inside the panel: the panel is drawn again and keeps the focus, so the keys go on
    # working (issue 15: focus fell to <body>); Escape then closes it.
    page.keyboard.press("a")
    expect(cell("a.txt", "design")).to_have_attribute("data-flags", re.compile(r"\baccepted"))
    expect(page.locator("#panel-title")).to_be_focused()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(cell("a.txt", "design")).to_be_focused()

    # A failed cell offers no Accept: there is no value to accept, only to correct.
    page.keyboard.press("End")
    expect(cell("a.txt", "drugs")).to_be_focused()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(panel).to_have_attribute("data-variable", "drugs")
    expect(panel.get_by_role("button", name=re.compile("^Accept"))).to_have_count(0)
    expect(panel.get_by_role("button", name=re.compile("^Correct"))).to_have_count(1)
    page.keyboard.press("Escape")

    # What the API now holds.
    with live_server.api() as api:
        variables = {v["name"]: v["id"] for v in arranged["variables"]}
        documents = {d["filename"]: d["id"] for d in arranged["documents"]}

        def review(document: str, variable: str) -> dict[str, Any]:
            response = api.get(
                f"/projects/{pid}/reviews/{documents[document]}/{variables[variable]}"
            )
            assert response.status_code == 200, response.text
            history: list[dict[str, Any]] = response.json()
            return history[0]

        assert review("a.txt", "randomised")["status"] == "accepted"
        assert review("b.txt", "design")["status"] == "rejected"
        assert review("a.txt", "design")["status"] == "accepted"
        assert review("b.txt", "randomised")["value"] is False
        assert review("b.txt", "drugs")["value"] == ["atorvastatin", "placebo"]


def test_evidence_is_shown_at_its_page(page: Page, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    pages = [
        "MULTI: page one is about methods only.",
        "Results. Each patient received 75 mg aspirin daily for a year.",
    ]
    live_server.fake.script(
        variable="dose",
        contains="MULTI",
        reply={"found": True, "value": 75, "evidence": "75 mg aspirin daily", "confidence": 0.4},
    )
    arranged = arrange_project(
        live_server,
        "Two pages",
        [
            {
                "name": "dose",
                "label": "Dose",
                "description": "Daily dose",
                "type": "number",
                "unit": "mg",
            }
        ],
        [("multi.pdf", make_pdf(pages), "application/pdf")],
        run=True,
    )
    pid = arranged["project"]["id"]
    sign_in(page)
    page.goto(f"/#/projects/{pid}/results")
    dose = page.get_by_role("grid").locator('td[data-variable="dose"]')
    expect(dose).to_have_attribute("data-flags", re.compile(r"\blow\b"))
    dose.click()
    panel = page.locator("aside.review-panel")
    # A PDF opens on its page image, the quote outlined; the text view shows it marked.
    expect(panel.get_by_label("Page", exact=True)).to_have_value("2")
    expect(panel.locator("svg.page-boxes rect.evidence-box")).to_have_count(1)
    panel.get_by_role("button", name="Text", exact=True).click()
    expect(panel.get_by_label("Page", exact=True)).to_have_value("2")
    expect(panel.locator("mark.evidence")).to_have_text("75 mg aspirin daily")
    expect(panel).to_contain_text("Found on page 2")
    # Paging back shows page 1 without the mark.
    panel.get_by_role("button", name="Previous page").click()
    expect(panel.locator("pre.doctext")).to_contain_text("page one is about methods")
    expect(panel.locator("mark.evidence")).to_have_count(0)
