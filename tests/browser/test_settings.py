"""In Chromium: an admin lets support in from the settings page and support reads the directory;
an admin changes a person's permissions and the person sees the change on their next page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from app import tenancy
from app.extensions import db
from app.models import Enrollment, Family, Guardian, PlatformRole, Role, SchoolClass, Student, User
from tests.browser.helpers import main_nav, path_is, sign_in
from tests.conftest import _HASH, PASSWORD

pytestmark = pytest.mark.browser


def _school_with_a_family(make_school, make_member):
    school = make_school(name="Juniper Primary")
    admin = make_member(school, role=Role.SUPERADMIN, name="Alma Admin")
    parent = make_member(school, name="Percy Parent", email="percy.parent@example.org")
    with tenancy.bound(school.id):
        school_class = SchoolClass(name="Wrens", grade="Grade 3", school_year="2026-27")
        family = Family(name="Parent family")
        db.session.add_all([school_class, family])
        db.session.flush()
        db.session.add(Guardian(family_id=family.id, membership_id=parent.id))
        student = Student(family_id=family.id, first_name="Poppy", last_name="Parent")
        db.session.add(student)
        db.session.flush()
        db.session.add(Enrollment(student_id=student.id, class_id=school_class.id))
        db.session.commit()
    return admin.user.email, parent


def test_admin_grants_support_access_and_support_reads_the_directory(new_context, make_school, make_member):
    admin_email, _ = _school_with_a_family(make_school, make_member)
    staff = User(email="sam.support@operator.example", name="Sam Support", password_hash=_HASH)
    staff.platform_role = PlatformRole.SUPPORT
    db.session.add(staff)
    db.session.commit()
    db.session.remove()

    # Support sees nothing of the school before the grant.
    support = new_context().new_page()
    support.goto("/sign-in")
    support.get_by_label("Email address").fill("sam.support@operator.example")
    support.get_by_label("Password").fill(PASSWORD)
    support.get_by_role("button", name="Sign in").click()
    support.wait_for_url(path_is("/platform/"))  # staff belong to no school: home is the console
    expect(support.get_by_role("button", name=re.compile("Open Juniper Primary"))).to_have_count(0)
    assert support.request.get("/directory/").status == 403

    # The admin allows 4 hours from the settings page; htmx saves the section in place.
    admin = new_context().new_page()
    sign_in(admin, admin_email)
    main_nav(admin).get_by_role("link", name="Settings", exact=True).click()
    admin.wait_for_url(path_is("/settings/"))
    section = admin.locator("#section-support")
    section.get_by_label("For how many hours").fill("4")
    admin.evaluate("window.__sameDocument = true")
    section.get_by_role("button", name="Allow support access").click()
    expect(section.get_by_role("button", name="Revoke now")).to_be_visible()
    assert admin.evaluate("window.__sameDocument") is True

    # Support opens the school read-only and reads the directory.
    support.goto("/platform/")
    support.get_by_role("button", name="Open Juniper Primary read-only").click()
    support.wait_for_url(path_is("/directory/"))
    expect(support.locator("#directory-results")).to_contain_text("Percy Parent")
    expect(support.locator("#directory-results")).to_contain_text("percy.parent@example.org")

    # The admin sees support's visit in the audit log.
    admin.goto("/settings/audit?action=support.viewed")
    expect(admin.locator("table.audit")).to_contain_text("Sam Support")
    expect(admin.locator("table.audit")).to_contain_text("/directory/")


def test_admin_edits_a_persons_permissions_and_the_person_sees_the_change(
    new_context, make_school, make_member
):
    admin_email, parent = _school_with_a_family(make_school, make_member)
    parent_email, parent_name = parent.user.email, parent.user.name
    db.session.remove()

    person = new_context().new_page()
    sign_in(person, parent_email)
    expect(main_nav(person).get_by_role("link", name="Approvals", exact=True)).to_have_count(0)

    admin = new_context().new_page()
    sign_in(admin, admin_email)
    admin.goto("/settings/people")
    admin.get_by_label("Search people").fill("percy")
    admin.locator("#people-results").get_by_role("link", name=parent_name).click()
    expect(admin.get_by_role("heading", level=1)).to_have_text(parent_name)
    admin.get_by_label("Approve people who ask to join").check()
    admin.get_by_role("button", name="Save permissions").click()
    expect(admin.locator("#flashes")).to_contain_text("1 permission changed.")
    expect(admin.get_by_label("Approve people who ask to join")).to_be_checked()

    person.reload()
    main_nav(person).get_by_role("link", name="Approvals", exact=True).click()
    person.wait_for_url(path_is("/members/pending"))
    expect(person.get_by_role("heading", level=1)).to_have_text("People waiting to join")
