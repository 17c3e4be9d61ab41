"""The UI tells people what went wrong in the API's own words, and handles the session: a wrong
password, an expired or invalid token (back to sign-in, then back to where they were), signing
out, a rejected upload and an unparseable one among good ones (dropped onto the page), codebook
validation, and FastAPI-style validation lists rendered readably."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.api import PASSWORD
from tests.support.documents import make_encrypted_pdf
from tests.web.conftest import (
    EMAIL,
    LiveServer,
    arrange_project,
    project_tab,
    screenshot,
    sign_in,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

# Bytes no parser accepts (a PNG header): the API answers 415 with a sentence.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_wrong_password_shows_the_api_sentence(page: Page, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_have_text("Incorrect email or password.")
    expect(page.get_by_label("Password")).to_be_focused()
    screenshot(page, "20-sign-in-error")


def test_invalid_token_returns_to_sign_in_and_back(page: Page, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    pid = arrange_project(live_server, "Session project")["project"]["id"]
    sentence = httpx.get(
        f"{live_server.base_url}/api/v1/users/me", headers={"Authorization": "Bearer nonsense"}
    ).json()["detail"]

    sign_in(page)
    page.goto(f"/#/projects/{pid}/documents")
    expect(page.get_by_role("heading", name="Documents", level=2)).to_be_visible()
    # The server no longer accepts the token (e.g. the secret changed): the next call is a 401.
    page.evaluate(
        """() => {
            const s = JSON.parse(sessionStorage.getItem('quarry.session'));
            s.token = 'not-a-valid-token';
            sessionStorage.setItem('quarry.session', JSON.stringify(s));
        }"""
    )
    project_tab(page, "Runs").click()
    expect(page.get_by_role("heading", name="Sign in to Quarry")).to_be_visible()
    expect(page.locator(".notice")).to_have_text(sentence)
    screenshot(page, "21-session-expired")

    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Runs", level=2)).to_be_visible()
    assert page.evaluate("location.hash") == f"#/projects/{pid}/runs"

    # A token past its expiry time is not even sent: straight to sign-in, saying why.
    page.evaluate(
        """() => {
            const s = JSON.parse(sessionStorage.getItem('quarry.session'));
            s.expiresAt = '2000-01-01T00:00:00Z';
            sessionStorage.setItem('quarry.session', JSON.stringify(s));
        }"""
    )
    project_tab(page, "Codebook").click()
    expect(page.locator(".notice")).to_have_text("Your session has expired; please sign in again.")


def test_sign_out(page: Page, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    sign_in(page)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to Quarry")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('quarry.session')") is None
    page.goto("/#/projects")
    expect(page.get_by_role("heading", name="Sign in to Quarry")).to_be_visible()


def test_dropped_files_upload_and_a_rejected_one_says_why(
    page: Page, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    pid = arrange_project(live_server, "Upload errors")["project"]["id"]
    with live_server.api() as api:
        other = api.post("/projects", json={"name": "scratch"}).json()["id"]
        rejected = api.post(
            f"/projects/{other}/documents", files=[("files", ("photo.png", PNG, "image/png"))]
        )
    assert rejected.status_code == 415, rejected.text
    sentence = rejected.json()["detail"]

    sign_in(page)
    page.goto(f"/#/projects/{pid}/documents")
    dropzone = page.locator(".dropzone")
    expect(dropzone).to_be_visible()
    # Drag-and-drop: a real drop event carrying two files.
    page.evaluate(
        """([png, locked]) => {
            const data = new DataTransfer();
            data.items.add(new File(['GAMMA: a case-control study.\\nStart 2018.\\n'],
                                    'gamma.txt', {type: 'text/plain'}));
            data.items.add(new File([new Uint8Array(png)], 'photo.png', {type: 'image/png'}));
            data.items.add(new File([new Uint8Array(locked)], 'locked.pdf',
                                    {type: 'application/pdf'}));
            const zone = document.querySelector('.dropzone');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true,
                                                          cancelable: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true,
                                                      cancelable: true}));
        }""",
        [list(PNG), list(make_encrypted_pdf("Secret trial"))],
    )
    good = page.locator("li.upload", has_text="gamma.txt")
    bad = page.locator("li.upload", has_text="photo.png")
    expect(good).to_have_attribute("data-status", "ready", timeout=30_000)
    expect(bad).to_have_attribute("data-status", "rejected")
    expect(bad).to_contain_text(sentence)
    # Accepted, but it cannot be parsed: "failed" with the reason, in the list too.
    locked = page.locator("li.upload", has_text="locked.pdf")
    expect(locked).to_have_attribute("data-status", "failed", timeout=30_000)
    expect(locked).to_contain_text("password")
    expect(page.locator("tr[data-status=failed]")).to_contain_text("password")
    expect(page.locator("tr[data-document-id]")).to_have_count(2)
    screenshot(page, "22-upload-rejected")


def test_a_text_file_named_docx_says_it_was_read_as_text(
    page: Page, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    arranged = arrange_project(
        live_server, "Misnamed", files=[("minutes.docx", b"Minutes of the meeting.\n", "")]
    )
    pid = arranged["project"]["id"]
    [document] = arranged["documents"]
    note = "Read as plain text: the file is not a Word document."
    assert document["notes"] == [note]

    sign_in(page)
    page.goto(f"/#/projects/{pid}/documents")
    row = page.locator(f"tr[data-document-id='{document['id']}']")
    expect(row).to_have_attribute("data-status", "ready")
    expect(row).to_contain_text(note)
    page.goto(f"/#/projects/{pid}/documents/{document['id']}")
    expect(page.get_by_role("heading", name="minutes.docx")).to_be_visible()
    expect(page.locator("main")).to_contain_text(note)


def test_codebook_validation_messages(page: Page, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    pid = arrange_project(live_server, "Validation")["project"]["id"]
    sign_in(page)
    page.goto(f"/#/projects/{pid}/codebook")
    page.get_by_role("button", name="Add variable").click()
    form = page.locator("form.variable-form")

    # Checked in the browser: a bad column name and a missing description.
    name = form.get_by_label("Column name", exact=True)
    name.fill("Bad Name")
    form.get_by_role("button", name="Save variable").click()
    expect(form.get_by_role("alert")).to_contain_text("Please fix the 2 highlighted fields.")
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(name).to_be_focused()
    expect(form.locator(".field-error", has_text="lower-case letters")).to_be_visible()
    expect(form.locator(".field-error", has_text="Say what to extract.")).to_be_visible()

    # A category needs two allowed values.
    name.fill("design")
    form.get_by_label("What to extract", exact=True).fill("Study design")
    form.get_by_label("Type", exact=True).select_option(label="Category (one of)")
    form.get_by_label("Allowed value 1", exact=True).fill("RCT")
    form.get_by_role("button", name="Save variable").click()
    expect(form.locator(".field-error", has_text="at least two allowed values")).to_be_visible()
    expect(name).not_to_have_attribute("aria-invalid", "true")

    # Checked by the server: a date example that is not a date — its sentence is shown.
    form.get_by_label("Type", exact=True).select_option(label="Date")
    form.get_by_role("button", name="Add example").click()
    form.get_by_label("Example 1 value", exact=True).fill("sometime soon")
    form.get_by_role("button", name="Save variable").click()
    alert = form.locator(".error[role=alert]")
    expect(alert).to_contain_text("Example 1 does not fit the variable's type")
    expect(form.locator("fieldset .field-error", has_text="Expected a date")).to_be_visible()
    screenshot(page, "23-codebook-validation")

    form.get_by_label("Example 1 value", exact=True).fill("March 2020")
    form.get_by_role("button", name="Save variable").click()
    expect(form).to_have_count(0)
    card = page.locator("li.variable")
    expect(card).to_have_count(1)
    expect(card.locator(".examples")).to_contain_text("2020-03")  # normalised by the API


def test_a_view_still_loading_does_not_take_focus_from_someone_typing(
    page: Page, live_server: LiveServer
) -> None:
    """The codebook shows "Add variable" before its list has arrived. Someone who opens the form
    and starts typing meanwhile keeps the focus when the list lands (the page does not jump to
    its heading)."""
    from playwright.sync_api import Route, expect

    pid = arrange_project(live_server, "Slow list")["project"]["id"]
    sign_in(page)
    held: list[Route] = []
    pattern = f"**/api/v1/projects/{pid}/variables*"
    page.route(pattern, lambda route: held.append(route))
    page.goto(f"/#/projects/{pid}/codebook")
    page.get_by_role("button", name="Add variable").click()
    name = page.locator("form.variable-form").get_by_label("Column name", exact=True)
    name.fill("sample")
    name.focus()
    expect(page.locator("#main")).to_have_attribute("aria-busy", "true")
    for route in held:
        route.continue_()
    page.unroute(pattern)
    expect(page.locator("#main")).not_to_have_attribute("aria-busy", "true")
    expect(name).to_be_focused()
    expect(name).to_have_value("sample")


def test_validation_lists_render_readably(page: Page, live_server: LiveServer) -> None:
    """FastAPI's own 422 shape (a list of {loc, msg}) becomes readable lines."""
    sign_in(page)
    message, problems = page.evaluate(
        """async () => {
            const api = await import('/static/js/api.js');
            const error = api.errorFromBody(422, 'Unprocessable Content', {detail: [
                {loc: ['body', 'name'], msg: 'Field required', type: 'missing'},
                {loc: ['body', 'examples', 0, 'value'], msg: 'Input should be a valid integer'},
            ]});
            return [error.message, error.problems];
        }"""
    )
    assert problems == [
        "name: Field required",
        "examples › 0 › value: Input should be a valid integer",
    ]
    assert message == "; ".join(problems)
    unknown = page.evaluate(
        """async () => {
            const api = await import('/static/js/api.js');
            return api.errorFromBody(502, 'Bad Gateway', null).message;
        }"""
    )
    assert unknown == "The server answered with status 502 (Bad Gateway)."
