"""The review panel shows a value's evidence on the page image, outlined and scrolled into
view, for a scan (OCR) and a born-digital PDF alike, with the text view one click away."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.support import scans
from tests.support.documents import make_pdf
from tests.web.conftest import SCREENSHOTS, LiveServer, arrange_project, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

CODEBOOK: list[dict[str, Any]] = [
    {"name": "enrolled", "label": "Enrolled", "description": "Patients", "type": "integer"},
]
QUOTE = "In total 240 patients were enrolled"
# The quote at the foot of the page, so the panel must scroll to show it.
PAGE = "PAGE-IMAGE-DOC: a trial report.\n" + "\n" * 36 + QUOTE + " at four sites."


def test_the_evidence_is_outlined_on_the_page_image_and_scrolled_into_view(
    page: Page, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    live_server.fake.script(
        variable="enrolled",
        contains="PAGE-IMAGE-DOC",
        reply={"found": True, "evidence": QUOTE, "value": 240, "confidence": 0.9},
    )
    born = make_pdf([PAGE])
    scanned = scans.image_only_pdf(scans.render_pages(born, 200), 200)
    arranged = arrange_project(
        live_server,
        "Page images",
        CODEBOOK,
        [("born.pdf", born, "application/pdf"), ("scan.pdf", scanned, "application/pdf")],
        run=True,
    )
    assert [d["status"] for d in arranged["documents"]] == ["ready", "ready"]
    assert arranged["run"]["status"] == "completed", arranged["run"]
    pid = arranged["project"]["id"]

    sign_in(page)
    page.goto(f"/#/projects/{pid}/results")
    grid = page.get_by_role("grid")
    panel = page.locator("aside.review-panel")
    for name in ("scan.pdf", "born.pdf"):
        grid.locator(f'td[data-document="{name}"][data-variable="enrolled"]').click()
        expect(panel).to_have_attribute("data-document", name)
        image = panel.get_by_role("img", name=f"Page 1 of {name}")
        expect(image).to_be_visible()
        box = panel.locator("svg.page-boxes rect.evidence-box")
        expect(box).to_have_count(1)
        stage = panel.locator(".page-stage")
        # The box was scrolled to: the stage is not at its top, and the box lies within it.
        # Only the stage scrolls (the panel opens at its title, issue 15): scrolled down to
        # the stage, the reviewer sees the box.
        page.wait_for_function("el => el.scrollTop > 0", arg=stage.element_handle(), timeout=10_000)
        stage.scroll_into_view_if_needed()
        expect(box).to_be_in_viewport()
        on_image, on_box, in_stage = (
            image.bounding_box(),
            box.bounding_box(),
            stage.bounding_box(),
        )
        assert on_image and on_box and in_stage
        assert in_stage["y"] <= on_box["y"] and on_box["y"] + on_box["height"] <= (
            in_stage["y"] + in_stage["height"]
        )
        # Where the quote is on the page: one inch in from the left, near the foot.
        left = (on_box["x"] - on_image["x"]) / on_image["width"]
        top = (on_box["y"] - on_image["y"]) / on_image["height"]
        assert 0.08 < left < 0.16, (name, left)
        assert 0.6 < top < 0.95, (name, top)
        width = on_box["width"] / on_image["width"]
        assert 0.25 < width < 0.6, (name, width)
        expect(panel).to_contain_text("The evidence is outlined on the page.")
        expect(panel).to_contain_text("read by OCR" if name == "scan.pdf" else "text layer")
        # The panel as the reviewer sees it (a full-page capture would unscroll the stage).
        stage.screenshot(
            path=str(SCREENSHOTS / f"review-page-image-{name.removesuffix('.pdf')}.png")
        )

        # The text view is still there, with the quote highlighted.
        panel.get_by_role("button", name="Text", exact=True).click()
        expect(panel.locator("mark.evidence")).to_contain_text("240 patients")
        panel.get_by_role("button", name="Page image").click()
        expect(panel.locator("svg.page-boxes rect.evidence-box")).to_have_count(1)
