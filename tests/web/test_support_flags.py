"""A value whose quote does not contain it is told apart in the results grid and the review
panel (issue 12, item 4), in words as well as colour."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.web.conftest import LiveServer, arrange_project, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

CODEBOOK: list[dict[str, Any]] = [
    {"name": "enrolled", "label": "Enrolled", "description": "Patients", "type": "integer"},
    {"name": "mean_age", "label": "Mean age", "description": "Mean age", "type": "number"},
]
DOC = "SUPPORT-DOC: 240 patients were enrolled. The mean age was 54.3 years.\n"


def test_an_unsupported_value_is_flagged_in_the_grid_and_the_panel(
    page: Page, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    fake = live_server.fake
    quote = "The mean age was 54.3 years"
    fake.script(
        variable="enrolled",
        contains="SUPPORT-DOC",
        reply={"found": True, "evidence": quote, "value": 240, "confidence": 0.9},
    )
    fake.script(
        variable="mean_age",
        contains="SUPPORT-DOC",
        reply={"found": True, "evidence": quote, "value": 54.3, "confidence": 0.9},
    )
    arranged = arrange_project(
        live_server, "Support flags", CODEBOOK, [("s.txt", DOC.encode(), "text/plain")], run=True
    )
    assert arranged["run"]["status"] == "completed", arranged["run"]
    pid = arranged["project"]["id"]

    sign_in(page)
    page.goto(f"/#/projects/{pid}/results")
    grid = page.get_by_role("grid")
    enrolled = grid.locator('td[data-document="s.txt"][data-variable="enrolled"]')
    age = grid.locator('td[data-document="s.txt"][data-variable="mean_age"]')
    expect(enrolled).to_have_attribute("data-flags", re.compile(r"\bunsupported\b"))
    expect(enrolled).to_contain_text("quote does not contain the value")
    expect(age).not_to_have_attribute("data-flags", re.compile(r"\bunsupported\b"))

    enrolled.click()
    panel = page.locator("aside.review-panel")
    expect(panel).to_have_attribute("data-variable", "enrolled")
    expect(panel).to_contain_text("This quote does not contain the value")
