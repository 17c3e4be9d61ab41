"""Accessibility (issue 15): axe-core finds no serious or critical violation on any page of the
UI, at 1024 and 1440 px — every route app.js serves, in the states a person meets there
(dialogs open, the variable editor, a finished, failed, cancelled and budget-stopped run, the
results with the review panel and its correction form open, findings and reference matches)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.documents import make_pdf
from tests.web.axe import FAILING_IMPACTS, axe_version, axe_violations, describe
from tests.web.conftest import (
    REPO_ROOT,
    LiveServer,
    _wait,
    arrange_project,
    at_both_widths,
    sign_in,
)
from tests.web.test_matches_and_findings import _arrange as arrange_claims

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

APP_JS = REPO_ROOT / "backend" / "quarry" / "web" / "static" / "js" / "app.js"

CODEBOOK: list[dict[str, Any]] = [
    {
        "name": "design",
        "label": "Design",
        "description": "Study design",
        "type": "category",
        "allowed_values": ["RCT", "Cohort"],
    },
    {"name": "randomised", "label": "Randomised", "description": "Randomised?", "type": "boolean"},
    {"name": "drugs", "label": "Drugs", "description": "Drugs given", "type": "list"},
    {"name": "dose", "label": "Dose", "description": "Daily dose", "type": "number", "unit": "mg"},
]
DOC_A = "DOC-A: a randomised trial of aspirin and heparin in 40 adults, 75 mg daily.\n"
DOC_B = "DOC-B: an observational cohort of 300 adults.\n"
PDF_PAGES = ["DOC-P: page one, the methods.", "Results: each patient took 75 mg aspirin daily."]


def app_routes() -> set[str]:
    """The routes app.js serves, read from its router: the paths it matches itself and, under
    a project, every tab its shell dispatches (with `/{id}` where the tab takes a sub-path)."""
    source = APP_JS.read_text(encoding="utf-8")
    routes = set(re.findall(r'path === "(/[^"]*)"', source))
    dispatched = re.findall(r'tab === "(\w+)"( && sub)?', source)
    [matched] = re.findall(r"\\/projects\\/\(\[\^/\]\+\)\\/\(([\w|]+)\)", source)
    assert {tab for tab, _ in dispatched} == set(matched.split("|")), (
        "app.js's router and its project shell name different tabs: update app_routes()"
    )
    routes |= {f"/projects/{{id}}/{tab}{'/{id}' if sub else ''}" for tab, sub in dispatched}
    return routes


def test_the_route_list_is_read_from_app_js() -> None:
    routes = app_routes()
    assert {"/signin", "/projects", "/projects/{id}/results", "/projects/{id}/runs/{id}"} <= routes
    assert len(routes) >= 10, routes


def test_the_check_finds_what_it_is_for(page: Page) -> None:
    """A nameless button, an image without text and an unnamed dialog are found and told apart:
    the check below can fail."""
    page.goto("/#/signin")
    page.get_by_role("heading", name="Sign in to Quarry").wait_for()
    page.evaluate(
        """() => {
          const main = document.getElementById("main");
          main.append(document.createElement("button"));
          const img = document.createElement("img");
          img.src = "/static/favicon.svg";
          main.append(img);
          const box = document.createElement("div");
          box.setAttribute("role", "dialog");
          main.append(box);
        }"""
    )
    found = {v["id"]: v for v in axe_violations(page)}
    assert {"button-name", "image-alt", "aria-dialog-name"} <= set(found), sorted(found)
    assert found["button-name"]["impact"] == "critical"
    assert "main > button" in describe([found["button-name"]])


def _arrange(server: LiveServer) -> dict[str, Any]:
    """A project with a finished, a failed, a cancelled and a budget-stopped run, a webhook
    with a delivery; and a second one with a reference list and an open finding."""
    fake = server.fake
    fake.reset()
    answers = {
        ("DOC-A", "design"): ("RCT", "a randomised trial"),
        ("DOC-A", "randomised"): (True, "a randomised trial"),
        ("DOC-A", "drugs"): (["aspirin", "heparin"], "aspirin and heparin"),
        ("DOC-A", "dose"): (75, "75 mg daily"),
        ("DOC-P", "dose"): (75, "75 mg aspirin daily"),
        ("DOC-B", "design"): ("Cohort", "a prospective cohort study design"),  # ungrounded
    }
    for (marker, variable), (value, evidence) in answers.items():
        fake.script(
            variable=variable,
            contains=marker,
            reply={"found": True, "evidence": evidence, "value": value, "confidence": 0.9},
        )
    fake.script(variable="drugs", contains="DOC-B", reply="I cannot answer in JSON, sorry")
    arranged = arrange_project(
        server,
        "Accessibility",
        CODEBOOK,
        [
            ("a.txt", DOC_A.encode(), "text/plain"),
            ("b.txt", DOC_B.encode(), "text/plain"),
            ("p.pdf", make_pdf(PDF_PAGES), "application/pdf"),
        ],
        run=True,
    )
    assert arranged["run"]["status"] == "completed_with_errors", arranged["run"]
    pid = arranged["project"]["id"]
    runs = {"finished": arranged["run"]["id"]}

    def finish(api: Any, body: dict[str, Any]) -> dict[str, Any]:
        response = api.post(f"/projects/{pid}/runs", json={"force_fresh": True, **body})
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        return dict(
            _wait(
                lambda: api.get(f"/projects/{pid}/runs/{run_id}").json(),
                lambda r: (
                    r["status"] not in ("preparing", "queued", "running")
                    and r["counts"]["running"] == 0
                ),
            )
        )

    with server.api() as api:
        # Stopped by its budget: a third of the estimate.
        estimate = api.post(f"/projects/{pid}/runs", json={"dry_run": True}).json()
        budget = max(0.01, round(estimate["estimated_cost_usd"] * 0.3, 2))
        stopped = finish(api, {"budget_usd": budget})
        assert stopped["budget_reached"], stopped
        runs["budget"] = stopped["id"]
        # Cancelled part-way: slow calls, cancelled as soon as it runs.
        fake.latency = 1.0
        response = api.post(f"/projects/{pid}/runs", json={"force_fresh": True})
        run_id = response.json()["id"]
        _wait(
            lambda: api.get(f"/projects/{pid}/runs/{run_id}").json(),
            lambda r: r["counts"]["running"] > 0,
        )
        assert api.post(f"/projects/{pid}/runs/{run_id}/cancel").status_code == 200
        cancelled = _wait(
            lambda: api.get(f"/projects/{pid}/runs/{run_id}").json(),
            lambda r: r["counts"]["running"] == 0 and r["status"] == "cancelled",
        )
        assert cancelled["counts"]["cancelled"] > 0, cancelled
        runs["cancelled"] = run_id
        fake.latency = 0.0
        # Failed: the LLM server answers 500 to everything.
        fake.inject("500", times=1000)
        failed = finish(api, {})
        assert failed["status"] == "failed", failed
        runs["failed"] = failed["id"]
        fake.reset()
        # A webhook whose receiver is nowhere: its delivery fails.
        hook = api.post(
            f"/projects/{pid}/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "events": ["run.finished"]},
        )
        assert hook.status_code == 201, hook.text
    return {
        "pid": pid,
        "runs": runs,
        "documents": {d["filename"]: d["id"] for d in arranged["documents"]},
        "claims": arrange_claims(server),
    }


@pytest.fixture(scope="module")
def arranged(live_server: LiveServer) -> dict[str, Any]:
    return _arrange(live_server)


class Audit:
    """Visits pages, runs axe-core on each state, and keeps what it found."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.visited: set[str] = set()
        self.found: list[str] = []
        self.checked = 0

    def check(self, route: str, state: str, ready: Callable[[], None] | None = None) -> None:
        if ready:
            ready()
        self.visited.add(route)
        self.checked += 1
        failing = [v for v in axe_violations(self.page) if v["impact"] in FAILING_IMPACTS]
        if failing:
            self.found.append(f"{route} — {state}:\n{describe(failing)}")

    def goto(self, hash_: str, heading: str | re.Pattern[str]) -> None:
        self.page.goto(f"/{hash_}")
        self.page.get_by_role("heading", name=heading).first.wait_for()


