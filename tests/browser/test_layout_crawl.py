"""The phone layout, proven page by page: every page each role reaches, at 360 px and 1366 px.

For each role the test signs in, walks the site from the home page as test_a11y does (same-origin
GET links, one page per shape), and on every page, at both widths:

- the page does not scroll sideways (``scrollWidth <= innerWidth``);
- no visible control (link, button, field, summary) sticks out past the right edge, unless it sits
  in a box that scrolls by itself (a ``.table-scroll``), where it is one swipe away;
- axe-core finds no serious or critical violation.

The world's names are long and unbroken (a 120-letter surname, a long class name) so that a table
cell or a card that does not wrap shows up. Screenshots of the main pages at both widths are saved
under tests/browser/artifacts/ (git-ignored) and, with UPDATE_SCREENSHOTS=1, under docs/screenshots/.
The header menu is a <details> disclosure: a separate test opens it with JavaScript off.
"""

from __future__ import annotations

import os
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from app import create_app, tenancy
from app.extensions import db
from app.models import DevMail, MailMessage, PlatformRole, Role, SchoolClass, SupportKind, SupportRequest
from app.models.calendar import Event
from tests.browser.helpers import path_is, sign_in
from tests.browser.serving import serve_on_loopback
from tests.browser.test_a11y import (
    _same_origin_paths,
    _shape,
    _sign_in_pending,
    _suppress_a_member,
    _violations,
)
from tests.conftest import make_config, publish_material
from tests.hostile_world import build_world

pytestmark = pytest.mark.browser

WIDTHS = (360, 1366)
HEIGHT = 800
MAX_PAGES_PER_ROLE = 70
ROLES = ("anonymous", "pending", "parent", "room_parent", "staff", "admin", "superadmin")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "browser" / "artifacts"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
# 100 letters without a break (wider than a phone at any font), short enough for every column it
# goes in (names are at most 120 characters: PostgreSQL refuses longer, SQLite would not).
LONG_WORD = "Wolfeschlegelsteinhausenbergerdorff" + "voralternwarengewissenhaft" + "x" * 39

# Controls past the right edge: visible ones (checkVisibility: not display:none, not in a closed
# <details>), not the skip link (off-screen until focused), not inside a box that scrolls itself.
OFF_SCREEN = """() => {
  const width = window.innerWidth;
  const scrollsItself = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if (o === "auto" || o === "scroll") return true;
    }
    return false;
  };
  const selector = "a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]";
  return Array.from(document.querySelectorAll(selector))
    .filter((el) => !el.classList.contains("skip-link"))
    .filter((el) => el.checkVisibility({visibilityProperty: true, contentVisibilityAuto: true}))
    .filter((el) => {
      const r = el.getBoundingClientRect();
      return r.width > 1 && r.height > 1 && r.right > width + 1 && !scrollsItself(el);
    })
    .slice(0, 5)
    .map((el) => {
      const text = (el.textContent || el.value || "").trim().slice(0, 40);
      const right = Math.round(el.getBoundingClientRect().right);
      return `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""} "${text}" right=${right}`;
    });
}"""
WIDTH_OF_PAGE = "() => [document.documentElement.scrollWidth, window.innerWidth]"
WIDEST = """() => {
  const width = window.innerWidth;
  return Array.from(document.body.querySelectorAll("*"))
    .filter((el) => el.getBoundingClientRect().right > width + 1)
    .slice(-3)
    .map((el) => `${el.tagName.toLowerCase()}.${[...el.classList].join(".")}`);
}"""


def _layout_problems(page: Page, where: str, width: int) -> list[str]:
    problems = []
    scroll_width, inner_width = page.evaluate(WIDTH_OF_PAGE)
    if scroll_width > inner_width:
        problems.append(f"{where} @{width}px: page is {scroll_width}px wide; widest: {page.evaluate(WIDEST)}")
    off = page.evaluate(OFF_SCREEN)
    if off:
        problems.append(f"{where} @{width}px: controls off-screen: {off}")
    return problems


def crawl_layout(page: Page, axe_source: str, base: str, starts: list[str]) -> tuple[list[str], list[str]]:
    """(pages checked, problems) at every width, for whoever the page is signed in as."""
    queue, seen, checked, problems = deque(starts), set(), [], []
    while queue and len(checked) < MAX_PAGES_PER_ROLE:
        path = queue.popleft()
        if _kind(path) in seen:
            continue
        seen.add(_kind(path))
        page.set_viewport_size({"width": WIDTHS[0], "height": HEIGHT})
        response = page.goto(path)
        if response is None or response.status >= 400:
            continue
        if "html" not in response.headers.get("content-type", ""):
            continue
        final = urlsplit(page.url).path
        checked.append(final)
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": HEIGHT})  # media queries follow
            problems += _layout_problems(page, final, width)
            problems += _violations(page, axe_source, f"{final} @{width}px")
        queue.extend(p for p in _same_origin_paths(page, base) if _kind(p) not in seen)
    return checked, problems


