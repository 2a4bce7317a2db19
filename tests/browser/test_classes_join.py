"""In Chromium: a parent joins naming a child and its class, staff approve; a second guardian
joins with the family's code and a guardian of that family approves them."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from app import tenancy
from app.extensions import db
from app.models import Role, SchoolClass
from tests.browser.helpers import (
    fill_join_form,
    main_nav,
    open_approvals,
    path_is,
    sign_in,
    sign_in_after_joining,
)

pytestmark = pytest.mark.browser


def _classes(school, *names):
    with tenancy.bound(school.id):
        classes = [SchoolClass(name=n, grade="Grade 3", school_year="2026-27") for n in names]
        db.session.add_all(classes)
        db.session.commit()
        return [c.id for c in classes]


def test_parent_names_a_child_and_class_staff_approve_the_family_appears(
    new_context, make_school, make_member
):
    school = make_school(name="Larkspur Primary", code="LARK-2024")
    hazel_id, _ = _classes(school, "Hazel", "Juniper")
    staff_email = make_member(school, role=Role.STAFF).user.email
    db.session.remove()

    parent = new_context().new_page()
    fill_join_form(parent, code="lark-2024", name="Ottoline Fairweather", email="ottoline@example.org")
    child = parent.get_by_role("group", name="Child 1")
    # The class menu fills in once the code is known (htmx asks for this school's classes).
    expect(child.get_by_label("Class").locator("option", has_text="Hazel")).to_have_count(1)
    child.get_by_label("First name").fill("Mia")
    child.get_by_label("Last name").fill("Fairweather")
    child.get_by_label("Class").select_option(label="Hazel (Grade 3)")
    parent.get_by_role("button", name="Ask to join").click()
    sign_in_after_joining(parent, "ottoline@example.org")

    staff = new_context().new_page()
    sign_in(staff, staff_email)
    open_approvals(staff)
    row = staff.locator("li.queue-row", has_text="Ottoline Fairweather")
    expect(row).to_contain_text("Mia Fairweather (Hazel)")
    staff.get_by_role("button", name="Approve Ottoline Fairweather").click()
    expect(row).to_have_text(re.compile(r"Ottoline Fairweather: approved\."))

    # Approved: the parent's home lists the class, and its page lists the family.
    parent.goto("/")
    expect(parent.get_by_role("heading", name="Your classes")).to_be_visible()
    parent.get_by_role("link", name="Hazel").click()
    expect(parent).to_have_url(path_is(f"/classes/{hazel_id}"))
    expect(parent.locator(".family", has_text="Fairweather family")).to_contain_text("Mia (Hazel)")


def test_second_guardian_joins_with_the_family_code_and_a_guardian_approves(
    new_context, make_school, make_member, make_family
):
    school = make_school(name="Larkspur Primary", code="LARK-2024")
    (hazel_id,) = _classes(school, "Hazel")
    gina = make_member(school, name="Gina Guardian", email="gina@example.org")
    make_family(school, [gina], "Guardian family", [("Mia", "Guardian", [hazel_id])])
    db.session.remove()

    guardian = new_context().new_page()
    sign_in(guardian, "gina@example.org")
    main_nav(guardian).get_by_role("link", name="Classes", exact=True).click()
    guardian.get_by_role("link", name="My family").click()
    code = guardian.locator("#family-code").inner_text()
    assert re.fullmatch(r"[A-Z0-9]{10}", code)

    partner = new_context().new_page()
    fill_join_form(partner, code="LARK-2024", name="Pat Partner", email="pat@example.org")
    partner.get_by_label("Family code").fill(code.lower())
    partner.get_by_role("button", name="Ask to join").click()
    sign_in_after_joining(partner, "pat@example.org")

    guardian.reload()
    request = guardian.locator("li.queue-row", has_text="Pat Partner")
    expect(request).to_contain_text("pat@example.org")
    request.get_by_role("button", name="Approve Pat Partner").click()
    expect(guardian.locator(".flash-success")).to_contain_text("Pat Partner: approved.")
    expect(guardian.get_by_role("region", name="Guardians")).to_contain_text("Pat Partner")

    partner.goto("/classes/families/mine")
    expect(partner.get_by_role("heading", level=1)).to_have_text("Guardian family")
    expect(partner.get_by_role("region", name="Guardians")).to_contain_text("Gina Guardian")