@at_both_widths
def test_every_page_has_no_serious_accessibility_violation(
    page: Page, live_server: LiveServer, arranged: dict[str, Any], viewport_width: int
) -> None:
    from playwright.sync_api import expect

    pid = arranged["pid"]
    runs = arranged["runs"]
    audit = Audit(page)
    project = "/projects/{id}"

    # Signing in, and a wrong password's message.
    page.goto("/#/signin")
    page.get_by_role("heading", name="Sign in to Quarry").wait_for()
    audit.check("/signin", "the form")
    page.get_by_label("Email").fill("reviewer@example.org")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    audit.check("/signin", "a wrong password")
    page.goto("/#/set-password?token=not-a-real-one")
    page.get_by_role("heading", name="Set your password").wait_for()
    audit.check("/set-password", "the form of an invitation link")
    sign_in(page)

    # Projects, and a dialog on them.
    audit.check("/projects", "the list")
    page.goto("/#/")
    page.get_by_role("heading", name="Projects", level=1).wait_for()
    audit.check("/", "the list")
    page.get_by_role("button", name="Rename Accessibility").first.click()
    expect(page.get_by_role("dialog")).to_be_visible()
    audit.check("/projects", "the rename dialog")
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)

    # The codebook, a variable's prompt, the variable editor, a delete confirmation.
    audit.goto(f"#/projects/{pid}/codebook", "Codebook")
    expect(page.locator("li.variable")).to_have_count(len(CODEBOOK))
    audit.check(f"{project}/codebook", "the variables")
    page.get_by_role("button", name="Show prompt").first.click()
    expect(page.locator("pre.prompt").first).to_be_visible()
    audit.check(f"{project}/codebook", "a prompt shown")
    page.get_by_role("button", name="Edit design").click()
    expect(page.locator("form.variable-form")).to_be_visible()
    audit.check(f"{project}/codebook", "the variable editor")
    page.locator("form.variable-form").get_by_role("button", name="Cancel").click()
    page.get_by_role("button", name="Add variable").click()
    form = page.locator("form.variable-form")
    form.get_by_role("button", name="Save variable").click()
    expect(form.locator(".field-error:not([hidden])").first).to_be_visible()
    audit.check(f"{project}/codebook", "a new variable with its errors")
    form.get_by_role("button", name="Cancel").click()
    page.get_by_role("button", name="Delete dose").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    audit.check(f"{project}/codebook", "the delete confirmation")
    page.keyboard.press("Escape")

    # Documents, an upload, a document's text.
    audit.goto(f"#/projects/{pid}/documents", "Documents")
    # (The project is shared by both widths: each uploads a note of its own.)
    expect(page.locator("tr[data-document-id]").first).to_be_visible()
    note = f"DOC-C: a note read at {viewport_width} px.\n".encode()
    page.get_by_label("Choose files to upload").set_input_files(
        [
            {"name": f"c-{viewport_width}.txt", "mimeType": "text/plain", "buffer": note},
            {"name": "empty.txt", "mimeType": "text/plain", "buffer": b""},
        ]
    )
    expect(page.locator(".upload-summary")).to_contain_text("Uploaded 2 of 2")
    audit.check(f"{project}/documents", "the list and two uploads")
    audit.goto(f"#/projects/{pid}/documents/{arranged['documents']['p.pdf']}", "p.pdf")
    expect(page.locator("pre.doctext")).to_contain_text("page one")
    audit.check(f"{project}/documents/{{id}}", "a document's text")

    # Runs: the start form and the list; each kind of run.
    audit.goto(f"#/projects/{pid}/runs", "Runs")
    expect(page.locator("tr[data-run-id]")).to_have_count(4)
    expect(page.get_by_role("button", name="Start run")).to_be_enabled()
    audit.check(f"{project}/runs", "the start form and four runs")
    for kind, words in [
        ("finished", "Completed with errors"),
        ("failed", "Failed"),
        ("cancelled", "Cancelled"),
        ("budget", "Completed with errors"),
    ]:
        audit.goto(f"#/projects/{pid}/runs/{runs[kind]}", re.compile("^Run of"))
        expect(page.locator(".run-status")).to_contain_text(words)
        if kind == "budget":
            expect(page.get_by_role("button", name="Raise budget and go on")).to_be_visible()
        if kind in ("finished", "failed"):
            expect(page.locator(".failures")).to_contain_text("failed")
        audit.check(f"{project}/runs/{{id}}", f"a {kind} run")

    # Results: the grid, the panel on a text and on a PDF, the correction form.
    audit.goto(f"#/projects/{pid}/results", "Results")
    grid = page.get_by_role("grid")
    expect(grid.locator('td[data-document="b.txt"][data-variable="design"]')).to_be_visible()
    audit.check(f"{project}/results", "the grid")
    grid.locator('td[data-document="b.txt"][data-variable="design"]').click()
    panel = page.locator(".review-panel")
    expect(panel.locator("pre.doctext")).to_be_visible()
    audit.check(f"{project}/results", "the panel on an ungrounded value")
    grid.locator('td[data-document="p.pdf"][data-variable="dose"]').click()
    expect(panel.locator("img.page-image")).to_be_visible()
    audit.check(f"{project}/results", "the panel on a page image")
    page.keyboard.press("c")
    expect(panel.locator("form.correct-form")).to_be_visible()
    audit.check(f"{project}/results", "the correction form")

    # Findings and reference-list matches.
    audit.goto(f"#/projects/{arranged['claims']}/results", "Results")
    expect(page.locator("details.findings")).to_be_visible()
    audit.check(f"{project}/results", "findings")
    page.get_by_role("grid").locator(
        'td[data-document="garcia.txt"][data-variable="client_name"]'
    ).click()
    expect(panel).to_contain_text("Reference row")
    audit.check(f"{project}/results", "the panel on an ambiguous match")

    # Cases: each with its documents, combined values and open findings.
    audit.goto(f"#/projects/{arranged['claims']}/cases", "Cases")
    expect(page.locator("section.case").first).to_be_visible()
    audit.check(f"{project}/cases", "cases with a finding")

    # Review: settings, assignments, conflicts and agreement.
    audit.goto(f"#/projects/{pid}/review", "Review")
    audit.check(f"{project}/review", "review settings and agreement")

    # Export.
    audit.goto(f"#/projects/{pid}/export", "Export")
    audit.check(f"{project}/export", "the downloads")

    # Webhooks, a secret shown once, a delivery log.
    audit.goto(f"#/projects/{pid}/webhooks", "Webhooks")
    expect(page.locator("tr[data-webhook]").first).to_be_visible()
    audit.check(f"{project}/webhooks", "the list and form")
    page.get_by_label("URL").fill(f"http://127.0.0.1:9/other-{viewport_width}")
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("code.secret")).to_be_visible()
    audit.check(f"{project}/webhooks", "a new secret")
    page.get_by_role("button", name="Deliveries").first.click()
    expect(page.locator(".delivery-log")).to_be_visible()
    audit.check(f"{project}/webhooks", "a delivery log")

    # Teams: the project's members, the administrators' users page, one's own password.
    audit.goto(f"#/projects/{pid}/members", "Members")
    audit.check(f"{project}/members", "the members and the form")
    audit.goto("#/users", "Users")
    audit.check("/users", "the users and the form")
    audit.goto("#/account/password", "Change password")
    audit.check("/account/password", "the form")

    # A page that does not exist.
    page.goto("/#/nowhere")
    page.get_by_role("heading", name="Page not found").wait_for()
    audit.check("not found", "an unknown route")

    assert not audit.found, (
        f"axe-core {axe_version()}: serious or critical violations on "
        f"{len(audit.found)} of {audit.checked} page states:\n\n" + "\n\n".join(audit.found)
    )
    missed = app_routes() - audit.visited
    assert not missed, f"routes of app.js this test does not visit: {sorted(missed)}"