def _kind(path: str) -> str:
    """One page per template: ids are alike, and so are query strings (?class=1, ?view=...)."""
    return _shape(urlsplit(path).path)


def _lengthen_names(world) -> None:
    """Long unbroken words wherever a name is shown: people, addresses, a class, an event, a
    support request (so "my requests" has a row), the message subject."""
    side = world.mine
    side.applicant.user.name = f"Sam {LONG_WORD}"
    side.applicant.user.email = f"sam.{LONG_WORD.lower()}@alder.example"
    parent = side.actors["parent"].user
    parent.name = f"Pat {LONG_WORD}"
    # Chromium keeps the session cookie on the real clock, so the event is dated from the real now.
    starts = datetime(datetime.now(UTC).year + 1, 7, 1, 9, tzinfo=UTC)
    with tenancy.bound(side.school.id):
        school_class = db.session.get(SchoolClass, side.ids["school_class"])
        school_class.name = f"Owls {LONG_WORD}"
        message = db.session.get(MailMessage, side.ids["mail_message"])
        message.subject = f"Trip {LONG_WORD}"
        db.session.add(
            Event(
                title=f"Sports day {LONG_WORD}",
                location=LONG_WORD,
                starts_at=starts,
                ends_at=starts + timedelta(hours=2),
                description=LONG_WORD,
            )
        )
        db.session.add(
            SupportRequest(
                kind=SupportKind.HELP,
                user_id=parent.id,
                school_id=side.school.id,
                name=parent.name[:120],
                email=parent.email,
                subject=f"Help {LONG_WORD}"[:150],
                message=LONG_WORD,
            )
        )
        db.session.commit()


def _record(who: str, checked: list[str]) -> None:
    """The pages a crawl checked, for people to read (tests/browser/artifacts/, git-ignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    widths = " and ".join(f"{w}px" for w in WIDTHS)
    lines = [f"{len(checked)} pages at {widths}", *checked]
    (ARTIFACTS / f"crawl-{who}.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def world(make_school, make_member):
    built = build_world(make_school, make_member)
    _suppress_a_member(built)
    _lengthen_names(built)
    # A posted version: the privacy page gets its history table and members the notice banner.
    publish_material(email=False, summary=f"Sign-in records {LONG_WORD} are kept for 90 days.")
    return built


@pytest.mark.parametrize("role", ROLES)
def test_no_page_scrolls_sideways_or_hides_a_control_at_phone_and_desktop_widths(
    new_context, live_server, axe_source, world, role
):
    page = new_context(viewport={"width": WIDTHS[0], "height": HEIGHT}).new_page()
    starts = ["/"]
    if role == "anonymous":
        starts = ["/", "/sign-in", "/join", "/password/forgot", "/contact"]
    elif role == "pending":
        _sign_in_pending(page, world.mine.actors[role].user.email)
        starts = ["/pending", "/"]
    else:
        sign_in(page, world.mine.actors[role].user.email)
    checked, problems = crawl_layout(page, axe_source, live_server, starts)
    _record(role, checked)
    assert len(checked) >= 4, checked
    if role in ("admin", "superadmin"):
        assert "/members/pending" in checked, checked  # the long applicant's name is on it
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("platform_role", [PlatformRole.SUPPORT, PlatformRole.ADMIN])
def test_the_platform_pages_fit_a_phone_too(new_context, live_server, axe_source, world, platform_role):
    operator = world.mine.actors["parent"].user
    operator.platform_role = platform_role
    db.session.commit()
    page = new_context(viewport={"width": WIDTHS[0], "height": HEIGHT}).new_page()
    sign_in(page, operator.email)
    checked, problems = crawl_layout(page, axe_source, live_server, ["/platform/", "/"])
    _record(f"platform-{platform_role.value}", checked)
    assert any(p.startswith("/platform") for p in checked), checked
    assert problems == [], "\n".join(problems)


SCREENSHOTS = {
    "home": lambda ids: "/",
    "directory": lambda ids: "/directory",
    "class": lambda ids: f"/classes/{ids['school_class']}",
    "calendar": lambda ids: "/calendar/",
    "compose": lambda ids: "/messages/new",
    "settings": lambda ids: "/settings/",
}


def test_screenshots_of_the_main_pages_at_both_widths(new_context, make_school, make_member):
    """Saved for people to look at (git-ignored); UPDATE_SCREENSHOTS=1 refreshes docs/screenshots/.

    The plain world (ordinary names, no policy notice): these pictures show what a school sees.
    """
    world = build_world(make_school, make_member)
    page = new_context(viewport={"width": WIDTHS[1], "height": HEIGHT}).new_page()
    sign_in(page, world.mine.actors["admin"].user.email)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    update_docs = bool(os.environ.get("UPDATE_SCREENSHOTS"))
    if update_docs:
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, path_of in SCREENSHOTS.items():
        response = page.goto(path_of(world.mine.ids))
        assert response is not None and response.status == 200, (name, response and response.status)
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": HEIGHT})
            filename = f"{name}-{width}.png"
            page.screenshot(path=str(ARTIFACTS / filename), full_page=True)
            assert (ARTIFACTS / filename).stat().st_size > 1000
            if update_docs:
                page.screenshot(path=str(DOCS_SCREENSHOTS / filename), full_page=True)


def _menu_button_state(page: Page) -> tuple[str, bool] | None:
    """(role, expanded) of the "Menu" control in Chromium's accessibility tree (what a screen
    reader is told); Playwright's own role engine gives <summary> no role, so ask Chromium."""
    cdp = page.context.new_cdp_session(page)
    try:
        for node in cdp.send("Accessibility.getFullAXTree")["nodes"]:
            if node.get("ignored") or node.get("name", {}).get("value") != "Menu":
                continue
            props = {p["name"]: p["value"].get("value") for p in node.get("properties", [])}
            return node["role"]["value"], bool(props.get("expanded"))
    finally:
        cdp.detach()
    return None


