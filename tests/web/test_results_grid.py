"""The results grid at scale (issue 15, item 2), at 1024 and 1440 px: sorted and filtered on
the server (column headers, a filter bar with counts, name and value search), the keyboard
going on across a page boundary, a sticky header row and document column inside a grid that
scrolls on its own (the page never sideways), names cut in the middle, resizable columns and
a compact mode that is remembered."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.fake_llm import FakeRequest
from tests.web.conftest import LiveServer, arrange_project, screenshot, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.browser

WIDTHS = [1024, 1440]
COPY = "Referral letter from the district hospital 2024 – copy {}.txt"
#: 27 documents (a page of 25 and two more): two copies whose names differ only at the end,
#: then studies 01–25, uploaded in that order.
NAMES = [COPY.format(1), COPY.format(2), *(f"study-{i:02}.txt" for i in range(1, 26))]
COUNTRIES = ["Norway", "Chile", "Kenya", "Japan", "Peru", "Italy", "Ghana"]
CODEBOOK: list[dict[str, Any]] = [
    {"name": "score", "label": "Score", "description": "The score", "type": "integer"},
    {
        "name": "design",
        "label": "Design",
        "description": "Study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort"],
    },
    {"name": "randomised", "label": "Randomised", "description": "Randomised?", "type": "boolean"},
    {"name": "country", "label": "Country", "description": "Where", "type": "text"},
    {"name": "year", "label": "Year", "description": "When", "type": "integer"},
    {"name": "drug", "label": "Drug", "description": "What drug", "type": "text"},
    {"name": "dose", "label": "Dose", "description": "How much", "type": "number"},
    {"name": "site", "label": "Site", "description": "Which site", "type": "text"},
]


def facts(i: int) -> dict[str, Any]:
    """What document i states (and how the fake model answers it)."""
    return {
        "score": (i * 37) % 100,
        "design": "RCT" if i % 2 else "Cohort",
        "randomised": i % 2 == 1,
        "country": COUNTRIES[i % len(COUNTRIES)],
        "year": 2000 + i,
        "drug": f"drug-{i % 4}",
        "dose": 10 + i / 2,
        "site": f"site {i}",
    }


def document_text(i: int) -> str:
    f = facts(i)
    # study-01 is long, its facts at the end: its quote is scrolled to in the review panel.
    filler = "".join(f"Line {n} of the methods section.\n" for n in range(80)) if i == 2 else ""
    return (
        f"{filler}DOC-{i:02}: score {f['score']}. Design {f['design']}. "
        f"Randomised {f['randomised']}. Country {f['country']}. Year {f['year']}. "
        f"Drug {f['drug']}. Dose {f['dose']} mg. Site {f['site']}.\n"
    )


def answer(request: FakeRequest) -> dict[str, Any]:
    marker = re.search(r"DOC-(\d+)", request.text)
    assert marker is not None, request.text[:200]
    i = int(marker.group(1))
    variable = request.variable
    f = facts(i)
    if variable == "randomised" and i % 5 == 0:
        return {"found": False, "value": None}
    value = f[variable]
    evidence = f"{variable.capitalize()} {value}"
    if variable == "country" and i % 7 == 3:
        evidence = "a country that this document never names"  # ungrounded
    confidence = 0.3 if variable == "year" and i % 4 == 1 else 0.9
    return {"found": True, "value": value, "evidence": evidence, "confidence": confidence}


@pytest.fixture(scope="module")
def arranged(live_server: LiveServer) -> Iterator[dict[str, Any]]:
    """A project of 27 documents × 8 variables, extracted; two documents fully reviewed and a
    third in part."""
    live_server.fake.reset()
    live_server.fake.script(contains="DOC-", reply=answer)
    files = [(name, document_text(i).encode(), "text/plain") for i, name in enumerate(NAMES)]
    made = arrange_project(live_server, "Grid at scale", CODEBOOK, files, run=True)
    assert made["run"]["status"] == "completed", made["run"]
    pid = made["project"]["id"]
    documents = {d["filename"]: d["id"] for d in made["documents"]}
    with live_server.api() as api:
        for name, variables in (
            ("study-03.txt", [v["id"] for v in made["variables"]]),
            ("study-04.txt", [v["id"] for v in made["variables"]]),
            ("study-05.txt", [made["variables"][0]["id"]]),
        ):
            for variable_id in variables:
                response = api.put(
                    f"/projects/{pid}/reviews/{documents[name]}/{variable_id}",
                    json={"status": "accepted"},
                )
                assert response.status_code == 200, response.text
    yield made


def open_grid(page: Page, pid: str, width: int) -> Locator:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": width, "height": 800})
    sign_in(page)
    page.goto(f"/#/projects/{pid}/results")
    grid = page.get_by_role("grid")
    expect(grid.locator("tbody tr")).to_have_count(25)
    return grid


def row_names(grid: Locator) -> list[str]:
    names: list[str] = grid.locator("tbody th.doc-name").evaluate_all(
        "cells => cells.map(c => c.dataset.filename)"
    )
    return names


def column_texts(grid: Locator, variable: str) -> list[str]:
    """The values the column's cells show (their text, without marks or hidden words)."""
    texts: list[str] = grid.locator(f'td[data-variable="{variable}"]').evaluate_all(
        "cells => cells.map(c => [...c.childNodes].filter(n => n.nodeType === Node.TEXT_NODE)"
        ".map(n => n.textContent).join(''))"
    )
    return texts