# -- the keyboard -------------------------------------------------------------------------------

# One Tab stop: remember it, and whether its focus ring shows (an outline of 2 px or more in a
# colour that is not transparent: every control's :focus-visible style gives 3 px).
_TAB_STOP = """() => {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return null;
  (window.__tabStops ||= new Set()).add(el);
  const style = getComputedStyle(el);
  const ring = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2
    && !/^rgba\\(.*,\\s*0\\)$/.test(style.outlineColor) && style.outlineColor !== "transparent";
  const name = (el.getAttribute("aria-label") || el.textContent || el.id || "").trim()
    .replace(/\\s+/g, " ").slice(0, 40);
  return { what: `${el.tagName.toLowerCase()} "${name}"`, ring };
}"""
# Every control a person could use that Tab never reached: enabled, shown, in the tab order
# (a grid's other cells, tabindex -1, are reached with the arrow keys), and for radio buttons
# the checked one of each group (the arrow keys choose within a group).
_UNREACHED = """() => {
  const stops = window.__tabStops || new Set();
  const missed = [];
  for (const el of document.querySelectorAll(
    "a[href], button, input, select, textarea, summary, [tabindex]")) {
    if (stops.has(el) || el.tabIndex < 0 || el.disabled || el.closest("[inert]")) continue;
    if (!el.checkVisibility({ visibilityProperty: true })) continue;
    if (el.type === "radio" && !el.checked && el.form
      && el.form.querySelector(`input[type=radio][name="${el.name}"]:checked`)) continue;
    const name = (el.getAttribute("aria-label") || el.textContent || el.id || "").trim()
      .replace(/\\s+/g, " ").slice(0, 40);
    missed.push(`${el.tagName.toLowerCase()} "${name}"`);
  }
  window.__tabStops = new Set();
  return missed;
}"""


