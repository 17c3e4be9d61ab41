"""The review panel opens at its top (issue 15: it opened scrolled, its title clipped): with the
evidence at the foot of a page image or far down a long text, the panel's title is in the
panel and on the screen, while the quote is still scrolled into view inside its own viewer;
and the page behind does not jump."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.support.documents import make_pdf
from tests.web.conftest import LiveServer, arrange_project, at_both_widths, screenshot, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.browser

CODEBOOK: list[dict[str, Any]] = [
    {"name": "enrolled", "label": "Enrolled", "description": "Patients", "type": "integer"},
    {"name": "site", "label": "Site", "description": "Where", "type": "text"},
]
QUOTE = "In total 240 patients were enrolled"
# The quote at the foot of the page image; and far down a long text with one page.
PDF = "PANEL-PDF: a trial report.\n" + "\n" * 36 + QUOTE + " at four sites."
TEXT = "PANEL-TXT: a long report.\n" + "Nothing to see in this line.\n" * 160 + QUOTE + ".\n"


def _inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return (
        outer["y"] - 0.5 <= inner["y"]
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5
    )


def _expect_title_shown(page: Page, panel: Locator, *, at_top: bool = True) -> None:
    """The title is inside the panel and on the screen; `at_top`: the panel is not scrolled."""
    title = panel.locator("#panel-title")
    title_box, panel_box = title.bounding_box(), panel.bounding_box()
    assert title_box and panel_box
    viewport = page.viewport_size
    assert viewport
    screen = {"y": 0.0, "height": float(viewport["height"])}
    assert _inside(title_box, panel_box), (title_box, panel_box)
    assert _inside(title_box, screen), (title_box, viewport)
    if at_top:
        assert panel.evaluate("el => el.scrollTop") == 0


@at_both_widths
def test_the_panel_opens_at_its_title(
    page: Page, live_server: LiveServer, viewport_width: int
) -> None:
    from playwright.sync_api import expect

    for marker in ("PANEL-PDF", "PANEL-TXT"):
        live_server.fake.script(
            variable="enrolled",
            contains=marker,
            reply={"found": True, "evidence": QUOTE, "value": 240, "confidence": 0.9},
        )
    arranged = arrange_project(
        live_server,
        "Panel title",
        CODEBOOK,
        [
            ("long.txt", TEXT.encode(), "text/plain"),
            ("report.pdf", make_pdf([PDF]), "application/pdf"),
        ],
        run=True,
    )
    pid = arranged["project"]["id"]
    sign_in(page)
    page.goto(f"/#/projects/{pid}/results")
    grid = page.get_by_role("grid")
    panel = page.locator(".review-panel")

    # By mouse, on the page image: the box is scrolled to inside the image's stage only. (At
    # 1024 px the filter bar puts the grid's first row below the fold: scrolled to first.)
    target = grid.locator('td[data-document="report.pdf"][data-variable="enrolled"]')
    target.scroll_into_view_if_needed()
    scrolled = page.evaluate("window.scrollY")
    target.click()
    box = panel.locator("svg.page-boxes rect.evidence-box")
    expect(box).to_have_count(1)
    stage = panel.locator(".page-stage")
    page.wait_for_function("el => el.scrollTop > 0", arg=stage.element_handle())
    on_box, in_stage = box.bounding_box(), stage.bounding_box()
    assert on_box and in_stage and _inside(on_box, in_stage)
    _expect_title_shown(page, panel)
    assert page.evaluate("window.scrollY") == scrolled  # the page behind did not move
    screenshot(page, f"16-review-panel-image-{viewport_width}")
    # Scrolled down to the page image (the wheel over the panel scrolls it, then the page),
    # the reviewer still sees which cell this is.
    title_box = panel.locator("#panel-title").bounding_box()
    assert title_box
    page.mouse.move(title_box["x"] + 10, title_box["y"] + 5)
    for _ in range(4):
        page.mouse.wheel(0, 600)
    expect(box).to_be_in_viewport()
    _expect_title_shown(page, panel, at_top=False)

    # By keyboard, on a long text: the mark is scrolled to inside the text only.
    grid.locator('td[data-document="long.txt"][data-variable="enrolled"]').focus()
    page.keyboard.press("Enter")
    expect(panel).to_have_attribute("data-document", "long.txt")
    expect(panel.locator("#panel-title")).to_be_focused()
    mark = panel.locator("mark.evidence")
    expect(mark).to_have_count(1)
    text = panel.locator("pre.doctext")
    page.wait_for_function("el => el.scrollTop > 0", arg=text.element_handle())
    on_mark, in_text = mark.bounding_box(), text.bounding_box()
    assert on_mark and in_text and _inside(on_mark, in_text)
    _expect_title_shown(page, panel)
    screenshot(page, f"17-review-panel-text-{viewport_width}")

    # Going back to the image from another cell opens at the top again.
    page.keyboard.press("Escape")
    grid.locator('td[data-document="report.pdf"][data-variable="enrolled"]').focus()
    page.keyboard.press("Enter")
    expect(panel).to_have_attribute("data-document", "report.pdf")
    expect(box).to_have_count(1)
    page.wait_for_function("el => el.scrollTop > 0", arg=stage.element_handle())
    _expect_title_shown(page, panel)
