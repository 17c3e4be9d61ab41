"""A team in the browser: an administrator adds a user on the Users page (with a one-time
link), the project's owner adds them as a reviewer on the Members tab, the reviewer — in a
browser of their own — sets their password from the link, sees the project with review
controls and without edit or delete controls, reviews a value; then the administrator
deactivates them and the reviewer is signed out on their next click."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.web.conftest import LiveServer, arrange_project, project_tab, screenshot, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

NEW_PASSWORD = "the reviewer's own passphrase"


@pytest.fixture
def second_browser(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    """Another person's browser: a context of its own (no shared sessionStorage), failing the
    test on script errors like `page`."""
    context = browser.new_context(
        base_url=live_server.base_url, viewport={"width": 1440, "height": 900}
    )
    context.set_default_timeout(15_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            problems.append(f"CSP: {message.text}")

    tab.on("console", on_console)
    try:
        yield tab
    finally:
        context.close()
    assert not problems, "\n".join(problems)


def test_an_admin_adds_a_reviewer_who_reviews_until_deactivated(
    page: Page, second_browser: Page, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    live_server.fake.script(
        variable="title",
        contains="TEAM-DOC",
        reply={"found": True, "evidence": "TEAM-DOC", "value": "Team study", "confidence": 0.9},
    )
    arranged = arrange_project(
        live_server,
        "Team project",
        [{"name": "title", "label": "Title", "description": "The title", "type": "text"}],
        [("team.txt", b"TEAM-DOC: a study done by a team.\n", "text/plain")],
        run=True,
    )
    pid = arranged["project"]["id"]
    reviewer_email = f"rae-{uuid.uuid4().hex[:8]}@example.org"

    # -- the administrator adds the user from the Users page ------------------------------------
    sign_in(page)  # the live server's administrator, who also owns the project
    page.get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", name="Users", level=1)).to_be_visible()
    form = page.locator("form", has=page.get_by_role("heading", name="Add a user"))
    form.get_by_label("Email").fill(reviewer_email)
    expect(form.get_by_label(re.compile("one-time link"))).to_be_checked()
    form.get_by_role("button", name="Add user").click()
    link_field = page.get_by_label(f"Link for {reviewer_email}")
    expect(link_field).to_be_visible()
    link = link_field.input_value()
    assert re.fullmatch(
        rf"{re.escape(live_server.base_url)}/#/set-password\?token=[\w-]{{40,}}", link
    )
    row = page.locator("tr[data-user]", has_text=reviewer_email)
    expect(row).to_contain_text("waiting for a password")
    screenshot(page, "60-users-page-with-link")
    page.get_by_role("button", name="Done").click()

    # -- the owner adds them to the project as a reviewer ---------------------------------------
    page.goto(f"/#/projects/{pid}/members")
    expect(page.get_by_role("heading", name="Members", level=2)).to_be_visible()
    members = page.locator(".member-form")
    members.get_by_label("Email").fill(reviewer_email)
    members.get_by_label("Role").select_option("reviewer")
    members.get_by_role("button", name="Add member").click()
    expect(page.get_by_label(f"Role of {reviewer_email}")).to_have_value("reviewer")
    expect(page.locator(".project-activity")).to_contain_text("added a member")
    screenshot(page, "61-members-tab")

    # -- the reviewer, in their own browser, sets a password from the link ---------------------
    rae = second_browser
    rae.goto(link)
    expect(rae.get_by_role("heading", name="Set your password")).to_be_visible()
    rae.get_by_label("New password (at least 8 characters)").fill(NEW_PASSWORD)
    rae.get_by_label("New password again").fill(NEW_PASSWORD)
    rae.get_by_role("button", name="Set password and sign in").click()
    expect(rae.get_by_role("heading", name="Projects", level=1)).to_be_visible()
    assert "token" not in rae.evaluate("location.href")  # the used link left the address bar
    expect(rae.locator(".account-email")).to_have_text(reviewer_email)
    expect(rae.get_by_role("link", name="Users")).to_have_count(0)  # not an administrator

    project_row = rae.locator(f'tr[data-project-id="{pid}"]')
    expect(project_row).to_contain_text("reviewer")
    expect(project_row.get_by_role("button")).to_have_count(0)  # no rename, no delete

    # The project: everything readable, nothing editable.
    project_row.get_by_role("link", name="Team project").click()
    expect(rae.locator(".project-role")).to_have_text("Your role: reviewer")
    expect(rae.get_by_role("heading", name="Codebook", level=2)).to_be_visible()
    expect(rae.locator("code.slug")).to_have_text(["title"])
    for name in ("Add variable", "Import codebook…", "Edit title", "Delete title", "Move title up"):
        expect(rae.get_by_role("button", name=name)).to_have_count(0)
    expect(rae.get_by_role("button", name="Download codebook")).to_be_visible()
    expect(project_tab(rae, "Webhooks")).to_have_count(0)  # owners only

    project_tab(rae, "Documents").click()
    expect(rae.get_by_role("link", name="team.txt", exact=True)).to_be_visible()
    expect(rae.get_by_label("Choose files to upload")).to_be_hidden()
    expect(rae.get_by_role("button", name="Delete team.txt")).to_have_count(0)

    project_tab(rae, "Runs").click()
    expect(rae.get_by_text("Starting a run needs the editor role")).to_be_visible()
    expect(rae.get_by_role("button", name="Start run")).to_have_count(0)

    project_tab(rae, "Members").click()
    expect(rae.locator(".member-list")).to_contain_text(reviewer_email)
    expect(rae.get_by_role("button", name="Add member")).to_have_count(0)
    expect(rae.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)

    # A page the role cannot use, reached anyway: the server's sentence, not a blank page.
    rae.goto(f"/#/projects/{pid}/webhooks")
    expect(rae.get_by_role("heading", name="Not allowed", level=1)).to_be_visible()
    expect(rae.get_by_role("alert")).to_contain_text("needs the owner role")
    rae.go_back()

    # Review controls are there, and they work.
    project_tab(rae, "Results").click()
    cell = rae.locator('td[data-document="team.txt"][data-variable="title"]')
    cell.click()
    panel = rae.locator("aside.review-panel")
    expect(panel.get_by_role("button", name=re.compile("^Accept"))).to_be_visible()
    expect(panel.get_by_role("button", name=re.compile("^Correct"))).to_be_visible()
    screenshot(rae, "62-reviewer-results")
    panel.get_by_role("button", name=re.compile("^Accept")).click()
    expect(cell).to_have_attribute("data-flags", re.compile(r"\baccepted"))

    # -- the administrator deactivates the reviewer ---------------------------------------------
    page.get_by_role("link", name="Users").click()
    page.get_by_role("button", name=f"Deactivate {reviewer_email}").click()
    page.get_by_role("dialog").get_by_role("button", name="Deactivate").click()
    expect(page.locator("tr[data-user]", has_text=reviewer_email)).to_contain_text("deactivated")
    expect(page.locator(".user-activity")).to_contain_text("deactivated")

    # The reviewer's next action signs them out, saying why.
    project_tab(rae, "Codebook").click()
    expect(rae.get_by_role("heading", name="Sign in to Quarry")).to_be_visible()
    expect(rae.locator(".notice")).to_contain_text("deactivated")
    rae.get_by_label("Email").fill(reviewer_email)
    rae.get_by_label("Password").fill(NEW_PASSWORD)
    rae.get_by_role("button", name="Sign in").click()
    expect(rae.locator("form .error")).to_have_text("Incorrect email or password.")
    screenshot(rae, "63-deactivated-signed-out")

    # Who added the reviewer is in the project's log.
    with live_server.api() as api:
        events = api.get(f"/projects/{pid}/audit-events").json()["items"]
    assert ("member.added", live_server.settings.admin_email) in [
        (e["action"], e["user_email"]) for e in events
    ]
