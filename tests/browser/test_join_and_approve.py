"""A parent joins with the school's code, an admin approves them, the parent gets in: in Chromium."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from app import tenancy
from app.extensions import db
from app.models import Membership, MembershipStatus, Role
from tests.browser.helpers import fill_join_form, join, main_nav, open_approvals, path_is, sign_in

pytestmark = pytest.mark.browser

PARENT_NAME = "Ottoline Fairweather"
PARENT_EMAIL = "ottoline.fairweather@example.org"


def test_parent_joins_admin_approves_in_place_parent_gets_in(new_context, make_school, make_member):
    school = make_school(name="Larkspur Primary", code="LARK-2024")
    admin_email = make_member(school, role=Role.SUPERADMIN).user.email
    db.session.remove()  # the test's own session holds nothing while the server works

    # The parent joins with the code typed in lower case, as people do.
    parent = new_context().new_page()
    join(parent, code="lark-2024", name=PARENT_NAME, email=PARENT_EMAIL)
    expect(parent.get_by_role("heading", level=1)).to_have_text(
        "Thanks, your request is with Larkspur Primary"
    )
    # Nothing of the directory while waiting: no nav links to it, no links into it at all.
    for link in ("Home", "Classes", "Approvals"):
        expect(main_nav(parent).get_by_role("link", name=link, exact=True)).to_have_count(0)
    expect(parent.locator("a[href*='/classes'], a[href*='/members']")).to_have_count(0)
    expect(main_nav(parent).get_by_role("link", name="Account")).to_be_visible()
    # The pending parent is not let into the school home either.
    parent.goto("/")
    expect(parent).to_have_url(path_is("/pending"))

    # The admin, in a separate browser context, approves from the queue.
    admin = new_context().new_page()
    sign_in(admin, admin_email)
    open_approvals(admin)
    row = admin.locator("li.queue-row", has_text=PARENT_NAME)
    expect(row).to_contain_text(PARENT_EMAIL)
    row_id = row.get_attribute("id")
    assert row_id and row_id.startswith("pending-")

    navigations: list[str] = []
    admin.on("framenavigated", lambda frame: navigations.append(frame.url))
    admin.evaluate("window.__sameDocument = true")
    with admin.expect_response(re.compile(r"/members/\d+/approve$")) as approval:
        admin.get_by_role("button", name=f"Approve {PARENT_NAME}").click()
    decided = admin.locator(f"#{row_id}")
    expect(decided).to_have_text(re.compile(rf"^\s*{PARENT_NAME}: approved\."))
    expect(decided).to_have_class(re.compile(r"\bdecided\b"))
    expect(admin.get_by_role("button", name=f"Approve {PARENT_NAME}")).to_have_count(0)
    # htmx did it: an HX request answered with a fragment, and the page never reloaded.
    assert approval.value.request.header_value("hx-request") == "true"
    assert approval.value.status == 200
    assert admin.evaluate("window.__sameDocument") is True
    assert navigations == []
    expect(admin).to_have_url(path_is("/members/pending"))

    # The parent's next visit reaches the school home.
    parent.goto("/")
    expect(parent).to_have_url(path_is("/"))
    expect(parent.get_by_role("heading", level=1)).to_have_text("Larkspur Primary")
    expect(parent.get_by_role("heading", name="Your classes")).to_be_visible()
    expect(main_nav(parent).get_by_role("link", name="Home", exact=True)).to_be_visible()


def test_approval_works_without_javascript(new_context, make_school, make_member):
    school = make_school(name="Birchwood Academy")
    admin_email = make_member(school, role=Role.SUPERADMIN).user.email
    waiting = make_member(school, status=MembershipStatus.PENDING, name=PARENT_NAME, email=PARENT_EMAIL)
    school_id, waiting_id = school.id, waiting.id
    db.session.remove()

    admin = new_context(java_script_enabled=False).new_page()
    sign_in(admin, admin_email)
    open_approvals(admin)
    with admin.expect_navigation(url=path_is("/members/pending")) as navigation:
        admin.get_by_role("button", name=f"Approve {PARENT_NAME}").click()
    # A plain POST (no htmx headers) that redirected back to the queue.
    response = navigation.value
    assert response.request.redirected_from is not None
    assert response.request.redirected_from.method == "POST"
    assert response.request.redirected_from.header_value("hx-request") is None
    expect(admin.locator(".flash-success")).to_have_text("Request approved.")
    expect(admin.get_by_text("Nobody is waiting.")).to_be_visible()

    with tenancy.bound(school_id):
        assert db.session.get(Membership, waiting_id).status == MembershipStatus.APPROVED
    db.session.remove()


@pytest.mark.parametrize("javascript", [True, False], ids=["htmx", "no-js"])
def test_wrong_code_shows_error_by_the_field_and_keeps_what_was_typed(new_context, make_school, javascript):
    make_school(name="Larkspur Primary", code="LARK-2024")
    db.session.remove()

    page = new_context(java_script_enabled=javascript).new_page()
    fill_join_form(page, code="NOT-A-CODE", name=PARENT_NAME, email=PARENT_EMAIL)
    with page.expect_response(re.compile(r"/join$")) as answer:
        page.get_by_role("button", name="Ask to join").click()
    assert answer.value.status == 400
    assert (answer.value.request.header_value("hx-request") == "true") is javascript

    code_field = page.locator(".field", has=page.get_by_label("Invitation code"))
    expect(code_field.locator(".error")).to_have_text(
        "We don't recognise this code. Check it with your school."
    )
    expect(code_field).to_have_class(re.compile(r"\bhas-error\b"))
    code_input = page.get_by_label("Invitation code")
    expect(code_input).to_have_attribute("aria-invalid", "true")
    expect(code_input).to_have_attribute("aria-describedby", re.compile(r"\binvite_code-error\b"))
    expect(code_input).to_have_value("NOT-A-CODE")
    # Only that field is in error, and what the parent typed is still there.
    expect(page.locator(".field .error")).to_have_count(1)
    expect(page.get_by_label("Your name")).to_have_value(PARENT_NAME)
    expect(page.get_by_label("Email address")).to_have_value(PARENT_EMAIL)
    expect(page).to_have_url(path_is("/join"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Join your school")
    # Still signed out: nobody was created or signed in.
    expect(main_nav(page).get_by_role("link", name="Sign in")).to_be_visible()