def tab_through(page: Page, limit: int = 400) -> tuple[list[str], list[str]]:
    """Tab once round the page, from the skip link back to it. Returns the stops whose focus
    did not show, and the controls Tab never reached."""
    # The view has rendered and put the focus where it goes (on its heading).
    page.locator("main:not([aria-busy])").wait_for(state="attached")
    page.evaluate("() => { window.__tabStops = new Set(); }")
    # Focused by a script the skip link shows no ring (there was no keyboard use); reached by
    # Tab at the end of the round it must.
    page.locator("#skip-link").focus()
    hidden: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        stop = page.evaluate(_TAB_STOP)
        if stop is None:  # the document itself, between the last control and the first
            continue
        if not stop["ring"]:
            hidden.append(stop["what"])
        if page.evaluate("() => document.activeElement.id === 'skip-link'"):
            break
    else:
        raise AssertionError(f"Tab did not come round to the skip link in {limit} stops")
    return hidden, page.evaluate(_UNREACHED)


def test_the_tab_walk_finds_a_control_without_a_focus_ring(page: Page) -> None:
    page.goto("/#/signin")
    page.get_by_role("heading", name="Sign in to Quarry").wait_for()
    page.evaluate(
        """() => {
          const button = document.createElement("button");
          button.textContent = "No ring";
          button.style.outline = "none";
          document.getElementById("main").append(button);
        }"""
    )
    hidden, unreached = tab_through(page)
    assert hidden == ['button "No ring"'] and unreached == []


