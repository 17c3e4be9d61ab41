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


def test_a_cell_whose_two_models_disagree_is_flagged_with_the_second_answer(
    page: Page, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    from tests.support.fake_llm import FakeRequest
    from tests.web.conftest import _wait

    fake = live_server.fake
    doc = "TWO-MODELS-DOC: 240 patients were enrolled. The mean age was 54.3 years.\n"

    def reply(request: FakeRequest) -> dict[str, Any]:
        if request.variable == "enrolled":
            value = 204 if request.model == "model-b" else 240
            return {"found": True, "evidence": "240 patients were enrolled", "value": value}
        return {"found": True, "evidence": "The mean age was 54.3 years", "value": 54.3}

    fake.script(contains="TWO-MODELS-DOC", reply=reply)
    arranged = arrange_project(
        live_server, "Two models", CODEBOOK, [("t.txt", doc.encode(), "text/plain")]
    )
    pid = arranged["project"]["id"]
    with live_server.api() as api:
        for name, model in (("first", "model-a"), ("second", "model-b")):
            body = {"name": name, "model": model, "base_url": fake.base_url}
            response = api.post(f"/projects/{pid}/profiles", json=body)
            assert response.status_code == 201, response.text
        response = api.post(f"/projects/{pid}/runs", json={"profiles": ["first", "second"]})
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        run = _wait(
            lambda: api.get(f"/projects/{pid}/runs/{run_id}").json(),
            lambda r: r["status"] not in ("preparing", "queued", "running"),
        )
    assert run["status"] == "completed", run

    sign_in(page)
    page.goto(f"/#/projects/{pid}/runs/{run_id}")
    table = page.locator("table.agreement-table")
    expect(table).to_contain_text("Agreement")
    expect(table.locator("tr", has_text="enrolled").locator("td").last).to_have_text("0%")
    expect(table.locator("tr", has_text="mean_age").locator("td").last).to_have_text("100%")

    page.goto(f"/#/projects/{pid}/results")
    grid = page.get_by_role("grid")
    enrolled = grid.locator('td[data-document="t.txt"][data-variable="enrolled"]')
    age = grid.locator('td[data-document="t.txt"][data-variable="mean_age"]')
    expect(enrolled).to_have_attribute("data-flags", re.compile(r"\bdisagree\b"))
    expect(enrolled).to_contain_text("240")
    expect(enrolled).to_contain_text("the two models disagree")
    expect(age).not_to_have_attribute("data-flags", re.compile(r"\bdisagree\b"))
    expect(page.locator(".legend")).to_contain_text("two-profile run disagree")

    enrolled.click()
    panel = page.locator("aside.review-panel")
    expect(panel).to_contain_text("Second model")
    expect(panel).to_contain_text("204")
    expect(panel).to_contain_text("second (model-b) disagrees")
