"""Dual review in real browsers: the owner assigns four documents to two reviewers, each
reviews in a browser context of their own without seeing the other's verdicts, their one
disagreement appears as a conflict, the owner adjudicates it, and the Excel export holds the
adjudicated value and an Agreement sheet whose kappa is the one worked out here."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openpyxl
import pytest

from tests.support.api import PASSWORD
from tests.support.members import add_user_live
from tests.web.conftest import LiveServer, arrange_project, project_tab, screenshot, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = pytest.mark.browser

MARKERS = ["ALPHA", "BRAVO", "CHARLIE", "DELTA"]
MODEL = [True, True, False, False]  # what the model says: randomised?
REVIEWER_A = [True, True, False, False]  # accepts every value
REVIEWER_B = [True, False, False, False]  # corrects BRAVO to "No"


def kappa(a: list[Any], b: list[Any]) -> float:
    """Cohen's kappa from its definition, (p_o - p_e) / (1 - p_e)."""
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    p_e = sum((a.count(k) / n) * (b.count(k) / n) for k in set(a) | set(b))
    return (p_o - p_e) / (1 - p_e)


@contextmanager
def other_browser(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    """A second person's browser: a context of its own (own session storage), failing the
    test on script errors like the `page` fixture's."""
    context = browser.new_context(
        base_url=live_server.base_url, viewport={"width": 1440, "height": 900}
    )
    context.set_default_timeout(15_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on(
        "console",
        lambda m: (
            problems.append(f"CSP: {m.text}") if "Content Security Policy" in m.text else None
        ),
    )
    try:
        yield tab
    finally:
        context.close()
    assert not problems, "\n".join(problems)


def cell(page: Page, marker: str) -> Locator:
    grid = page.get_by_role("grid")
    return grid.locator(f'td[data-document="{marker}.txt"][data-variable="randomised"]')


def review_all(page: Page, verdicts: list[bool], other_has_reviewed: bool) -> None:
    """Review every document's cell from the panel: accept the model's value, or correct it."""
    from playwright.sync_api import expect

    panel = page.locator("aside.review-panel")
    for marker, model, verdict in zip(MARKERS, MODEL, verdicts, strict=True):
        target = cell(page, marker)
        # Whatever the other reviewer did, nothing of it shows here yet.
        expect(target).not_to_have_attribute("data-flags", re.compile(r"accepted|corrected"))
        target.click()
        expect(panel).to_have_attribute("data-document", f"{marker}.txt")
        expect(panel).to_contain_text("Not reviewed yet")
        expect(panel).to_contain_text("stays hidden until both of you have reviewed")
        if other_has_reviewed:
            panel.locator("details.history summary").click()
            expect(panel.locator("details.history")).to_contain_text("Not reviewed yet.")
        if verdict == model:
            panel.get_by_role("button", name="Accept").click()
            expect(target).to_have_attribute("data-flags", re.compile(r"\baccepted\b"))
        else:
            panel.get_by_role("button", name="Correct…").click()
            panel.get_by_label("Value", exact=True).select_option(
                "false" if not verdict else "true"
            )
            panel.get_by_role("button", name="Save correction").click()
            expect(target).to_have_attribute("data-flags", re.compile(r"\bcorrected\b"))
        expect(panel).to_contain_text("Your verdict")


def test_two_reviewers_a_conflict_and_its_adjudication(
    page: Page, browser: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    for marker, value in zip(MARKERS, MODEL, strict=True):
        live_server.fake.script(
            variable="randomised",
            contains=marker,
            reply={"found": True, "evidence": f"{marker} was randomised", "value": value},
        )
    files = [
        (f"{m}.txt", f"{m}: {m} was randomised or not.\n".encode(), "text/plain") for m in MARKERS
    ]
    arranged = arrange_project(
        live_server,
        "Dual review",
        [{"name": "randomised", "description": "Were patients randomised?", "type": "boolean"}],
        files,
        run=True,
    )
    assert arranged["run"]["status"] == "completed", arranged["run"]
    pid = arranged["project"]["id"]
    suffix = uuid.uuid4().hex[:8]
    first, second = f"rita-{suffix}@example.org", f"rolf-{suffix}@example.org"
    add_user_live(live_server, first)
    add_user_live(live_server, second)

    # The owner invites both to the project as reviewers on the Members tab, switches the
    # project to dual review and assigns every document to both.
    sign_in(page)
    page.goto(f"/#/projects/{pid}/codebook")
    project_tab(page, "Members").click()
    members = page.locator(".member-form")
    for email in (first, second):
        members.get_by_label("Email").fill(email)
        members.get_by_label("Role").select_option("reviewer")
        members.get_by_role("button", name="Add member").click()
        expect(page.get_by_label(f"Role of {email}")).to_have_value("reviewer")
    project_tab(page, "Review").click()
    page.get_by_label("Review mode").select_option("dual")
    page.get_by_role("button", name="Save review settings").click()
    expect(page.get_by_label("Review mode")).to_have_value("dual")
    for marker in MARKERS:
        page.get_by_label(f"Select {marker}.txt").check()
    page.get_by_label("Reviewer A").select_option(label=first)
    page.get_by_label("Reviewer B").select_option(label=second)
    page.get_by_role("button", name="Assign selected documents").click()
    assignments = page.locator("table.assignments")
    for marker in MARKERS:
        row = assignments.locator(f'tr[data-document="{marker}.txt"]')
        expect(row).to_contain_text(first)
        expect(row).to_contain_text(second)
    screenshot(page, "40-dual-review-assignments")

    # Reviewer A, then reviewer B, each in a browser of their own.
    with other_browser(browser, live_server) as rita:
        sign_in(rita, first, PASSWORD)
        rita.goto(f"/#/projects/{pid}/results")
        review_all(rita, REVIEWER_A, other_has_reviewed=False)
    with other_browser(browser, live_server) as rolf:
        sign_in(rolf, second, PASSWORD)
        rolf.goto(f"/#/projects/{pid}/results")
        review_all(rolf, REVIEWER_B, other_has_reviewed=True)
        # Now both have reviewed BRAVO: the disagreement shows, to him too.
        rolf.get_by_role("button", name="Refresh").click()
        expect(cell(rolf, "BRAVO")).to_have_attribute("data-flags", re.compile(r"\bconflict\b"))
        expect(cell(rolf, "ALPHA")).not_to_have_attribute("data-flags", re.compile("conflict"))
        screenshot(rolf, "41-dual-review-conflict-for-a-reviewer")

    # The owner finds the conflict, both values side by side, and takes reviewer B's.
    page.goto(f"/#/projects/{pid}/codebook")
    project_tab(page, "Review").click()
    conflict = page.locator('table.conflicts tr[data-document="BRAVO.txt"]')
    expect(conflict).to_contain_text("Yes")
    expect(conflict).to_contain_text("No")
    expect(conflict).to_contain_text(first)
    expect(conflict).to_contain_text(second)
    expect(page.locator("table.conflicts tbody tr")).to_have_count(1)
    agreement = page.locator('table.agreement tr[data-variable="randomised"]')
    expected = kappa(REVIEWER_A, REVIEWER_B)
    expect(agreement.locator('td[data-comparison="reviewers"]')).to_contain_text(
        f"κ {round(expected, 4)}"
    )
    screenshot(page, "42-dual-review-conflicts")
    conflict.get_by_role("button", name="Use B's").click()
    expect(page.get_by_text("No conflicts.")).to_be_visible()
    page.get_by_label("Status").select_option("resolved")
    expect(page.locator('table.conflicts tr[data-document="BRAVO.txt"]')).to_contain_text(
        "Resolved"
    )

    # The Excel export: the adjudicated value, and the Agreement sheet.
    project_tab(page, "Export").click()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download Excel (both layouts)").click()
    path = tmp_path / "results.xlsx"
    download_info.value.save_as(path)
    book = openpyxl.load_workbook(path)
    results = book["Results"]
    header = [c.value for c in results[1]]
    bravo = next(r for r in results.iter_rows(min_row=2, values_only=True) if r[1] == "BRAVO.txt")
    assert bravo[header.index("randomised")] is False  # the model said True; B's verdict won
    sheet = book["Agreement"]
    rows = list(sheet.iter_rows(values_only=True))
    columns = rows[0]
    found = {(r[0], r[3]): dict(zip(columns, r, strict=True)) for r in rows[1:]}
    row = found[("randomised", "Reviewer A vs reviewer B")]
    assert row["compared"] == 4
    assert row["kappa"] == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx(0.5)  # p_o = 0.75, p_e = 0.5


def test_a_blind_reviewer_sees_hidden_cells_until_they_review_them(
    page: Page, live_server: LiveServer
) -> None:
    """Blind dual review in the paged grid: the reviewer's cells read "…" and hide the model's
    value in the panel (no Accept); once corrected, the cell shows the correction and the
    panel the model's value."""
    from playwright.sync_api import expect

    for marker, value in zip(MARKERS[:2], MODEL[:2], strict=True):
        live_server.fake.script(
            variable="randomised",
            contains=marker,
            reply={"found": True, "evidence": f"{marker} was randomised", "value": value},
        )
    files = [
        (f"{m}.txt", f"{m}: {m} was randomised or not.\n".encode(), "text/plain")
        for m in MARKERS[:2]
    ]
    arranged = arrange_project(
        live_server,
        "Blind review",
        [{"name": "randomised", "description": "Were patients randomised?", "type": "boolean"}],
        files,
        run=True,
    )
    pid = arranged["project"]["id"]
    suffix = uuid.uuid4().hex[:8]
    first, second = f"rhea-{suffix}@example.org", f"ruth-{suffix}@example.org"
    with live_server.api() as api:
        for email in (first, second):
            add_user_live(live_server, email)
            response = api.post(
                f"/projects/{pid}/members", json={"email": email, "role": "reviewer"}
            )
            assert response.status_code == 201, response.text
        members = api.get(f"/projects/{pid}/members").json()["items"]
        ids = {m["email"]: m["user_id"] for m in members}
        response = api.patch(f"/projects/{pid}", json={"review_mode": "dual", "review_blind": True})
        assert response.status_code == 200, response.text
        response = api.post(
            f"/projects/{pid}/assignments",
            json={
                "document_ids": [d["id"] for d in arranged["documents"]],
                "reviewer_a": ids[first],
                "reviewer_b": ids[second],
            },
        )
        assert response.status_code == 200, response.text

    sign_in(page, first, PASSWORD)
    page.goto(f"/#/projects/{pid}/results")
    alpha = cell(page, "ALPHA")
    expect(alpha).to_have_attribute("data-state", "hidden")
    expect(alpha).to_contain_text("…")
    expect(page.locator('.chip[data-facet="review"][data-value="unreviewed"]')).to_have_text(
        "Unreviewed (2)"
    )
    alpha.click()
    panel = page.locator("aside.review-panel")
    expect(panel).to_contain_text("Hidden until you have reviewed this cell (blind review)")
    expect(panel.get_by_role("button", name="Accept")).to_have_count(0)
    panel.get_by_role("button", name="Correct…").click()
    panel.get_by_label("Value", exact=True).select_option("false")
    panel.get_by_role("button", name="Save correction").click()
    expect(alpha).to_have_attribute("data-state", "value")
    expect(alpha).to_contain_text("No")
    expect(panel).to_contain_text("Your verdict")
    expect(panel.locator(".panel-value")).to_have_text("Yes")  # the model's value, seen now
    expect(cell(page, "BRAVO")).to_have_attribute("data-state", "hidden")