@at_both_widths
def test_every_control_is_reached_by_tab_and_shows_its_focus(
    page: Page, live_server: LiveServer, arranged: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    pid = arranged["pid"]
    problems: list[str] = []

    def walk(state: str) -> None:
        hidden, unreached = tab_through(page)
        if hidden:
            problems.append(f"{state}: no visible focus on {hidden}")
        if unreached:
            problems.append(f"{state}: Tab never reaches {unreached}")

    page.goto("/#/signin")
    page.get_by_role("heading", name="Sign in to Quarry").wait_for()
    walk("sign-in")
    sign_in(page)
    walk("projects")

    page.goto(f"/#/projects/{pid}/codebook")
    expect(page.locator("li.variable")).to_have_count(len(CODEBOOK))
    page.get_by_role("button", name="Show prompt").first.click()
    page.get_by_role("button", name="Add variable").click()
    page.locator("form.variable-form").get_by_label("Type", exact=True).select_option("category")
    walk("codebook, a prompt shown and the variable editor open")

    page.goto(f"/#/projects/{pid}/documents")
    expect(page.locator("tr[data-document-id]").first).to_be_visible()
    walk("documents")
    page.goto(f"/#/projects/{pid}/documents/{arranged['documents']['p.pdf']}")
    expect(page.locator("pre.doctext")).to_be_visible()
    walk("a document's text")

    page.goto(f"/#/projects/{pid}/runs")
    expect(page.get_by_role("button", name="Start run")).to_be_enabled()
    page.get_by_label("Only some documents").check()
    walk("runs, some documents chosen")
    page.goto(f"/#/projects/{pid}/runs/{arranged['runs']['budget']}")
    expect(page.get_by_role("button", name="Raise budget and go on")).to_be_visible()
    walk("a run stopped by its budget")

    page.goto(f"/#/projects/{pid}/results")
    page.get_by_role("grid").locator('td[data-document="p.pdf"][data-variable="dose"]').click()
    expect(page.locator(".review-panel img.page-image")).to_be_visible()
    walk("results, the panel on a page image")

    page.goto(f"/#/projects/{pid}/export")
    page.get_by_role("heading", name="Export").wait_for()
    walk("export")
    page.goto(f"/#/projects/{pid}/webhooks")
    page.get_by_role("button", name="Deliveries").first.click()
    expect(page.locator(".delivery-log")).to_be_visible()
    walk("webhooks, a delivery log open")

    assert not problems, "\n".join(problems)


def test_a_dialog_keeps_the_focus_and_gives_it_back(
    page: Page, live_server: LiveServer, arranged: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    sign_in(page)
    rename = page.get_by_role("button", name="Rename Accessibility").first
    rename.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Rename project")
    expect(dialog).to_have_attribute("aria-modal", "true")
    expect(dialog.get_by_label("New name")).to_be_focused()
    inside = "() => !!document.activeElement.closest('dialog')"
    for key in ["Tab"] * 5 + ["Shift+Tab"] * 7:
        page.keyboard.press(key)
        assert page.evaluate(inside), f"{key} took the focus out of the dialog"
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(rename).to_be_focused()

    # A confirmation starts on its safe answer and gives the focus back when answered.
    page.goto(f"/#/projects/{arranged['pid']}/codebook")
    delete = page.get_by_role("button", name="Delete dose")
    delete.click()
    confirm = page.get_by_role("dialog", name="Delete the variable “dose”?")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Enter")
    expect(confirm).to_have_count(0)
    expect(delete).to_be_focused()