def test_the_menu_opens_without_javascript_and_its_links_work(new_context, world):
    page = new_context(java_script_enabled=False, viewport={"width": WIDTHS[0], "height": HEIGHT}).new_page()
    sign_in(page, world.mine.actors["admin"].user.email)
    menu = page.locator("header summary", has_text="Menu")
    expect(menu).to_be_visible()
    assert _menu_button_state(page) == ("DisclosureTriangle", False)  # a button, collapsed, named "Menu"
    nav = page.get_by_role("navigation", name="Main")
    calendar = nav.get_by_role("link", name="Calendar", exact=True)
    expect(calendar).to_be_hidden()
    # Keyboard: Tab from the brand link reaches the menu button; Enter opens it.
    page.locator("header a.brand").focus()  # the school's name (its identity) or the product's
    page.keyboard.press("Tab")
    expect(menu).to_be_focused()
    page.keyboard.press("Enter")
    expect(calendar).to_be_visible()
    assert _menu_button_state(page) == ("DisclosureTriangle", True)
    for link in nav.get_by_role("link").all():  # every link on screen, none past the right edge
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTHS[0], link
    page.keyboard.press("Tab")
    expect(nav.get_by_role("link", name="Home", exact=True)).to_be_focused()
    calendar.click()
    page.wait_for_url(path_is("/calendar/"))
    expect(calendar).to_be_hidden()  # a new page: the menu starts closed again
    # On a wide screen there is no Menu button: the links are simply there, on one or two rows.
    page.set_viewport_size({"width": WIDTHS[1], "height": HEIGHT})
    expect(menu).to_be_hidden()
    expect(nav.get_by_role("link", name="Settings", exact=True)).to_be_visible()
    header = page.locator("header").bounding_box()
    assert header is not None and header["height"] < 120, header


def test_the_favicon_is_served_and_linked(context, live_server):
    page = context.new_page()
    response = page.goto("/favicon.ico")
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    page.goto("/sign-in")
    icon = page.locator("link[rel=icon]")
    href = icon.get_attribute("href")
    assert href is not None and href.endswith("favicon.svg")
    assert page.request.get(href).status == 200
    description = page.locator("meta[name=description]").get_attribute("content")
    assert description and len(description) > 40


def test_the_development_pages_fit_a_phone_too(
    browser, app, database_url, axe_source, make_school, make_member
):
    """The dev mailbox (a long address in it) and the style page, on a server in development mode."""
    admin = make_member(make_school(), role=Role.SUPERADMIN)
    address = f"{LONG_WORD.lower()}@example.org"
    db.session.add(DevMail(to_email=address, subject=f"Hello {LONG_WORD}", text_body="Hi"))
    db.session.commit()
    config = make_config(database_url, SERVER_NAME=None, ENV_NAME="development", DEV_MAILBOX=True)
    dev_app = create_app(config)
    with serve_on_loopback(dev_app) as base_url:
        context = browser.new_context(base_url=base_url, viewport={"width": WIDTHS[0], "height": HEIGHT})
        try:
            page = context.new_page()
            sign_in(page, admin.user.email)
            checked, problems = crawl_layout(page, axe_source, base_url, ["/dev/style", "/dev/mailbox"])
        finally:
            context.close()
    assert checked[:2] == ["/dev/style", "/dev/mailbox"], checked
    assert problems == [], "\n".join(problems)
