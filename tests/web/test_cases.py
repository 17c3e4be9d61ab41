"""The Cases view (issue 14): a project's documents grouped by their matched client, each case
with its reference row's name, its documents, its combined values and a badge counting its open
findings; the findings under it show every value's quote and page, a quote's document opens its
evidence in the review panel, and resolving the finding there removes the badge."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.web.conftest import SCREENSHOTS, LiveServer, _wait, project_tab, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

CLIENTS = b"client_id,name\nC002,Maria Garcia\nC003,Robert Chen\n"
#: filename → (text, client as written, accident date, its quote)
DOCS = {
    "chen_a.txt": (
        "CASE-CHEN-A: Referral for Robert Chen. Accident date: 2 June 2024.",
        "Robert Chen",
        "2024-06-02",
        "Accident date: 2 June 2024",
    ),
    "chen_b.txt": (
        "CASE-CHEN-B: Report on R. Chen. The accident occurred on 9 June 2024.",
        "R. Chen",
        "2024-06-09",
        "The accident occurred on 9 June 2024",
    ),
    "garcia.txt": (
        "CASE-GARCIA: Letter to Maria Garcia. Accident date: 5 January 2024.",
        "Maria Garcia",
        "2024-01-05",
        "Accident date: 5 January 2024",
    ),
}
VARIABLES: list[dict[str, Any]] = [
    {
        "name": "client_name",
        "label": "Client",
        "description": "The client",
        "type": "text",
        "match": {"list": "clients", "column": "name", "key_column": "client_id", "method": "name"},
    },
    {
        "name": "accident_date",
        "label": "Accident date",
        "description": "When the accident happened",
        "type": "date",
        "checks": {"must_agree_within_case": True},
    },
]


def _arrange(server: LiveServer) -> str:
    for text, name, date, quote in DOCS.values():
        marker = text.split(":")[0]
        server.fake.script(
            variable="client_name",
            contains=marker,
            reply={"found": True, "evidence": name, "value": name, "confidence": 0.9},
        )
        server.fake.script(
            variable="accident_date",
            contains=marker,
            reply={"found": True, "evidence": quote, "value": date, "confidence": 0.9},
        )
    with server.api() as api:
        pid = api.post("/projects", json={"name": "Claims by client"}).json()["id"]
        response = api.post(
            f"/projects/{pid}/reference-lists", files={"file": ("clients.csv", CLIENTS, "text/csv")}
        )
        assert response.status_code == 201, response.text
        for spec in VARIABLES:
            assert api.post(f"/projects/{pid}/variables", json=spec).status_code == 201
        files = [("files", (n, t.encode(), "text/plain")) for n, (t, *_) in DOCS.items()]
        assert api.post(f"/projects/{pid}/documents", files=files).status_code == 201
        _wait(
            lambda: api.get(f"/projects/{pid}/documents").json()["items"],
            lambda items: all(d["status"] == "ready" for d in items),
        )
        run_id = api.post(f"/projects/{pid}/runs", json={}).json()["id"]
        run = _wait(
            lambda: api.get(f"/projects/{pid}/runs/{run_id}").json(),
            lambda r: r["status"] not in ("preparing", "queued", "running"),
        )
        assert run["status"] == "completed", run
    return str(pid)


def test_a_case_shows_its_findings_with_both_quotes_opens_the_evidence_and_is_resolved(
    page: Page, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    pid = _arrange(live_server)
    sign_in(page)
    page.goto(f"/#/projects/{pid}/codebook")
    project_tab(page, "Cases").click()
    expect(page.get_by_role("heading", name="Cases", level=2)).to_be_visible()

    # No case key yet: the user chooses the client, matched to the list.
    expect(page.locator(".case-list")).to_contain_text("This project has no case key")
    page.get_by_label("Group documents by").select_option("client_name")
    page.get_by_role("button", name="Save", exact=True).click()

    chen = page.get_by_role("region", name=re.compile(r"^Case C003"))
    garcia = page.get_by_role("region", name=re.compile(r"^Case C002"))
    expect(chen.get_by_role("heading", level=3)).to_contain_text("Case C003 · Robert Chen")
    expect(chen.locator(".case-badge")).to_have_text("! 1 open finding")
    expect(garcia.get_by_role("heading", level=3)).to_have_text("Case C002 · Maria Garcia")
    expect(garcia.locator(".case-badge")).to_have_count(0)
    summary = page.locator(".muted", has_text="Grouped by")
    expect(summary).to_contain_text("2 cases, 1 open finding")

    # The case's documents, and each variable combined across them (rule "first").
    expect(chen.locator(".case-documents li")).to_have_text(["chen_a.txt", "chen_b.txt"])
    values = chen.get_by_role("table", name="Values of case C003, combined across its documents")
    accident = values.get_by_role("row", name=re.compile(r"^Accident date"))
    expect(accident.get_by_role("cell").nth(0)).to_contain_text("2024-06-02")
    expect(accident.get_by_role("cell").nth(0)).to_contain_text("disagrees")
    expect(accident.get_by_role("cell").nth(1)).to_have_text("chen_a.txt")

    # The finding under the case: both values, each with its document, page and quote.
    expect(chen.get_by_role("heading", name="Findings of case C003", level=4)).to_be_visible()
    finding = chen.locator("ul.case-findings > li")
    expect(finding).to_have_count(1)
    expect(finding).to_contain_text("the case's documents disagree")
    quotes = finding.locator(".finding-sources q")
    expect(quotes).to_have_text(
        ["Accident date: 2 June 2024", "The accident occurred on 9 June 2024"]
    )
    expect(finding.locator(".finding-values > li").nth(1)).to_contain_text("chen_b.txt, page 1")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "cases.png"), full_page=True)

    # From the keyboard, the report's quote opens its cell's evidence in the review panel,
    # beside the case's documents only.
    link = finding.get_by_role("link", name="chen_b.txt, page 1: open the evidence")
    link.focus()
    page.keyboard.press("Enter")
    panel = page.locator("aside.review-panel")
    expect(panel).to_be_visible()
    expect(panel).to_have_attribute("data-document", "chen_b.txt")
    expect(panel).to_have_attribute("data-variable", "accident_date")
    expect(panel.locator("blockquote.quote")).to_have_text("The accident occurred on 9 June 2024")
    expect(panel.get_by_role("heading", level=3)).to_be_focused()
    grid = page.get_by_role("grid")
    # The names shown (a long one would be cut in the middle; the full name is in the row
    # header for screen readers).
    expect(grid.locator("tbody th .doc-name-text")).to_have_text(["chen_a.txt", "chen_b.txt"])
    expect(page.locator("p.notice")).to_contain_text("The documents of case C003")

    # Back to the cases: the report is wrong; resolving removes the badge, the finding stays.
    page.get_by_role("link", name="Back to the cases").click()
    chen = page.get_by_role("region", name=re.compile(r"^Case C003"))
    expect(chen.locator(".case-badge")).to_have_text("! 1 open finding")
    chen.get_by_role("button", name="2024-06-02 is right").click()
    expect(chen.locator(".case-badge")).to_have_count(0)
    expect(chen.get_by_role("heading", level=3)).to_be_focused()
    finding = chen.locator("ul.case-findings > li")
    expect(finding).to_have_attribute("data-status", "resolved")
    expect(finding).to_contain_text("Resolved: 2024-06-02 is right")
    expect(finding.get_by_role("button")).to_have_count(0)
    summary = page.locator(".muted", has_text="Grouped by")
    expect(summary).to_contain_text("2 cases, 0 open findings")

    # A document of the case opens its row of the results (focused, no panel).
    chen.locator(".case-documents").get_by_role("link", name="chen_a.txt").click()
    active = page.get_by_role("grid").locator("td[tabindex='0']")
    expect(active).to_be_focused()
    expect(active).to_have_attribute("data-document", "chen_a.txt")
    expect(page.locator("aside.review-panel")).to_be_hidden()
