"""Keyboard only: sign in, search the directory and approve someone with Tab, typing and Enter.

No clicks and no ``focus()`` calls: each control is reached by pressing Tab from the top of the
page, the focused control must show a visible focus ring, and Enter submits.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.helpers import path_is
from tests.conftest import PASSWORD
from tests.hostile_world import build_world

pytestmark = pytest.mark.browser

MAX_TABS = 40
FOCUS_RING = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return false;
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
  return outline || style.boxShadow !== "none";
}"""


def tab_to(page: Page, describe: str, matches: str) -> None:
    """Press Tab until the focused element matches the JS predicate ``matches`` (el => bool)."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if page.evaluate(f"() => {{ const el = document.activeElement; return !!el && ({matches})(el); }}"):
            assert page.evaluate(FOCUS_RING), f"{describe} has focus but no visible focus ring"
            return
    focused = page.evaluate("() => document.activeElement && document.activeElement.outerHTML.slice(0, 120)")
    pytest.fail(f"{describe} was not reached with {MAX_TABS} presses of Tab (focus ended on {focused})")


def by_label(text: str) -> str:
    return f'el => el.labels && Array.from(el.labels).some(l => l.textContent.trim().startsWith("{text}"))'


def sign_in_with_keyboard(page: Page, email: str) -> None:
    page.goto("/sign-in")
    tab_to(page, "the email field", by_label("Email address"))
    page.keyboard.type(email)
    tab_to(page, "the password field", by_label("Password"))
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(path_is("/"))


def test_sign_in_search_and_approve_with_the_keyboard_alone(context, make_school, make_member):
    world = build_world(make_school, make_member)  # the Alder family has a child, Alderkid Alderson
    applicant = world.mine.applicant
    page = context.new_page()

    sign_in_with_keyboard(page, world.mine.actors["staff"].user.email)
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()

    page.goto("/directory/")
    tab_to(page, "the directory search", by_label("Search families"))
    page.keyboard.type("Alderkid")
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_contain_text("Alderkid")
    expect(page.locator("main")).not_to_contain_text("Zanzibar")

    page.goto("/members/pending")
    approve = "el => el.tagName === 'BUTTON' && el.textContent.includes('Approve Alder Applicant')"
    tab_to(page, "the approve button", approve)
    page.keyboard.press("Enter")
    expect(page.locator(f"#pending-{applicant.id}")).to_contain_text("approved")


def test_the_skip_link_is_the_first_stop_and_moves_past_the_navigation(context):
    page = context.new_page()
    page.goto("/privacy")  # a page with no autofocus (sign-in puts the caret in the email field)
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.outerHTML.slice(0, 200).toLowerCase()")
    assert "skip" in focused, focused
    assert page.evaluate(FOCUS_RING)
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    page.keyboard.press("Tab")
    in_main = page.evaluate("() => !!document.activeElement.closest('main')")
    assert in_main, "after skipping, the next Tab stop is inside the main content"
