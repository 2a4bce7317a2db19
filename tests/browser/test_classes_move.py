"""In Chromium: a guardian moves a child to another class; it waits; staff approve it in place."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from app import tenancy
from app.extensions import db
from app.models import Role, SchoolClass
from tests.browser.helpers import open_approvals, sign_in

pytestmark = pytest.mark.browser


def test_a_class_move_waits_then_staff_approve_it_in_place(
    new_context, make_school, make_member, make_family
):
    school = make_school(name="Larkspur Primary")
    school.families_edit_own = True
    db.session.commit()
    with tenancy.bound(school.id):
        hazel, juniper = (SchoolClass(name=n, grade="3", school_year="2026-27") for n in ("Hazel", "Juniper"))
        db.session.add_all([hazel, juniper])
        db.session.flush()
        db.session.commit()
        hazel_id, juniper_id = hazel.id, juniper.id
    gina = make_member(school, email="gina@example.org", name="Gina Guardian")
    make_family(school, [gina], "Guardian family", [("Mia", "Guardian", [hazel_id])])
    make_member(school, role=Role.STAFF, email="sam@example.org")
    db.session.remove()

    guardian = new_context().new_page()
    sign_in(guardian, "gina@example.org")
    guardian.goto("/classes/families/mine")
    child = guardian.locator("form", has=guardian.get_by_role("heading", name="Mia"))
    child.get_by_label("Classes").select_option(label="Juniper (3, 2026-27)")
    child.get_by_role("button", name="Save").click()
    expect(guardian.locator(".flash-success")).to_contain_text("waits for the school's approval")
    expect(guardian.get_by_text("Mia: move from Hazel to Juniper")).to_be_visible()
    guardian.goto(f"/classes/{juniper_id}")
    expect(guardian.locator(".family", has_text="Guardian family")).to_have_count(0)

    staff = new_context().new_page()
    sign_in(staff, "sam@example.org")
    open_approvals(staff)
    row = staff.locator("li.queue-row", has_text="Move from Hazel to Juniper")
    staff.evaluate("window.__sameDocument = true")
    with staff.expect_response(re.compile(r"/classes/families/changes/approve$")) as answer:
        row.get_by_role("button", name="Approve the change for Mia").click()
    assert answer.value.request.header_value("hx-request") == "true"
    expect(staff.locator("li.queue-row.decided")).to_contain_text("Mia Guardian · Juniper: approved.")
    assert staff.evaluate("window.__sameDocument") is True

    guardian.goto(f"/classes/{juniper_id}")
    expect(guardian.locator(".family", has_text="Guardian family")).to_contain_text("Mia (Juniper)")
    guardian.goto(f"/classes/{hazel_id}")
    expect(guardian.locator(".family", has_text="Guardian family")).to_have_count(0)
