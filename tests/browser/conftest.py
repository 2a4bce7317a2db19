"""Browser fixtures: the app served on 127.0.0.1 by a real server, and Chromium driven by Playwright.

The live server shares the suite's database with the ``app`` fixture, so a test builds its
schools and people with the usual factories and then looks at them through a browser. Nothing
here reaches beyond 127.0.0.1: Chromium is Debian's, launched with its network chatter off.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app import create_app
from tests.browser.serving import serve_on_loopback
from tests.conftest import make_config, require_service

try:
    from playwright.sync_api import Browser, BrowserContext, Playwright, sync_playwright
except ImportError:  # pragma: no cover - reported by test_environment through chromium_path
    sync_playwright = None
    # The other modules import Playwright at the top; without it only test_environment.py is
    # collected, and it skips (or fails under CI=true) through require_service.
    collect_ignore_glob = [
        path.name
        for path in Path(__file__).parent.glob("*.py")
        if path.name not in {"conftest.py", "__init__.py", "test_environment.py"}
    ]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Playwright's default is 30 s; a local page that takes longer is a failure worth seeing soon.
TIMEOUT_MS = 10_000


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, or a skip (a failure under CI=true) when it or Playwright is missing."""
    available = sync_playwright is not None and os.access(CHROMIUM, os.X_OK)
    require_service("Chromium", available, "apt-get install chromium (and pip install playwright)")
    return CHROMIUM


@pytest.fixture(scope="session")
def launch_options(chromium_path) -> dict:
    """Keyword arguments for every Chromium launch (Playwright's own download is never used)."""
    return {"executable_path": chromium_path, "args": list(CHROMIUM_ARGS), "headless": True}


@pytest.fixture(scope="session")
def playwright(chromium_path) -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright, launch_options) -> Iterator[Browser]:
    """One Chromium for the whole run; each test gets its own context (cookies, storage)."""
    browser = playwright.chromium.launch(**launch_options)
    yield browser
    browser.close()


@pytest.fixture
def live_server(app, database_url) -> Iterator[str]:
    """The app served over HTTP on 127.0.0.1:<free port>; yields its base URL.

    Depends on ``app`` so the server stops before ``app`` empties the tables. SERVER_NAME is
    cleared: TestConfig's "localhost" would make Flask refuse requests for 127.0.0.1:PORT.
    """
    server_app = create_app(make_config(database_url, SERVER_NAME=None))
    with serve_on_loopback(server_app) as base_url:
        yield base_url


@pytest.fixture(autouse=True, scope="session")
def _quiet_request_log():
    """Werkzeug logs every request of the live server; keep test output readable."""
    logger = logging.getLogger("werkzeug")
    previous = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(previous)


@pytest.fixture
def new_context(browser, live_server) -> Iterator[Callable[..., BrowserContext]]:
    """new_context(**options) -> a fresh browser context on the live server, closed after the test.

    Closed before the live server stops (it depends on it), so no request is left in flight.
    """
    contexts: list[BrowserContext] = []

    def make(**options) -> BrowserContext:
        context = browser.new_context(base_url=live_server, **options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def context(new_context) -> BrowserContext:
    """A fresh browser context (no cookies) for this test."""
    return new_context()


def write_cookie_blocking_profile(user_data_dir: Path) -> None:
    """A Chromium profile whose content settings block every cookie (Settings > Cookies > Block)."""
    default = user_data_dir / "Default"
    default.mkdir(parents=True, exist_ok=True)
    preferences = {"profile": {"default_content_setting_values": {"cookies": 2}}}
    (default / "Preferences").write_text(json.dumps(preferences))


@pytest.fixture
def cookieless_context(
    playwright, launch_options, live_server, tmp_path
) -> Iterator[Callable[..., BrowserContext]]:
    """cookieless_context(**options) -> a separate Chromium whose profile refuses all cookies.

    The profile's Preferences are written before launch, as Settings > Cookies > "Block" would.
    (Rewriting responses with page.route is no substitute: route.fetch() keeps cookies in
    Playwright's own jar and sends them back, so the server would still see a session.)
    """
    contexts: list[BrowserContext] = []

    def make(**options) -> BrowserContext:
        profile = tmp_path / f"chromium-profile-{len(contexts)}"
        write_cookie_blocking_profile(profile)
        context = playwright.chromium.launch_persistent_context(
            str(profile), base_url=live_server, **launch_options, **options
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


AXE_SCRIPT = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's source (installed by `npm ci` from package-lock.json), to evaluate in a page.

    Evaluated through Playwright (page.evaluate), which the page's CSP does not govern: a
    <script> tag with inline content would be refused by script-src 'self', as it should be.
    """
    require_service("axe-core", AXE_SCRIPT.is_file(), "run `npm ci` at the repository root (needs node)")
    return AXE_SCRIPT.read_text(encoding="utf-8")
