"""Results-grid benchmark (issue 15, item 2 "Grid at scale"): the review grid of a project of
1,000 documents × 30 variables, opened in Chromium.

Run by hand: `.venv/bin/python benchmarks/grid.py [--documents 1000] [--variables 30]
[--postgres] [--page-sizes 25,50] [--width 1440] [--repeat 3]`. It prints figures; record
them, the machine and its load (`uptime`) in benchmarks/RESULTS.md.

The project is written straight into the database by the export benchmark's set-based
INSERT … SELECT (benchmarks/exports.py `build_project`: mostly answered cells, some "not
stated", failed, low-confidence and ungrounded ones, an older superseded run on a tenth of
the cells, reviews on a twentieth) — no LLM. The app is then served by uvicorn on a free port
(one process: the API and the SQLite reads, as `make run` has it) and the results page is
opened in the system Chromium (/usr/bin/chromium, headless) through Playwright.

Measured, for each rows-per-page setting:

- API: GET …/results alone (httpx, median of --repeat) for the first page, a value sort,
  a review + flag filter, a value search and a later page (with its counts, and without them
  as the grid asks for it: then only that page's cells are read) — the server's share;
- first render: a full page load (reload) of the results page, from navigation start to the
  first frame after the grid's rows are in the DOM; beside it the /results request's time
  (Resource Timing) and what the browser did after its answer arrived;
- the longest main-thread task while scrolling through the grid (wheel events, down then
  across), while changing page (Next), filtering (a flag chip) and sorting (a column header):
  from a Chromium trace (every `RunTask` of the page's renderer main thread, so tasks under
  50 ms count too; with the thread time each took, since on a loaded machine a task's wall
  time includes the time other processes — the app's own server among them, on the same two
  cores — had the processor), and the `longtask` entries (> 50 ms) a PerformanceObserver saw.

Target (the issue): no task over 100 ms on the main thread while scrolling.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "backend"))

from tests.conftest import make_settings
from tests.support.api import PASSWORD, add_variable, create_project, create_schema, sign_up
from tests.support.postgres import temporary_postgres_database

from quarry.app import create_app
from quarry.settings import Settings

CHROMIUM = Path(os.environ.get("QUARRY_TEST_CHROMIUM", "/usr/bin/chromium"))
EMAIL = "grid-bench@example.org"


def _export_benchmark() -> Any:
    """benchmarks/exports.py, for its project builder (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "export_benchmark", ROOT / "benchmarks/exports.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["export_benchmark"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# The project


async def seed(settings: Settings, documents: int, variables: int) -> tuple[str, float]:
    """The project of `documents` × `variables` settled cells; its id and the set-up seconds."""
    bench = _export_benchmark()
    await create_schema(settings.database_url)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as c,
    ):
        headers = await sign_up(app, c, EMAIL)
        project = await create_project(c, headers, "Grid at scale")
        for i in range(variables):
            kind = bench.VARIABLE_TYPES[i % len(bench.VARIABLE_TYPES)]
            extra: dict[str, Any] = {}
            if kind in ("category", "multi_category"):
                extra["allowed_values"] = ["RCT", "cohort", "a", "b"]
            await add_variable(
                c, headers, project["id"], name=f"{kind}_{i}", description=f"The {kind}", type=kind,
                **extra,
            )  # fmt: skip
        engine = create_async_engine(settings.database_url)
        started = time.perf_counter()
        await bench.build_project(engine, uuid.UUID(project["id"]), documents)
        await engine.dispose()
        return str(project["id"]), time.perf_counter() - started


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The app on 127.0.0.1:<free port> in a thread of its own; its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


# ---------------------------------------------------------------------------------------------
# The API alone


def api_timings(base: str, pid: str, page_size: int, repeat: int) -> dict[str, float]:
    """Median wall seconds of GET …/results for a few queries."""
    with httpx.Client(base_url=f"{base}/api/v1", timeout=120) as client:
        token = client.post("/auth/token", data={"username": EMAIL, "password": PASSWORD})
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        variables = client.get(f"/projects/{pid}/variables").json()["items"]
        queries: dict[str, dict[str, Any]] = {
            "first page": {},
            "value sort": {"sort": "value", "sort_variable_id": variables[1]["id"]},
            "unreviewed + low confidence": {"review": "unreviewed", "flag": "low_confidence"},
            "value search": {"value": "findings of document 12"},
            "page 20": {"offset": 19 * page_size},
            # What the grid asks for a later page of a query it has the counts of.
            "page 20, counts=false": {"offset": 19 * page_size, "counts": "false"},
        }
        timings: dict[str, float] = {}
        for name, params in queries.items():
            samples = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = client.get(
                    f"/projects/{pid}/results", params={"limit": page_size, **params}
                )
                samples.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
            timings[name] = statistics.median(samples)
    return timings


