"""Matches and findings in the results grid (issue 14): an ambiguous client match and an
open finding are flagged on their cells, in words as well as colour; the reviewer chooses the
row in the panel and resolves the finding from the findings list."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.web.conftest import LiveServer, _wait, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

CLIENTS = b"client_id,name\nC002,Maria Garcia\nC003,Robert Chen\nC004,Mar\xc3\xada Garc\xc3\xada\n"
DOCS = {
    "chen_a.txt": (
        "CHEN-A: Robert Chen. Accident date: 2 June 2024.",
        "Robert Chen",
        "2024-06-02",
        "Accident date: 2 June 2024",
    ),
    "chen_b.txt": (
        "CHEN-B: Robert Chen. Accident date: 9 June 2024.",
        "Robert Chen",
        "2024-06-09",
        "Accident date: 9 June 2024",
    ),
    "garcia.txt": (
        "GARCIA: Maria Garcia. Accident date: 5 January 2024.",
        "Maria Garcia",
        "2024-01-05",
        "Accident date: 5 January 2024",
    ),
}


def _arrange(server: LiveServer) -> str:
    fake = server.fake
    for text, name, date, quote in DOCS.values():
        marker = text.split(":")[0]
        fake.script(
            variable="client_name",
            contains=marker,
            reply={"found": True, "evidence": name, "value": name, "confidence": 0.9},
        )
        fake.script(
            variable="accident_date",
            contains=marker,
            reply={"found": True, "evidence": quote, "value": date, "confidence": 0.9},
        )
    with server.api() as api:
        pid = api.post("/projects", json={"name": "Claims"}).json()["id"]
        response = api.post(
            f"/projects/{pid}/reference-lists", files={"file": ("clients.csv", CLIENTS, "text/csv")}
        )
        assert response.status_code == 201, response.text
        variables: list[dict[str, Any]] = [
            {
                "name": "client_name",
                "label": "Client",
                "description": "The client",
                "type": "text",
                "match": {
                    "list": "clients",
                    "column": "name",
                    "key_column": "client_id",
                    "method": "name",
                },
            },
            {
                "name": "accident_date",
                "label": "Accident date",
                "description": "When",
                "type": "date",
                "checks": {"must_agree_within_case": True},
            },
        ]
        for spec in variables:
            assert api.post(f"/projects/{pid}/variables", json=spec).status_code == 201
        assert (
            api.patch(
                f"/projects/{pid}", json={"case_key": {"variable": "client_name"}}
            ).status_code
            == 200
        )
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


def test_ambiguous_matches_and_findings_are_flagged_chosen_and_resolved(
    page: Page, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    pid = _arrange(live_server)
    sign_in(page)
    page.goto(f"/#/projects/{pid}/results")
    grid = page.get_by_role("grid")
    garcia = grid.locator('td[data-document="garcia.txt"][data-variable="client_name"]')
    chen_b = grid.locator('td[data-document="chen_b.txt"][data-variable="accident_date"]')
    expect(garcia).to_have_attribute("data-flags", re.compile(r"\bmatch\b"))
    expect(garcia).to_contain_text("matches several rows of its reference list")
    expect(chen_b).to_have_attribute("data-flags", re.compile(r"\bfinding\b"))
    findings = page.locator("details.findings")
    expect(findings).to_contain_text("Case C003 · accident_date")
    expect(findings).to_contain_text("Accident date: 9 June 2024")

    garcia.click()
    panel = page.locator("aside.review-panel")
    expect(panel).to_contain_text("Reference row")
    panel.locator("ul.candidates li", has_text="C002").get_by_role("button", name="Choose").click()
    expect(garcia).not_to_have_attribute("data-flags", re.compile(r"\bmatch\b"))

    findings.get_by_role("button", name="2024-06-02 is right").click()
    expect(findings).to_be_hidden()
    expect(chen_b).not_to_have_attribute("data-flags", re.compile(r"\bfinding\b"))
