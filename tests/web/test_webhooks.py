"""Webhooks in the browser: add one (its secret shown once), watch a delivery fail in its
log, and send it again once the receiver is back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from quarry.webhooks import signing
from tests.support.webhook_receiver import WebhookReceiver
from tests.web.conftest import LiveServer, arrange_project, project_tab, screenshot, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser
#: A hang guard only.
DEADLINE = 60


def test_add_a_webhook_and_send_a_failed_delivery_again(
    page: Page, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    arranged = arrange_project(
        live_server,
        "Webhooks",
        [{"name": "age", "description": "Age in years", "type": "integer"}],
        [("a.txt", b"The patient is 42 years old.", "text/plain")],
    )
    pid = arranged["project"]["id"]
    with WebhookReceiver() as receiver:
        receiver.answer(*[500] * 1000)  # down until the test says otherwise
        sign_in(page)
        page.goto(f"/#/projects/{pid}/codebook")
        project_tab(page, "Webhooks").click()
        expect(page.get_by_role("heading", name="Webhooks", level=2)).to_be_visible()
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_label("document.failed").check()
        page.get_by_role("button", name="Add webhook").click()
        shown = page.locator("code.secret")
        expect(shown).to_contain_text("whsec_")
        secret = shown.inner_text().strip()
        row = page.locator("tr[data-webhook]")
        expect(row).to_contain_text(receiver.url)
        expect(row).to_contain_text(f"…{secret[-4:]}")
        screenshot(page, "60-webhooks")
        page.get_by_role("button", name="Done").click()
        expect(page.locator("code.secret")).to_have_count(0)
        # Reloaded, the page never shows the secret again.
        page.reload()
        expect(page.locator("tr[data-webhook]")).to_contain_text(f"…{secret[-4:]}")
        assert secret not in page.content()

        with live_server.api() as api:
            response = api.post(f"/projects/{pid}/runs", json={})
            assert response.status_code == 202, response.text
        page.get_by_role("button", name="Deliveries").click()
        log = page.locator("tr[data-delivery]")
        _refresh_until(page, "failed")  # the retries are given up after 2 s
        expect(log).to_contain_text("failed")
        expect(log).to_contain_text("The receiver answered 500.")
        screenshot(page, "61-webhook-deliveries")

        with receiver._lock:
            receiver._answers.clear()  # back up
        log.get_by_role("button", name="Send again").click()
        [request] = receiver.wait_for(1, DEADLINE)
        assert request.event == "run.finished"
        assert signing.verify(secret, request.headers["quarry-signature"], request.body)
        _refresh_until(page, "delivered")
        expect(log).to_contain_text("delivered")
        expect(log).to_contain_text("HTTP 200")


def _refresh_until(page: Page, text: str) -> None:
    """Press Refresh until the (one) delivery's row shows `text`."""
    log = page.locator("tr[data-delivery]")
    for _ in range(DEADLINE * 4):
        if log.count() and text in log.first.inner_text():
            return
        page.get_by_role("button", name="Refresh").click()
        page.wait_for_timeout(250)
    raise AssertionError(f"the delivery never showed {text!r}")
