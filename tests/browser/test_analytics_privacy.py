"""P5 and P8 in a real browser: with Google Analytics configured, crawl the main pages as a parent
and as staff whose names and emails are known, and check that nothing of theirs (no name, email,
id or token) is in what the analytics configuration would send, in any request leaving the site,
or in any cookie.

Chromium stays on loopback: every request to another host is recorded and aborted, so Google's
script never loads; what it would have sent is what our page handed it (``data-config`` and
``window.dataLayer``), which is checked together with the URLs the browser tried to reach.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Route

from app import create_app, tenancy
from app.extensions import db
from app.models import Enrollment, Family, Guardian, Role, SchoolClass, Student
from tests.browser.helpers import sign_in
from tests.browser.serving import serve_on_loopback
from tests.browser.test_cookie_contents import personal_strings, readings
from tests.conftest import PASSWORD, make_config

pytestmark = pytest.mark.browser

GA_ID = "G-BROWSER123"
PARENT = ("Wilhelmina Thistlewaite", "wilhelmina.thistlewaite@example.org")
STAFF = ("Barnaby Fothergill", "barnaby.fothergill@example.org")
CHILD = "Ottoline"
MAX_PAGES = 40
SKIPPED = (".csv", ".json", ".ics", "/download", "/sign-out")


@pytest.fixture
def ga_server(app, database_url) -> Iterator[str]:
    """The app with analytics configured, served on 127.0.0.1 (like conftest's live_server)."""
    server_app = create_app(make_config(database_url, SERVER_NAME=None, GA_MEASUREMENT_ID=GA_ID))
    with serve_on_loopback(server_app) as base_url:
        yield base_url


@pytest.fixture
def ga_context(browser, ga_server) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=ga_server)
    context.set_default_timeout(10_000)
    yield context
    context.close()


@pytest.fixture
def community(make_school, make_member):
    """A parent with a child in a class, and a staff member; returns their ids and the class id."""
    school = make_school(name="Larkspur School")
    parent = make_member(school, name=PARENT[0], email=PARENT[1])
    staff = make_member(school, role=Role.ADMIN, name=STAFF[0], email=STAFF[1])
    with tenancy.bound(school.id):
        school_class = SchoolClass(name="Heron", grade="Grade 2", school_year="2026-27")
        family = Family(name="Thistlewaite family")
        db.session.add_all([school_class, family])
        db.session.flush()
        db.session.add(Guardian(family_id=family.id, membership_id=parent.id))
        child = Student(family_id=family.id, first_name=CHILD, last_name="Thistlewaite")
        db.session.add(child)
        db.session.flush()
        db.session.add(Enrollment(student_id=child.id, class_id=school_class.id))
        db.session.commit()
        ids = {parent.id, parent.user_id, staff.id, staff.user_id, school_class.id, family.id, child.id}
    db.session.remove()
    return ids


