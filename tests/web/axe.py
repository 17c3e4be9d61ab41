"""axe-core in the browser tests: inject it into a page and fail on serious or critical
violations, listing each one's rule, impact, help and the elements it found.

axe.min.js comes from the `axe-playwright-python` wheel (requirements-dev.txt), which bundles
it as package data: `make setup` installs it with the rest, so the tests need neither Node nor a
download at run time. Only the file is used, not the wrapper's API. The page's strict
Content-Security-Policy refuses inline scripts, so the file is served as a same-origin script:
the tab answers AXE_PATH itself (Playwright's routing) and `add_script_tag` loads it from there.
"""

from __future__ import annotations

import weakref
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

#: Never served by the app: the tab answers it with axe.min.js.
AXE_PATH = "/__test__/axe.min.js"
#: The impacts a page must have none of (issue 15).
FAILING_IMPACTS = ("serious", "critical")

_routed: weakref.WeakSet[Page] = weakref.WeakSet()

# Each violation as plain data: the rule, its impact and help, and where it was found.
_RUN_AXE = """async () => {
  const results = await axe.run(document, { resultTypes: ["violations"] });
  return results.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    helpUrl: v.helpUrl,
    nodes: v.nodes.map((n) => ({
      target: n.target.map(String).join(" "),
      impact: n.impact,
      summary: n.failureSummary || "",
    })),
  }));
}"""


@cache
def axe_script() -> bytes:
    """axe.min.js as bundled by the axe-playwright-python wheel."""
    source = resources.files("axe_playwright_python").joinpath("axe.min.js").read_bytes()
    assert source.startswith(b"/*! axe v4."), "axe-playwright-python no longer bundles axe 4"
    return source


def axe_version() -> str:
    """The bundled axe-core's version, e.g. "4.12.1"."""
    return axe_script()[len(b"/*! axe v") :].split(maxsplit=1)[0].decode()


def _serve_axe(route: Route) -> None:
    route.fulfill(status=200, body=axe_script(), content_type="text/javascript")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Every violation axe-core finds on the page as it is now (all impacts)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        if page not in _routed:
            page.route(f"**{AXE_PATH}", _serve_axe)
            _routed.add(page)
        page.add_script_tag(url=AXE_PATH)
    # A view that is still loading says so (aria-busy); check what a person then sees.
    page.locator("main:not([aria-busy])").wait_for(state="attached")
    violations: list[dict[str, Any]] = page.evaluate(_RUN_AXE)
    return violations


def describe(violations: list[dict[str, Any]]) -> str:
    """The violations as lines a developer can act on."""
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} <{v['helpUrl']}>")
        for node in v["nodes"]:
            summary = " ".join(node["summary"].split())
            lines.append(f"    {node['target']}: {summary}")
    return "\n".join(lines)


def assert_accessible(page: Page, where: str) -> None:
    """Fail when axe-core finds a serious or critical violation on the page as it is now."""
    failing = [v for v in axe_violations(page) if v["impact"] in FAILING_IMPACTS]
    assert not failing, (
        f"axe-core {axe_version()} found {len(failing)} serious or critical violation(s) on "
        f"{where} ({page.url}, {page.viewport_size}):\n{describe(failing)}"
    )
