"""Codebook files in the browser: download one project's codebook, import it into another,
and a bad file's problems listed with nothing changed; and the API docs pages, which must
render from Quarry's own assets under their policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.web.conftest import LiveServer, arrange_project, screenshot, sign_in
from tests.web.test_manage import CODEBOOK

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser


def test_download_a_codebook_and_import_it_elsewhere(
    page: Page, live_server: LiveServer, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    source = arrange_project(live_server, "Codebook source", CODEBOOK)["project"]["id"]
    target = arrange_project(live_server, "Codebook target")["project"]["id"]
    sign_in(page)
    page.goto(f"/#/projects/{source}/codebook")
    expect(page.locator("li.variable code.slug")).to_have_count(3)
    page.get_by_label("Codebook file format").select_option("xlsx")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download codebook").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "codebook-source-codebook.xlsx"

    page.goto(f"/#/projects/{target}/codebook")
    expect(page.get_by_text("No variables yet")).to_be_visible()
    page.get_by_label("Codebook file to import").set_input_files(saved)
    status = page.get_by_role("region", name="Codebook").get_by_text("Imported ")
    expect(status).to_have_text("Imported codebook-source-codebook.xlsx: 3 added.")
    slugs = page.locator("li.variable code.slug")
    expect(slugs).to_have_text(["title", "mean_age", "outcomes"])
    screenshot(page, "codebook-imported")

    # A bad file: every problem listed, nothing changed.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "variables:\n"
        "  - {name: title, type: text, description: Changed, examples: [240]}\n"
        "  - {name: Mean Age, type: number, description: Age}\n"
    )
    page.get_by_label("Codebook file to import").set_input_files(bad)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The codebook was not imported and nothing was changed")
    expect(alert.locator("li")).to_have_count(2)
    expect(alert).to_contain_text('[{"value": …, "snippet": …}]')
    page.reload()
    expect(slugs).to_have_text(["title", "mean_age", "outcomes"])
    expect(page.get_by_text("The title", exact=True)).to_be_visible()


#: ReDoc's bundle shows its maker's logo from their CDN; the docs' policy refuses it, so the
#: page makes no request outside and just goes without that small image.
REDOC_BRANDING = "https://cdn.redoc.ly/redoc/logo-mini.svg"
RENDER = 120_000  # ms


def test_the_api_docs_render_offline(browser: Browser, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(base_url=live_server.base_url)
    context.set_default_timeout(RENDER)
    tab = context.new_page()
    refused: list[str] = []
    errors: list[str] = []
    tab.on(
        "console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None
    )
    tab.on("pageerror", lambda error: errors.append(str(error)))
    fetched: list[str] = []
    tab.on("requestfinished", lambda request: fetched.append(request.url))
    try:
        # Swagger UI and ReDoc parse megabytes of script and render the whole contract: a
        # hang guard far above their time on a loaded machine, not a speed expectation.
        tab.goto("/docs")
        expect(tab.locator(".swagger-ui .info .title")).to_contain_text("Quarry", timeout=RENDER)
        expect(tab.locator(".opblock").first).to_be_visible(timeout=RENDER)
        tab.goto("/redoc")
        expect(tab.locator("h1").first).to_contain_text("Quarry", timeout=RENDER)
        expect(tab.get_by_text("Import a codebook file").first).to_be_attached(timeout=RENDER)
    finally:
        context.close()
    own = (live_server.base_url, f"blob:{live_server.base_url}", "data:")
    assert [url for url in fetched if not url.startswith(own)] == []
    assert all(REDOC_BRANDING in text for text in refused), refused
    assert errors == []


def test_a_variables_prompt_history_is_shown_with_its_prompt(
    page: Page, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    arranged = arrange_project(live_server, "Prompt history", CODEBOOK[:1])
    pid, variable = arranged["project"]["id"], arranged["variables"][0]
    with live_server.api() as api:
        edited = api.patch(
            f"/projects/{pid}/variables/{variable['id']}",
            json={"description": "The trial's full title"},
        )
        assert edited.status_code == 200, edited.text
    sign_in(page)
    page.goto(f"/#/projects/{pid}/codebook")
    card = page.locator("li.variable").first
    card.get_by_role("button", name="Show prompt").click()
    history = card.locator("details.prompt-history")
    history.locator("summary").click()
    expect(history.locator("summary")).to_have_text("Prompt history (2 versions)")
    expect(history.locator("li p")).to_have_text(
        [
            "Version 1 — not used by a run yet",
            "Version 2 (current) — not used by a run yet",
        ]
    )
    expect(history.locator("li pre").first).to_contain_text("The title")
    expect(history.locator("li pre").nth(1)).to_contain_text("The trial's full title")