def summary(page: Page) -> Locator:
    return page.locator(".grid-summary")


@pytest.mark.parametrize("width", WIDTHS)
def test_sort_filter_and_search_on_the_server(
    page: Page, arranged: dict[str, Any], width: int
) -> None:
    from playwright.sync_api import expect

    pid = arranged["project"]["id"]
    grid = open_grid(page, pid, width)
    expect(summary(page)).to_have_text("Documents 1–25 of 27")
    assert row_names(grid) == NAMES[:25]

    # A variable's header sorts by its value, numbers as numbers, across every page.
    scores = sorted(facts(i)["score"] for i in range(27))
    score_header = grid.get_by_role("columnheader", name=re.compile("^Score"))
    score_header.get_by_role("button").click()
    expect(score_header).to_have_attribute("aria-sort", "ascending")
    expect(grid.locator('td[data-variable="score"]').first).to_have_text(str(scores[0]))
    assert column_texts(grid, "score") == [str(s) for s in scores[:25]]
    score_header.get_by_role("button").click()
    expect(score_header).to_have_attribute("aria-sort", "descending")
    expect(grid.locator('td[data-variable="score"]').first).to_have_text(str(scores[-1]))
    assert column_texts(grid, "score") == [str(s) for s in scores[::-1][:25]]
    expect(page.get_by_label("Sort by")).to_have_value(re.compile("^value:"))

    # The document header sorts by name, naturally; the score header is no longer sorted.
    document_header = grid.get_by_role("columnheader", name=re.compile("^Document"))
    document_header.get_by_role("button").click()
    expect(document_header).to_have_attribute("aria-sort", "ascending")
    expect(score_header).to_have_attribute("aria-sort", "none")
    expect(grid.locator("tbody th.doc-name").first).to_have_attribute("data-filename", NAMES[0])
    document_header.get_by_role("button").click()
    expect(grid.locator("tbody th.doc-name").first).to_have_attribute(
        "data-filename", "study-25.txt"
    )
    page.get_by_label("Sort by").select_option("uploaded")
    page.get_by_label("Order").select_option("asc")
    expect(grid.locator("tbody th.doc-name").first).to_have_attribute("data-filename", NAMES[0])

    # Review filter, with counts: two documents fully reviewed, the rest not.
    unreviewed = page.get_by_role("button", name="Unreviewed (25)", exact=True)
    expect(page.get_by_role("button", name="Reviewed (2)", exact=True)).to_be_visible()
    unreviewed.click()
    expect(unreviewed).to_have_attribute("aria-pressed", "true")
    expect(summary(page)).to_have_text("Documents 1–25 of 25 matching (27 in the project)")
    shown = row_names(grid)
    assert "study-03.txt" not in shown and "study-04.txt" not in shown
    assert "study-05.txt" in shown  # reviewed in part only
    screenshot(page, f"40-results-unreviewed-{width}")

    # A flag on top: the counts of the others follow (faceted).
    ungrounded_docs = [NAMES[i] for i in range(27) if i % 7 == 3]
    flag = page.get_by_role("button", name=f"Ungrounded ({len(ungrounded_docs)})")
    flag.click()
    expect(grid.locator("tbody tr")).to_have_count(len(ungrounded_docs))
    assert row_names(grid) == ungrounded_docs
    for name in ungrounded_docs:
        country = grid.locator(f'td[data-document="{name}"][data-variable="country"]')
        expect(country).to_have_attribute("data-flags", re.compile(r"\bungrounded\b"))
    expect(
        page.get_by_role("button", name=f"Unreviewed ({len(ungrounded_docs)})", exact=True)
    ).to_be_visible()
    # The flag counts obey the review filter but not the flag one (another flag replaces it).
    reviewed = ("study-03.txt", "study-04.txt")
    low = [i for i in range(27) if i % 4 == 1 and NAMES[i] not in reviewed]
    expect(page.get_by_role("button", name=f"Low confidence ({len(low)})")).to_be_visible()

    # Clearing, then the name search (debounced, server-side, ignoring case).
    page.get_by_role("button", name="Clear filters").click()
    expect(grid.locator("tbody tr")).to_have_count(25)
    page.get_by_label("Document name").fill("COPY 2")
    expect(grid.locator("tbody tr")).to_have_count(1)
    assert row_names(grid) == [COPY.format(2)]
    page.get_by_label("Document name").fill("")
    expect(grid.locator("tbody tr")).to_have_count(25)

    # The value search reads values in one column.
    page.get_by_label("In column").select_option(label="Country")
    page.get_by_label("Value").fill("kenya")
    kenya = [NAMES[i] for i in range(27) if COUNTRIES[i % 7] == "Kenya"]
    expect(grid.locator("tbody tr")).to_have_count(len(kenya))
    assert row_names(grid) == kenya


