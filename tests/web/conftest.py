"""Browser tests of the web UI: the real app served by uvicorn on a free port (with the fake LLM
and a strict Content-Security-Policy), driven by Playwright in Debian's headless Chromium.

Chromium is not downloaded by Playwright: the system one at /usr/bin/chromium is used (override
with QUARRY_TEST_CHROMIUM). Without it, or without the playwright package, the tests are
skipped — except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quarry.app import create_app
from quarry.settings import Settings
from tests.conftest import make_settings
from tests.support.api import PASSWORD, create_schema
from tests.support.fake_llm import FakeLLM

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("QUARRY_TEST_CHROMIUM", "/usr/bin/chromium"))
EMAIL = "reviewer@example.org"
# The policy a production deployment sends; the UI must work under it (no inline anything).
CSP = "default-src 'self'"
#: The widths the UI is tested at (issue 15): a small laptop and a desktop. `page` opens its tab
#: at `viewport_width`; a test runs at both with `@at_both_widths`.
WIDTHS = (1024, 1440)
HEIGHTS = {1024: 768, 1440: 900}
at_both_widths = pytest.mark.parametrize("viewport_width", WIDTHS, ids=[f"{w}px" for w in WIDTHS])
#: A price for the fake model, so a run can have a budget (USD per million tokens: high enough
#: that a few calls cost cents).
PRICES = {"fake-model": {"input": 1000.0, "output": 4000.0}}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: browser tests are required)", pytrace=False)
    pytest.skip(reason)


class StrictCSP:
    """ASGI middleware adding the strict policy to every HTTP answer that has none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = CSP
            await send(message)

        await self.app(scope, receive, send_with_policy)


@dataclass
class LiveServer:
    base_url: str
    fake: FakeLLM
    settings: Settings

    def api(self) -> httpx.Client:
        """A client of the live API signed in as the test user (for arranging data quickly)."""
        token = httpx.post(
            f"{self.base_url}/api/v1/auth/token",
            data={"username": EMAIL, "password": PASSWORD},
            timeout=30,
        )
        assert token.status_code == 200, token.text
        return httpx.Client(
            base_url=f"{self.base_url}/api/v1",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=30,
        )


@pytest.fixture(scope="package")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app on 127.0.0.1:<free port>, in a background thread, with the fake LLM.

    One for all the browser tests (starting it costs a second): each test works in projects
    of its own, and `page` gives each a fake LLM without the previous test's scripts.
    """
    tmp_path = tmp_path_factory.mktemp("web")
    fake = FakeLLM().start()
    overrides: dict[str, object] = {
        "admin_email": EMAIL,
        "admin_password": SecretStr(PASSWORD),
        "log_level": "ERROR",
        # Two LLM calls at a time, so a run with some latency visibly progresses.
        "llm_concurrency": 2,
        # Webhook receivers of the tests are on 127.0.0.1; quick retries, given up in 2 s.
        "webhook_allow_private": True,
        "webhook_poll_seconds": 0.1,
        "webhook_backoff_seconds": 0.1,
        "webhook_retry_seconds": 2.0,
        "llm_prices": PRICES,
    }
    # The tests sign in more often than a person would; the sign-in limit is not under test.
    for limit in ("login_attempts_per_minute", "login_ip_attempts_per_minute"):
        if limit in Settings.model_fields:
            overrides[limit] = 0
    settings = make_settings(tmp_path, fake, **overrides)
    # Playwright's sync API keeps an event loop registered in this thread; use another one.
    schema = threading.Thread(target=asyncio.run, args=(create_schema(settings.database_url),))
    schema.start()
    schema.join()
    app = StrictCSP(create_app(settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="quarry-ui-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            fake.stop()
            pytest.fail("the app did not start", pytrace=False)
        time.sleep(0.05)
    try:
        yield LiveServer(base_url=f"http://127.0.0.1:{port}", fake=fake, settings=settings)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        fake.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for all the browser tests (a launch costs a second or two); each test gets
    a fresh context of its own (`page`), so no cookie or storage crosses between tests.

    Package scope, not session: Playwright's sync API keeps an event loop in this thread while
    it runs, and no async test could run after the browser tests until it stops. Pytest ends
    package fixtures as soon as the next test is outside tests/web/, whatever the order."""
    if not CHROMIUM.exists():
        _unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def viewport_width() -> int:
    """The width `page` opens at; `@at_both_widths` parametrizes it."""
    return 1440


