"""A browser that refuses cookies gets a plain explanation when it tries to sign in, not a CSRF error."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from app.extensions import db
from app.models import Role
from tests.browser.helpers import path_is
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("javascript", [True, False], ids=["htmx", "no-js"])
def test_sign_in_with_cookies_blocked_explains_cookies(
    cookieless_context, live_server, make_school, make_member, javascript
):
    school = make_school(name="Hollowmere School")
    email = make_member(school, role=Role.PARENT).user.email  # real credentials: only cookies are missing
    db.session.remove()

    context = cookieless_context(java_script_enabled=javascript)
    page = context.new_page()
    with page.expect_response(path_is("/sign-in")) as first:
        page.goto("/sign-in")
    # The server did offer a session cookie; the browser threw it away.
    assert "session=" in (first.value.header_value("set-cookie") or "")
    assert context.cookies() == []

    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_response(
        lambda r: r.request.method == "POST" and path_is("/sign-in").match(r.url)
    ) as post:
        page.get_by_role("button", name="Sign in").click()
    assert post.value.request.header_value("cookie") is None, "the browser really sent no cookie"
    assert post.value.status == 400
    assert (post.value.request.header_value("hx-request") == "true") is javascript

    # The explanation, as a page of its own.
    explanation = page.locator("#cookies-needed")
    expect(explanation).to_be_visible()
    expect(explanation.get_by_role("heading", level=1)).to_have_text("Please allow cookies for this site")
    expect(explanation.get_by_role("link", name="try signing in again")).to_have_attribute("href", "/sign-in")
    # One page around it: with htmx the explanation must replace <main>, not land inside the
    # sign-in form it posted (a whole page nested in the card, under the old "Sign in" heading).
    structure = page.evaluate(
        """() => ({
            h1: [...document.querySelectorAll("h1")].map((h) => h.textContent.trim()),
            headers: document.querySelectorAll("header.site-header").length,
            mains: document.querySelectorAll("main").length,
            signInForms: document.querySelectorAll("#sign-in-form").length,
        })"""
    )
    assert structure == {
        "h1": ["Please allow cookies for this site"],
        "headers": 1,
        "mains": 1,
        "signInForms": 0,
    }
    expect(page).to_have_title("Cookies are needed · Join Our Class")
    # Not the "form expired" page, nor the form's own error summary.
    expect(page.get_by_text("That form expired")).to_have_count(0)
    expect(page.get_by_text("The form expired")).to_have_count(0)
    # Not signed in, and still no cookie held for the site.
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    assert context.cookies() == []
