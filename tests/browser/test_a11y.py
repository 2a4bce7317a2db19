"""axe-core on every page each role can reach, and on the htmx partials those pages load.

For each role the test signs in through the form, then walks the site from the home page
following same-origin links (GET only; nothing that signs out, downloads or exports), and runs
axe-core in every page it finds. Any "serious" or "critical" violation fails, with the rule, the
page and the elements. Pages added later are covered as soon as a link leads to them.
"""

from __future__ import annotations

import re
from collections import deque
from urllib.parse import urljoin, urlsplit

import pytest
from flask import url_for
from playwright.sync_api import Page

from app.extensions import db
from app.models import PlatformRole, Suppression
from tests.browser.helpers import sign_in
from tests.hostile_world import ROLES, build_world

pytestmark = pytest.mark.browser

MAX_PAGES_PER_ROLE = 40
LOCALES = ("en", "es", "ar")
BLOCKING = {"serious", "critical"}
# Sign-out, files (a download is not a page), exports and links that spend a token.
SKIP = re.compile(r"(sign-out|/static/|\.\w{2,4}$|/export|/print|/unsubscribe/|/feed|/reset/|/confirm/)")
RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))
  }));
}"""
LINKS = """() => Array.from(document.querySelectorAll("a[href]"), a => a.getAttribute("href"))"""
HX_GETS = """() => Array.from(document.querySelectorAll("[hx-get], [data-hx-get]"), e => [
  e.getAttribute("hx-get") || e.getAttribute("data-hx-get"),
  (e.getAttribute("hx-target") || e.getAttribute("data-hx-target")
    || (e.id ? "#" + e.id : "")).replace(/^#/, "")
])"""


def _shape(path: str) -> str:
    """Pages that differ only by an id are one kind of page: check the first of each."""
    return re.sub(r"\d+", "N", path)


def _same_origin_paths(page: Page, base: str) -> list[str]:
    paths = []
    for href in page.evaluate(LINKS):
        url = urlsplit(urljoin(page.url, href))
        if f"{url.scheme}://{url.netloc}" != base or SKIP.search(url.path):
            continue
        paths.append(url.path + (f"?{url.query}" if url.query else ""))
    return paths


def _violations(page: Page, axe_source: str, where: str) -> list[str]:
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.evaluate(axe_source)  # Playwright's evaluate is not subject to the page's CSP
    found = page.evaluate(RUN_AXE)
    return [
        f"{where}: {v['id']} ({v['impact']}) {v['help']} at {v['nodes']}"
        for v in found
        if v["impact"] in BLOCKING
    ]


def _check_partials(page: Page, axe_source: str, path: str) -> list[str]:
    """Each htmx GET partial on the page, fetched as htmx would and put into <main>, checked too."""
    problems = []
    for partial, target in sorted({tuple(pair) for pair in page.evaluate(HX_GETS)})[:3]:
        html = page.evaluate(
            """async ([url, target]) => {
                const r = await fetch(url, {headers: {"HX-Request": "true", "HX-Target": target}});
                return r.ok ? await r.text() : null;
            }""",
            [partial, target],
        )
        if html is None or "<html" in html:
            continue  # not a fragment (the target is not one the view renders alone)
        page.evaluate(
            """(html) => {
                const main = document.querySelector("main") || document.body;
                const holder = document.createElement("div");
                holder.innerHTML = html;
                main.appendChild(holder);
            }""",
            html,
        )
        problems += _violations(page, axe_source, f"{path} + partial {partial}")
    return problems


def crawl_and_check(page: Page, axe_source: str, base: str, starts: list[str]) -> tuple[list[str], list[str]]:
    """(pages checked, violations) for whoever the page's context is signed in as."""
    queue, seen_shapes, checked, problems = deque(starts), set(), [], []
    while queue and len(checked) < MAX_PAGES_PER_ROLE:
        path = queue.popleft()
        if _shape(path) in seen_shapes:
            continue
        seen_shapes.add(_shape(path))
        response = page.goto(path)
        if (
            response is None
            or response.status >= 400
            or "html" not in response.headers.get("content-type", "")
        ):
            continue
        final = urlsplit(page.url).path
        checked.append(final)
        problems += _violations(page, axe_source, final)
        problems += _check_partials(page, axe_source, final)
        queue.extend(p for p in _same_origin_paths(page, base) if _shape(p) not in seen_shapes)
    return checked, problems


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("role", ROLES)
def test_no_serious_accessibility_violations_on_any_page_a_role_reaches(
    new_context, live_server, axe_source, make_school, make_member, role, locale
):
    world = build_world(make_school, make_member)
    _suppress_a_member(world)
    # The browser's language picks the page's: each role's pages in English, Spanish and Arabic.
    page = new_context(locale=locale).new_page()
    if role == "pending":
        _sign_in_pending(page, world.mine.actors[role].user.email)
    elif role != "anonymous":
        _sign_in_in_english(page, world.mine.actors[role].user.email)
    starts = ["/"] if role != "anonymous" else ["/", "/sign-in", "/join", "/password/forgot", "/contact"]
    checked, problems = crawl_and_check(page, axe_source, live_server, starts)
    assert len(checked) >= 2, checked
    if role in ("admin", "superadmin"):
        assert "/settings/suppressions" in checked, checked  # with a suppression listed on it
    assert problems == [], "\n".join(problems)


def _suppress_a_member(world) -> None:
    """A suppressed address of my school's parent, so the suppression lists are not empty."""
    email = world.mine.actors["parent"].user.email
    db.session.add(Suppression(email=email, reason="complaint", provider_lists="complaints"))
    db.session.commit()


def _sign_in_pending(page: Page, email: str) -> None:
    """A person waiting for approval lands on /pending, not the home page."""
    from tests.browser.helpers import path_is
    from tests.conftest import PASSWORD

    page.goto("/sign-in?lang=en")  # the form's labels as written here, whatever the browser's language
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(path_is("/pending"))


def _sign_in_in_english(page: Page, email: str) -> None:
    """Sign in through the English form (?lang= is for that page only) and wait for the home page."""
    from tests.browser.helpers import path_is
    from tests.conftest import PASSWORD

    page.goto("/sign-in?lang=en")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(path_is("/"))


@pytest.mark.parametrize("platform_role", [PlatformRole.SUPPORT, PlatformRole.ADMIN])
def test_no_serious_accessibility_violations_on_the_platform_pages(
    context, live_server, axe_source, make_school, make_member, platform_role
):
    """The operator's own people: their console and whatever it links to."""
    world = build_world(make_school, make_member)
    _suppress_a_member(world)
    operator = world.mine.actors["parent"].user
    operator.platform_role = platform_role
    db.session.commit()
    console = url_for("platform.console", _external=False)
    page = context.new_page()
    sign_in(page, operator.email)
    checked, problems = crawl_and_check(page, axe_source, live_server, [console, "/"])
    assert console in checked, checked
    if platform_role is PlatformRole.ADMIN:
        assert url_for("platform.suppressions.index", _external=False) in checked, checked
    assert problems == [], "\n".join(problems)