# ---------------------------------------------------------------------------------------------
# The browser

# Installed before any script of the page: long tasks as a PerformanceObserver sees them, and
# the first frame after the grid's rows are in the DOM.
INIT_SCRIPT = """
window.__longtasks = [];
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longtasks.push({ start: e.startTime, duration: e.duration });
  }).observe({ type: "longtask", buffered: true });
} catch (e) {}
window.__firstGrid = null;
new MutationObserver((records, observer) => {
  if (window.__firstGrid || !document.querySelector("table.results-grid tbody tr")) return;
  const dom = performance.now();
  observer.disconnect();
  requestAnimationFrame(() => setTimeout(() => { window.__firstGrid = { dom, frame: performance.now() }; }, 0));
}).observe(document, { childList: true, subtree: true });
"""

#: What a trace needs to show every task of the renderer's main thread.
TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "toplevel"]


@dataclass
class Phase:
    name: str
    wall_ms: float
    longest_task_ms: float
    #: The longest task's own thread time, and the most thread time any task took.
    longest_task_cpu_ms: float
    most_cpu_ms: float
    tasks_over_50: int
    longtask_entries: list[float]


def longest_tasks(trace: bytes) -> list[tuple[float, float]]:
    """(wall, thread) milliseconds of each main-thread task of the busiest renderer in a
    Chromium trace: how long it held the main thread, and how much of that the thread ran
    (on a loaded machine the rest went to other processes)."""
    events = json.loads(trace)
    events = events["traceEvents"] if isinstance(events, dict) else events
    mains = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
        and e.get("args", {}).get("name") == "CrRendererMain"
    }  # fmt: skip
    by_thread: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for e in events:
        if e.get("name") == "RunTask" and e.get("ph") == "X" and (e["pid"], e["tid"]) in mains:
            wall = e.get("dur", 0) / 1000
            by_thread.setdefault((e["pid"], e["tid"]), []).append(
                (wall, e.get("tdur", e.get("dur", 0)) / 1000)
            )
    if not by_thread:
        return []
    return max(by_thread.values(), key=lambda tasks: sum(wall for wall, _ in tasks))


