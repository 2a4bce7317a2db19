"""Steps a person takes in the browser, shared by the browser tests."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.conftest import PASSWORD

# Long, not on the common list, and unrelated to any name or address used in these tests.
NEW_PASSWORD = "maple lantern orbit quietly"


def path_is(path: str) -> re.Pattern[str]:
    """A URL matcher for wait_for_url / to_have_url: this path on any host, no query."""
    return re.compile(r"^https?://[^/]+" + re.escape(path) + r"$")


def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    """Sign in through the form and wait for the home page."""
    page.goto("/sign-in")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(path_is("/"))


def fill_join_form(page: Page, *, code: str, name: str, email: str, password: str = NEW_PASSWORD) -> None:
    """Open /join and fill in every field, policy box ticked; the caller submits."""
    page.goto("/join")
    page.get_by_label("Invitation code").fill(code)
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Choose a password").fill(password)
    page.get_by_label("I have read the privacy policy").check()


def join(page: Page, *, code: str, name: str, email: str, password: str = NEW_PASSWORD) -> None:
    """Ask to join a school, then sign in with the new password and wait for the pending page."""
    fill_join_form(page, code=code, name=name, email=email, password=password)
    page.get_by_role("button", name="Ask to join").click()
    sign_in_after_joining(page, email, password)


def sign_in_after_joining(page: Page, email: str, password: str = NEW_PASSWORD) -> None:
    """Joining signs nobody in (it answers alike for known addresses): sign in, land on /pending."""
    page.wait_for_url(path_is("/join/sent"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
    page.goto("/sign-in")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(path_is("/pending"))


def main_nav(page: Page):
    return page.get_by_role("navigation", name="Main")


def open_approvals(page: Page) -> None:
    """Follow the nav's Approvals link to the queue."""
    main_nav(page).get_by_role("link", name="Approvals", exact=True).click()
    page.wait_for_url(path_is("/members/pending"))
    expect(page.get_by_role("heading", level=1)).to_have_text("People waiting to join")
