"""The join form in Chromium: a corrected code keeps the children typed; without JavaScript one
submit joins, with the code typed in lower case and without its hyphen."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app import tenancy
from app.auth import services as auth_services
from app.extensions import db
from app.models import Enrollment, Membership, MembershipStatus, Student
from tests.browser.helpers import NEW_PASSWORD, path_is

pytestmark = pytest.mark.browser

CODE_CHECK = re.compile(r"/join/classes\?")


def _school(make_school, make_class):
    school = make_school(name="Rowan Primary", code="ROWAN-2026")
    hazel, juniper = make_class(school, "Hazel"), make_class(school, "Juniper")
    ids = school.id, hazel.id, juniper.id
    db.session.remove()  # the test's own session holds nothing while the server works
    return ids


def _children(school_id):
    with tenancy.bound(school_id):
        students = db.session.scalars(select(Student).order_by(Student.first_name)).all()
        enrolled = {e.student_id: e.class_id for e in db.session.scalars(select(Enrollment))}
        pending = db.session.scalars(select(Membership).where(Membership.status == MembershipStatus.PENDING))
        waiting = len(pending.all())
    return [(s.first_name, s.last_name, enrolled.get(s.id)) for s in students], waiting


def test_correcting_the_code_keeps_the_children_and_offers_the_classes(
    new_context, make_school, make_class, monkeypatch
):
    school_id, hazel_id, juniper_id = _school(make_school, make_class)
    # A slow server: every code check takes a while, and the person keeps typing meanwhile.
    real = auth_services.classes_for_code

    def slow(code):
        time.sleep(0.8)
        return real(code)

    monkeypatch.setattr(auth_services, "classes_for_code", slow)
    page = new_context().new_page()
    page.goto("/join")
    first_menu = page.locator("#children-0-class_id")
    expect(first_menu).to_be_enabled()  # usable (and optional) before any code is known
    page.locator("#children-0-first_name").fill("Mirabel")
    page.locator("#children-0-last_name").fill("Keptchild")

    # A mistyped code: the check finds no school, nothing typed goes.
    with page.expect_response(CODE_CHECK):
        page.get_by_label("Invitation code").fill("ROWAN-2062")
        # Typed while the check is still on its way back.
        page.locator("#children-1-first_name").fill("Orrin")
    expect(first_menu.locator("option")).to_have_count(1)

    # Fixed, in lower case and without the hyphen: the classes come, the names stay.
    with page.expect_response(CODE_CHECK):
        page.get_by_label("Invitation code").fill("rowan2026")
        page.locator("#children-1-last_name").fill("Keptchild")
    expect(first_menu.locator("option", has_text="Hazel")).to_have_count(1)
    expect(page.locator("#children-0-first_name")).to_have_value("Mirabel")
    expect(page.locator("#children-0-last_name")).to_have_value("Keptchild")
    expect(page.locator("#children-1-first_name")).to_have_value("Orrin")
    expect(page.locator("#children-1-last_name")).to_have_value("Keptchild")

    first_menu.select_option(str(hazel_id))
    # Checking the same code again (a change event) keeps the class picked, by value.
    with page.expect_response(CODE_CHECK):
        page.get_by_label("Invitation code").fill("ROWAN-2026")
    expect(first_menu).to_have_value(str(hazel_id))
    page.locator("#children-1-class_id").select_option(str(juniper_id))

    page.get_by_label("Your name").fill("Nadia Newparent")
    page.get_by_label("Email address").fill("nadia-at-nowhere")
    page.get_by_label("Choose a password").fill(NEW_PASSWORD)
    page.get_by_label("I have read the privacy policy").check()
    page.get_by_role("button", name="Ask to join").click()

    # The error is beside the email; everything else came back as typed.
    error = page.locator("#email-error")
    expect(error).to_be_visible()
    expect(page.locator("#children-1-first_name")).to_have_value("Orrin")
    expect(first_menu).to_have_value(str(hazel_id))
    expect(page.get_by_label("Invitation code")).to_have_value("ROWAN-2026")
    # The error goes as soon as the address is corrected, before any submit.
    page.get_by_label("Email address").fill("nadia@example.org")
    expect(error).to_have_count(0)
    expect(page.get_by_label("Email address")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator(".error-summary")).to_have_count(0)

    page.get_by_label("Choose a password").fill(NEW_PASSWORD)  # never sent back into the page
    page.get_by_role("button", name="Ask to join").click()
    page.wait_for_url(path_is("/join/sent"))
    children, waiting = _children(school_id)
    assert children == [("Mirabel", "Keptchild", hazel_id), ("Orrin", "Keptchild", juniper_id)]
    assert waiting == 1


def test_without_javascript_one_submit_joins_with_a_loosely_typed_code(new_context, make_school, make_class):
    school_id, _, _ = _school(make_school, make_class)
    page = new_context(java_script_enabled=False).new_page()
    page.goto("/join")
    expect(page.locator("#children-0-class_id")).to_be_enabled()
    page.get_by_label("Invitation code").fill("rowan 2026")
    page.get_by_label("Your name").fill("Nadia Newparent")
    page.get_by_label("Email address").fill("nadia@example.org")
    page.get_by_label("Choose a password").fill(NEW_PASSWORD)
    page.locator("#children-0-first_name").fill("Mirabel")
    page.locator("#children-0-last_name").fill("Keptchild")
    page.get_by_label("I have read the privacy policy").check()
    page.get_by_role("button", name="Ask to join").click()
    page.wait_for_url(path_is("/join/sent"))
    children, waiting = _children(school_id)
    # The class waits for the school to place the child (the menu had none to offer yet).
    assert children == [("Mirabel", "Keptchild", None)] and waiting == 1


def test_without_javascript_a_refused_submit_offers_the_classes_and_keeps_everything(
    new_context, make_school, make_class
):
    school_id, hazel_id, _ = _school(make_school, make_class)
    page = new_context(java_script_enabled=False).new_page()
    page.goto("/join")
    page.get_by_label("Invitation code").fill("Rowan-2026")
    page.get_by_label("Your name").fill("Nadia Newparent")
    page.get_by_label("Email address").fill("nadia-at-nowhere")
    page.get_by_label("Choose a password").fill(NEW_PASSWORD)
    page.locator("#children-0-first_name").fill("Mirabel")
    page.locator("#children-0-last_name").fill("Keptchild")
    page.get_by_label("I have read the privacy policy").check()
    page.get_by_role("button", name="Ask to join").click()
    expect(page.locator("#email-error")).to_be_visible()
    expect(page.locator("#children-0-first_name")).to_have_value("Mirabel")
    expect(page.get_by_label("Invitation code")).to_have_value("Rowan-2026")
    page.locator("#children-0-class_id").select_option(str(hazel_id))
    page.get_by_label("Email address").fill("nadia@example.org")
    page.get_by_label("Choose a password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Ask to join").click()
    page.wait_for_url(path_is("/join/sent"))
    assert _children(school_id) == ([("Mirabel", "Keptchild", hazel_id)], 1)


def test_what_is_typed_while_a_refused_submit_is_on_its_way_stays(
    new_context, make_school, make_class, monkeypatch
):
    """htmx swaps the answer in with what was sent; a field edited meanwhile keeps the new text."""
    _school(make_school, make_class)
    real = auth_services.classes_for_code

    def slow(code):
        time.sleep(1.0)
        return real(code)

    page = new_context().new_page()
    page.goto("/join")
    page.get_by_label("Invitation code").fill("ROWAN-2026")
    page.get_by_label("Your name").fill("Nadia")
    page.get_by_label("Email address").fill("nadia-at-nowhere")
    page.locator("#children-0-first_name").fill("Mirabel")
    monkeypatch.setattr(auth_services, "classes_for_code", slow)
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/join")):
        page.get_by_role("button", name="Ask to join").click()
        page.get_by_label("Your name").fill("Nadia Newparent")
        page.locator("#children-0-last_name").fill("Keptchild")
    expect(page.locator("#email-error")).to_be_visible()
    expect(page.get_by_label("Your name")).to_have_value("Nadia Newparent")
    expect(page.locator("#children-0-last_name")).to_have_value("Keptchild")
    expect(page.locator("#children-0-first_name")).to_have_value("Mirabel")