@pytest.mark.parametrize("width", WIDTHS)
def test_names_are_cut_in_the_middle_and_the_page_never_scrolls_sideways(
    page: Page, arranged: dict[str, Any], width: int
) -> None:
    from playwright.sync_api import expect

    grid = open_grid(page, arranged["project"]["id"], width)
    first, second = (grid.locator(f'th.doc-name[data-filename="{COPY.format(n)}"]') for n in (1, 2))
    shown = [row.locator(".doc-name-text").inner_text() for row in (first, second)]
    assert shown[0] != shown[1]
    assert all("…" in text for text in shown), shown
    assert shown[0].endswith("copy 1.txt") and shown[1].endswith("copy 2.txt")
    assert shown[0].startswith("Referral")
    expect(first).to_have_attribute("title", COPY.format(1))
    expect(first).to_have_accessible_name(COPY.format(1))

    no_sideways = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    assert page.evaluate(no_sideways)
    wrap = page.locator(".grid-wrap").bounding_box()
    assert wrap is not None
    headers = grid.locator("thead th").all()
    visible = [
        box
        for header in headers[1:]
        if (box := header.bounding_box()) and box["x"] + box["width"] <= wrap["x"] + wrap["width"]
    ]
    assert len(visible) >= 5, (width, len(visible))
    if width == 1024:
        assert len(visible) < 8  # the grid is wider than its box: it scrolls inside it

    # Opening a cell keeps the page from scrolling sideways too, and its title in view.
    grid.locator('td[data-document="study-01.txt"][data-variable="country"]').click()
    panel = page.locator("aside.review-panel")
    expect(panel).to_have_attribute("data-variable", "country")
    title = page.locator("#panel-title")
    expect(title).to_be_visible()
    # The quote is scrolled to in the document's text (which scrolls the panel too)...
    expect(panel.locator("mark.evidence")).to_have_text("Country Kenya")
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    # ...and the panel's title stays in view, at the top of the panel (issue 15: it was clipped).
    boxes = page.evaluate(
        """() => {
          const panel = document.querySelector("aside.review-panel").getBoundingClientRect();
          const title = document.querySelector("#panel-title").getBoundingClientRect();
          return { panel: panel.top, title: title.top, bottom: title.bottom, height: innerHeight };
        }"""
    )
    assert boxes["title"] >= boxes["panel"] - 1, boxes
    assert boxes["title"] >= 0 and boxes["bottom"] <= boxes["height"], boxes
    assert page.evaluate(no_sideways)
    screenshot(page, f"41-results-panel-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_header_row_and_the_document_column_stay_in_view(
    page: Page, arranged: dict[str, Any], width: int
) -> None:
    grid = open_grid(page, arranged["project"]["id"], width)
    page.get_by_label("Rows per page").select_option("50")
    from playwright.sync_api import expect

    expect(grid.locator("tbody tr")).to_have_count(27)
    wrap = page.locator(".grid-wrap")
    before = wrap.bounding_box()
    assert before is not None
    can_scroll = wrap.evaluate(
        "w => [w.scrollHeight > w.clientHeight, w.scrollWidth > w.clientWidth]"
    )
    assert can_scroll[0], "27 rows scroll inside the grid's box"
    wrap.evaluate("w => { w.scrollTop = w.scrollHeight; w.scrollLeft = w.scrollWidth; }")
    page.wait_for_function(
        "() => { const w = document.querySelector('.grid-wrap'); return w.scrollTop > 0; }"
    )
    header = grid.locator("thead th").nth(3).bounding_box()
    last_name = grid.locator("tbody th.doc-name").last.bounding_box()
    corner = grid.locator("thead th").first.bounding_box()
    assert header is not None and last_name is not None and corner is not None
    assert abs(header["y"] - before["y"]) <= 2, (header, before)  # still at the top
    assert abs(corner["x"] - before["x"]) <= 2 and abs(corner["y"] - before["y"]) <= 2
    assert abs(last_name["x"] - before["x"]) <= 2  # still at the left
    if width == 1024:
        assert can_scroll[1], "eight columns scroll sideways inside the grid's box at 1024 px"
    if can_scroll[1]:
        assert wrap.evaluate("w => w.scrollLeft") > 0
        # The cells went under the document column, which stayed.
        first_cell = grid.locator("tbody tr").last.locator("td").first.bounding_box()
        assert first_cell is not None and first_cell["x"] < last_name["x"]
    screenshot(page, f"42-results-scrolled-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_keyboard_goes_on_across_pages(
    page: Page, arranged: dict[str, Any], width: int
) -> None:
    from playwright.sync_api import expect

    grid = open_grid(page, arranged["project"]["id"], width)

    def cell(name: str, variable: str = "design") -> Locator:
        return grid.locator(f'td[data-document="{name}"][data-variable="{variable}"]')

    cell("study-23.txt").click()  # the last row of the first page
    page.locator("aside.review-panel").get_by_role("button", name=re.compile("^Close")).click()
    expect(cell("study-23.txt")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(cell("study-24.txt")).to_be_focused()  # the first row of the next page
    expect(summary(page)).to_have_text("Documents 26–27 of 27")
    expect(grid.locator('td[tabindex="0"]')).to_have_count(1)
    page.keyboard.press("ArrowUp")
    expect(cell("study-23.txt")).to_be_focused()  # back on the last row of the first page
    expect(summary(page)).to_have_text("Documents 1–25 of 27")

    page.keyboard.press("PageDown")
    expect(cell("study-24.txt")).to_be_focused()
    page.keyboard.press("PageUp")
    expect(cell("study-23.txt")).to_be_focused()
    page.keyboard.press("PageUp")
    expect(cell("study-13.txt")).to_be_focused()  # ten rows up, within the page

    # The panel follows the focus onto the next page, and the review keys work there.
    page.keyboard.press("PageDown")
    expect(cell("study-23.txt")).to_be_focused()
    page.keyboard.press("Enter")
    panel = page.locator("aside.review-panel")
    expect(panel).to_have_attribute("data-document", "study-23.txt")
    page.keyboard.press("Escape")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(panel).to_have_attribute("data-document", "study-24.txt")
    expect(page.locator("#panel-title")).to_be_focused()
    page.keyboard.press("Escape")
    expect(cell("study-24.txt")).to_be_focused()


@pytest.mark.parametrize("width", WIDTHS)
def test_columns_resize_and_compact_mode_is_remembered(
    page: Page, arranged: dict[str, Any], width: int
) -> None:
    from playwright.sync_api import expect

    pid = arranged["project"]["id"]
    grid = open_grid(page, pid, width)
    header = grid.get_by_role("columnheader", name=re.compile("^Country"))

    def header_width() -> float:
        box = header.bounding_box()
        assert box is not None
        return float(box["width"])

    start = header_width()
    handle = header.locator(".col-resize")
    handle.scroll_into_view_if_needed()  # below the legend and the filter bar at 1024 px
    box = handle.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 80, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    dragged = header_width()
    assert dragged >= start + 60, (start, dragged)

    # The keyboard way: Shift+← / → on a cell of the column.
    grid.locator('td[data-document="study-01.txt"][data-variable="country"]').click()
    page.keyboard.press("Escape")
    page.keyboard.press("Shift+ArrowLeft")
    page.keyboard.press("Shift+ArrowLeft")
    expect(handle).to_have_attribute("aria-valuenow", str(round(dragged) - 32))

    row = grid.locator("tbody tr").first
    tall = row.bounding_box()
    compact = page.get_by_role("button", name="Compact rows")
    compact.click()
    expect(compact).to_have_attribute("aria-pressed", "true")
    short = row.bounding_box()
    assert tall is not None and short is not None and short["height"] < tall["height"]

    page.reload()
    expect(grid.locator("tbody tr")).to_have_count(25)
    expect(page.get_by_role("button", name="Compact rows")).to_have_attribute(
        "aria-pressed", "true"
    )
    again = grid.locator("tbody tr").first.bounding_box()
    assert again is not None and abs(again["height"] - short["height"]) < 1
    assert abs(header_width() - (round(dragged) - 32)) <= 1  # the width is remembered too

    # Narrow columns: every column at the narrow default, more of them in view.
    def in_view() -> int:
        wrap = page.locator(".grid-wrap").bounding_box()
        assert wrap is not None
        right = wrap["x"] + wrap["width"]
        boxes = [h.bounding_box() for h in grid.locator("thead th").all()[1:]]
        return sum(1 for b in boxes if b and b["x"] + b["width"] <= right)

    before = in_view()
    page.get_by_role("button", name="Narrow columns").click()
    expect(handle).to_have_attribute("aria-valuenow", "96")
    assert abs(header_width() - 96) <= 1
    assert in_view() == 8 if width == 1440 else in_view() > before


@pytest.mark.parametrize("width", WIDTHS)
def test_the_first_rows_are_in_view_and_the_legend_keeps_its_state(
    page: Page, arranged: dict[str, Any], width: int
) -> None:
    """In an 800 px tall window the legend starts closed, so that the grid's first rows show
    without scrolling; in a tall one it starts open. Opened or closed by hand, it stays so."""
    from playwright.sync_api import expect

    pid = arranged["project"]["id"]
    grid = open_grid(page, pid, width)
    legend = page.locator("details.legend")
    assert legend.evaluate("d => d.open") is False
    assert page.evaluate("window.scrollY") == 0
    rows = grid.locator("tbody tr")
    third = rows.nth(2).bounding_box()
    assert third is not None and third["y"] + third["height"] <= 800, third

    legend.locator("summary").click()
    assert legend.evaluate("d => d.open") is True
    page.reload()
    expect(rows).to_have_count(25)
    assert legend.evaluate("d => d.open") is True  # remembered

    # A first visit in a tall window: open.
    page.evaluate("localStorage.removeItem('quarry.results')")
    page.set_viewport_size({"width": width, "height": 1100})
    page.reload()
    expect(rows).to_have_count(25)
    assert legend.evaluate("d => d.open") is True


def test_the_counts_follow_the_reviews(page: Page, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    live_server.fake.script(
        contains="COUNT-",
        reply={"found": True, "value": 7, "evidence": "Score 7", "confidence": 0.9},
    )
    files = [(f"count-{i}.txt", f"COUNT-{i}: Score 7.\n".encode(), "text/plain") for i in (1, 2)]
    made = arrange_project(live_server, "Counts", CODEBOOK[:1], files, run=True)
    sign_in(page)
    page.goto(f"/#/projects/{made['project']['id']}/results")
    grid = page.get_by_role("grid")
    unreviewed = page.get_by_role("button", name="Unreviewed (2)", exact=True)
    unreviewed.click()
    expect(grid.locator("tbody tr")).to_have_count(2)
    grid.locator('td[data-document="count-1.txt"]').click()
    page.keyboard.press("a")
    expect(grid.locator('td[data-document="count-1.txt"]')).to_have_attribute(
        "data-flags", re.compile(r"\baccepted\b")
    )
    # The counts are asked for again; the reviewed row stays under the keyboard until the
    # page is read again.
    expect(page.get_by_role("button", name="Unreviewed (1)", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Reviewed (1)", exact=True)).to_be_visible()
    expect(grid.locator("tbody tr")).to_have_count(2)
    page.get_by_role("button", name="Refresh").click()
    expect(grid.locator("tbody tr")).to_have_count(1)