@pytest.fixture
def page(browser: Browser, live_server: LiveServer, viewport_width: int) -> Iterator[Page]:
    """A fresh browser tab (own sessionStorage) that fails the test on script errors and on
    anything the Content-Security-Policy refused."""
    # The server is shared: what an earlier test scripted must not answer this one's calls.
    live_server.fake.reset()
    live_server.fake.latency = 0.0
    context = browser.new_context(
        base_url=live_server.base_url,
        accept_downloads=True,
        viewport={"width": viewport_width, "height": HEIGHTS.get(viewport_width, 900)},
    )
    context.set_default_timeout(15_000)
    tab = context.new_page()
    problems: list[str] = []

    def on_console(message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or "Refused to" in text:
            problems.append(f"CSP: {text}")

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    try:
        yield tab
    finally:
        context.close()
    assert not problems, "\n".join(problems)


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (artifacts/screenshots/<name>.png)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, email: str = EMAIL, password: str = PASSWORD) -> None:
    """Sign in through the form, from wherever the app put us."""
    page.goto("/#/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Projects", level=1).wait_for()


def project_tab(page: Page, name: str) -> Locator:
    """A link of the project's section tabs (Codebook, Documents, Runs, Results, Export)."""
    tabs = page.get_by_role("navigation", name="Project sections")
    return tabs.get_by_role("link", name=name, exact=True)


def add_variable(
    page: Page,
    *,
    label: str,
    description: str,
    type_label: str,
    allowed: Sequence[str] = (),
    unit: str | None = None,
) -> None:
    """Add a variable through the codebook form (the name is derived from the label)."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Add variable").click()
    form = page.locator("form.variable-form")
    form.get_by_label("Label", exact=True).fill(label)
    form.get_by_label("What to extract", exact=True).fill(description)
    form.get_by_label("Type", exact=True).select_option(label=type_label)
    if unit is not None:
        form.get_by_label("Unit (optional)", exact=True).fill(unit)
    for number, value in enumerate(allowed, start=1):
        field = form.get_by_label(f"Allowed value {number}", exact=True)
        if field.count() == 0:
            form.get_by_role("button", name="Add value").click()
        field.fill(value)
    form.get_by_role("button", name="Save variable").click()
    expect(form).to_have_count(0)


def arrange_project(
    server: LiveServer,
    name: str,
    variables: Sequence[dict[str, Any]] = (),
    files: Sequence[tuple[str, bytes, str]] = (),
    *,
    run: bool = False,
) -> dict[str, Any]:
    """Set a project up through the API (faster than the UI when the UI is not under test).

    Returns {"project", "variables", "documents", "run"}; waits for parsing and the run.
    """
    with server.api() as api:
        project = api.post("/projects", json={"name": name}).json()
        pid = project["id"]
        created = []
        for spec in variables:
            response = api.post(f"/projects/{pid}/variables", json=spec)
            assert response.status_code == 201, response.text
            created.append(response.json())
        documents: list[dict[str, Any]] = []
        if files:
            response = api.post(
                f"/projects/{pid}/documents",
                files=[("files", (fname, data, ctype)) for fname, data, ctype in files],
            )
            assert response.status_code == 201, response.text
            documents = _wait(
                lambda: api.get(f"/projects/{pid}/documents").json()["items"],
                lambda items: all(d["status"] in ("ready", "failed") for d in items),
            )
        finished = None
        if run:
            response = api.post(f"/projects/{pid}/runs", json={})
            assert response.status_code == 202, response.text
            run_id = response.json()["id"]
            finished = _wait(
                lambda: api.get(f"/projects/{pid}/runs/{run_id}").json(),
                lambda r: r["status"] not in ("preparing", "queued", "running"),
            )
    return {"project": project, "variables": created, "documents": documents, "run": finished}


def _wait(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still waiting: {value}"
        time.sleep(0.1)