class Outbound:
    """Records (and aborts) every request for a host other than the test server."""

    def __init__(self, context: BrowserContext, origin: str):
        self.origin = origin
        self.urls: list[str] = []
        context.route("**/*", self._handle)

    def _handle(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(self.origin):
            route.continue_()
        else:
            self.urls.append(url)
            route.abort()


def crawl(page, origin: str) -> Iterator[str]:
    """Breadth-first over same-site links from the home page (GET only, downloads skipped)."""
    seen, queue, visited = {"/"}, deque(["/"]), []
    while queue and len(visited) < MAX_PAGES:
        path = queue.popleft()
        response = page.goto(path)
        if response is None or response.status >= 400 or not page.url.startswith(origin):
            continue
        visited.append(path)
        yield path
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
            parts = urlsplit(href)
            if parts.netloc or not parts.path.startswith("/") or any(s in parts.path for s in SKIPPED):
                continue
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            if target not in seen:
                seen.add(target)
                queue.append(target)


def sent_by_page(page) -> list[str]:
    """What our page hands Google's tag: the data-config attribute and every dataLayer entry."""
    config = page.evaluate(
        "() => { const t = document.getElementById('analytics-config');"
        " return t && t.getAttribute('data-config'); }"
    )
    layer = page.evaluate(
        "() => JSON.stringify((window.dataLayer || []).map(a => Array.from(a)),"
        " (k, v) => v instanceof Date ? 0 : v)"
    )
    return [config or "", layer or ""]


def assert_clean(label: str, texts: list[str], forbidden: set[str], ids: set[int]) -> None:
    for text in texts:
        lowered = text.lower()
        leaked = sorted(s for s in forbidden if s in lowered)
        assert not leaked, f"{label} carries {leaked}: {text[:300]}"
        # The site's own origin (127.0.0.1:port) is not an id: look only at what follows hosts.
        without_hosts = re.sub(r"https?://[^/\"\s]+", "", text)
        for number in ids:
            found = re.search(rf'[/="]{number}(?!\d)', without_hosts)
            assert not found, f"{label} carries id {number}: {text[:300]}"
        assert "?" not in json.dumps(_locations(text)), f"{label} sends a query string"


def _locations(text: str) -> list[str]:
    try:
        data = json.loads(text)
    except ValueError:
        return []
    found = []

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("page_location", "page_referrer"):
                    found.append(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(data)
    return found


@pytest.mark.parametrize("who", ["parent", "staff"])
def test_analytics_and_cookies_carry_nothing_personal(ga_context, ga_server, community, who):
    name, email = PARENT if who == "parent" else STAFF
    forbidden = personal_strings(PARENT, STAFF) | {CHILD.lower(), PASSWORD.lower()}
    outbound = Outbound(ga_context, ga_server)
    page = ga_context.new_page()
    sign_in(page, email)

    visited = []
    for path in crawl(page, ga_server):
        visited.append(path)
        texts = sent_by_page(page)
        assert_clean(f"analytics on {path}", texts, forbidden, community)
        if "/export/" in path:
            assert texts[0] == "", "no analytics where the URL holds a token"
    page.goto("/directory/?q=" + name.split()[0])  # a search for a person: the query stays home
    assert_clean("analytics on a search", sent_by_page(page), forbidden, community)

    assert len(visited) >= 6, visited  # home, classes, a class, directory, account, privacy, ...
    assert any(
        url.startswith("https://www.googletagmanager.com/gtag/js?id=" + GA_ID) for url in outbound.urls
    )
    assert_clean("requests leaving the site", outbound.urls, forbidden, community)
    for cookie in ga_context.cookies():
        # Decoded cookie bytes are random: check them for personal strings (ids would match by chance).
        assert_clean(
            f"cookie {cookie['name']}", [cookie["name"], *readings(cookie["value"])], forbidden, set()
        )


def test_global_privacy_control_means_no_analytics_at_all(browser, ga_server, community):
    context = browser.new_context(base_url=ga_server, extra_http_headers={"Sec-GPC": "1"})
    try:
        outbound = Outbound(context, ga_server)
        page = context.new_page()
        sign_in(page, PARENT[1])
        for path in ("/", "/classes/", "/privacy"):
            page.goto(path)
            assert sent_by_page(page) == ["", "[]"], path
        assert outbound.urls == []
    finally:
        context.close()


# What a browser (or an extension) may say at the JavaScript level only, with no header to the server.
SCRIPT_LEVEL_REFUSALS = {
    "gpc": "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});",
    "navigator_dnt": "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});",
    "window_dnt": "Object.defineProperty(window, 'doNotTrack', {get: () => '1'});",
}


def _analytics_on_page(browser, ga_server, init_script: str | None) -> tuple[list[str], list[str], int]:
    """Open the home page as a parent: what the page handed Google, what left the site, and how
    many GA script tags the page holds."""
    context = browser.new_context(base_url=ga_server)
    try:
        if init_script:
            context.add_init_script(init_script)
        outbound = Outbound(context, ga_server)
        page = context.new_page()
        sign_in(page, PARENT[1])
        page.goto("/classes/")
        page.wait_for_load_state("networkidle")
        scripts = page.eval_on_selector_all("script[src*='googletagmanager']", "els => els.length")
        return sent_by_page(page), outbound.urls, scripts
    finally:
        context.close()


@pytest.mark.parametrize("refusal", sorted(SCRIPT_LEVEL_REFUSALS))
def test_the_analytics_script_itself_honours_gpc_and_dnt(browser, ga_server, community, refusal):
    """P18: the server cannot see a GPC or DNT set only in JavaScript and renders the config; the
    script then pushes nothing, loads no Google tag and nothing leaves the site. Without the
    signal the same page does load it (so the refusal is the script's doing)."""
    (config, layer), outbound, scripts = _analytics_on_page(browser, ga_server, None)
    assert GA_ID in config and GA_ID in layer and scripts == 1
    assert any("googletagmanager" in url for url in outbound), outbound

    (config, layer), outbound, scripts = _analytics_on_page(
        browser, ga_server, SCRIPT_LEVEL_REFUSALS[refusal]
    )
    assert GA_ID in config, "the server rendered the config: the script must decide"
    assert layer == "[]" and scripts == 0
    assert outbound == []