def browse(base: str, pid: str, page_size: int, width: int) -> list[Phase]:
    from playwright.sync_api import sync_playwright

    phases: list[Phase] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(base_url=base, viewport={"width": width, "height": 900})
        context.set_default_timeout(120_000)
        context.add_init_script(INIT_SCRIPT)
        page = context.new_page()
        page.goto("/#/signin")
        page.get_by_label("Email").fill(EMAIL)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Projects", level=1).wait_for()
        page.evaluate(
            "size => localStorage.setItem('quarry.results', JSON.stringify({ pageSize: size }))",
            page_size,
        )
        results_url = f"/#/projects/{pid}/results"
        page.goto(results_url)
        page.locator("table.results-grid tbody tr").first.wait_for()  # warm: caches, the JIT

        def traced(name: str, action: Callable[[], None]) -> None:
            page.evaluate("() => { window.__longtasks = []; }")
            browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
            started = time.perf_counter()
            action()
            wall = (time.perf_counter() - started) * 1000
            tasks = longest_tasks(browser.stop_tracing())
            entries = page.evaluate("() => window.__longtasks.map(t => t.duration)")
            longest = max(tasks, default=(0.0, 0.0))
            phases.append(
                Phase(
                    name,
                    wall,
                    longest[0],
                    longest[1],
                    max((cpu for _, cpu in tasks), default=0.0),
                    sum(1 for t, _ in tasks if t > 50),
                    [round(d) for d in entries],
                )
            )

        first: dict[str, float] = {}

        def reload() -> None:
            page.reload()
            page.wait_for_function("() => window.__firstGrid !== null")
            first.update(
                page.evaluate(
                    """() => {
                      const r = performance.getEntriesByType("resource").find(e => e.name.includes("/results?"));
                      return { frame: window.__firstGrid.frame, dom: window.__firstGrid.dom,
                               request: r ? r.responseEnd - r.startTime : -1,
                               answered: r ? r.responseEnd : -1 };
                    }"""
                )
            )

        traced("full page load", reload)
        phases[-1].wall_ms = first["frame"]

        wrap = page.locator(".grid-wrap")
        box = wrap.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

        def scroll() -> None:
            for _ in range(40):
                page.mouse.wheel(0, 120)
                page.wait_for_timeout(25)
            for _ in range(30):
                page.mouse.wheel(200, 0)
                page.wait_for_timeout(25)
            for _ in range(40):
                page.mouse.wheel(0, -120)
                page.wait_for_timeout(25)
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")

        traced("scroll through the grid", scroll)

        def first_name() -> str:
            return str(page.locator("tbody th.doc-name").first.get_attribute("data-filename"))

        def changed(before: str) -> None:
            page.wait_for_function(
                "before => { const th = document.querySelector('tbody th.doc-name');"
                " return th && th.dataset.filename !== before && !document.querySelector('.grid-wrap[aria-busy]'); }",
                arg=before,
            )
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")

        def next_page() -> None:
            before = first_name()
            # CSS locators: a role locator has Playwright compute every button's name in the
            # page, on its main thread, inside the measured phase.
            page.locator("nav.pager button").last.click()
            changed(before)

        traced("page change (Next)", next_page)

        def filter_flag() -> None:
            before = first_name()
            page.locator('button.chip[data-facet="flag"][data-value="low_confidence"]').click()
            changed(before)

        traced("filter (Low confidence chip)", filter_flag)

        def sort_column() -> None:
            page.locator("thead th").nth(2).locator("button").click()
            # The header says so once the sorted page is drawn.
            page.wait_for_function(
                "() => document.querySelectorAll('thead th')[2].getAttribute('aria-sort')"
                " === 'ascending' && !document.querySelector('.grid-wrap[aria-busy]')"
            )
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")

        traced("sort (a column header)", sort_column)
        rows = page.locator("tbody tr").count()
        cells = page.locator("tbody td").count()
        browser.close()
    print(
        f"  first render: {first['frame']:.0f} ms from navigation start (GET /results "
        f"{first['request']:.0f} ms, answered at {first['answered']:.0f} ms; rows in the DOM "
        f"at {first['dom']:.0f} ms); {rows} rows, {cells} cells on a page",
        flush=True,
    )
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--variables", type=int, default=30)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--page-sizes", default="25,50", help="rows per page to measure")
    parser.add_argument("--width", type=int, default=1440, help="the browser window's width")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each API request")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"{'PostgreSQL' if args.postgres else 'SQLite'}, {args.documents:,} documents × "
        f"{args.variables} variables, window {args.width} px",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="quarry-bench-grid-") as name:
        tmp = Path(name)
        with (
            temporary_postgres_database("quarry_bench_grid")
            if args.postgres
            else _nothing(f"sqlite+aiosqlite:///{tmp / 'bench.db'}")
        ) as url:
            settings = make_settings(
                tmp,
                None,
                database_url=url,
                log_level="ERROR",
                api_requests_per_minute=0,
            )
            pid, setup = asyncio.run(seed(settings, args.documents, args.variables))
            print(f"set-up: {setup:.1f} s", flush=True)
            with serving(settings) as base:
                for size in (int(s) for s in args.page_sizes.split(",")):
                    print(f"\n{size} rows per page", flush=True)
                    timings = api_timings(base, pid, size, args.repeat)
                    print("  GET …/results (median wall ms): " + ", ".join(
                        f"{k} {v * 1000:.0f}" for k, v in timings.items()
                    ))  # fmt: skip
                    print("  | phase | wall ms | longest main-thread task ms (its CPU ms) "
                          "| most CPU in one task ms | tasks > 50 ms | longtask entries ms |")  # fmt: skip
                    print("  |---|---:|---:|---:|---:|---|")
                    for phase in browse(base, pid, size, args.width):
                        print(
                            f"  | {phase.name} | {phase.wall_ms:.0f} | {phase.longest_task_ms:.1f} "
                            f"({phase.longest_task_cpu_ms:.1f}) | {phase.most_cpu_ms:.1f} "
                            f"| {phase.tasks_over_50} | {phase.longtask_entries or '—'} |",
                            flush=True,
                        )
    load = os.getloadavg()
    print(f"\nload at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


@contextmanager
def _nothing(value: str) -> Iterator[str]:
    yield value


if __name__ == "__main__":
    main()
