"""In Chromium: typing in the directory filters it in place (htmx); each contact detail shows
to exactly the viewers its owner chose, seen by three different people."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app import tenancy
from app.extensions import db
from app.models import Enrollment, Family, Guardian, Role, SchoolClass, Student, Visibility
from tests.browser.helpers import sign_in

pytestmark = pytest.mark.browser

EMAIL, PHONE, ADDRESS = "olive.owner@example.org", "+1 555 0100", "12 Privet Lane"


def _family(school, member, name, school_class, **details):
    with tenancy.bound(school.id):
        for key, value in details.items():
            setattr(member, key, value)
        family = Family(name=name)
        db.session.add(family)
        db.session.flush()
        db.session.add(Guardian(family_id=family.id, membership_id=member.id))
        student = Student(family_id=family.id, first_name=f"Kid{name.split()[0]}", last_name=name.split()[0])
        db.session.add(student)
        db.session.flush()
        db.session.add(Enrollment(student_id=student.id, class_id=school_class.id))
        db.session.commit()


@pytest.fixture
def people(make_school, make_member):
    school = make_school(name="Linden School")
    with tenancy.bound(school.id):
        rose, tulip = (SchoolClass(name=n, grade="Grade 2", school_year="2026-27") for n in ("Rose", "Tulip"))
        db.session.add_all([rose, tulip])
        db.session.commit()
    olive = make_member(school, email=EMAIL, name="Olive Owner")
    _family(
        school,
        olive,
        "Owner family",
        rose,
        phone=PHONE,
        address=ADDRESS,
        email_visibility=Visibility.CLASSES,
        phone_visibility=Visibility.SCHOOL,
        address_visibility=Visibility.STAFF,
    )
    classmate = make_member(school, email="clara@example.org", name="Clara Classmate")
    _family(school, classmate, "Classmate family", rose)
    elsewhere = make_member(school, email="ed@example.org", name="Ed Elsewhere")
    _family(school, elsewhere, "Elsewhere family", tulip)
    make_member(school, role=Role.STAFF, email="sam@example.org", name="Sam Staff")
    db.session.remove()
    return {"classmate": "clara@example.org", "elsewhere": "ed@example.org", "staff": "sam@example.org"}


def test_typing_filters_the_directory_in_place(new_context, people):
    page = new_context().new_page()
    sign_in(page, people["classmate"])
    page.goto("/directory/")
    expect(page.locator(".family")).to_have_count(3)
    page.evaluate("window.__sameDocument = true")
    with page.expect_response(re.compile(r"/directory/\?q=else")) as answer:
        page.get_by_label("Search families, parents and children").press_sequentially("else", delay=30)
    assert answer.value.request.header_value("hx-request") == "true"
    expect(page.locator(".family")).to_have_count(1)
    expect(page.locator(".family")).to_contain_text("Elsewhere family")
    assert page.evaluate("window.__sameDocument") is True  # no reload: htmx swapped the results
    expect(page).to_have_url(re.compile(r"/directory/\?q=else(&|$)"))  # hx-push-url: a link to the result


def test_print_and_csv_follow_the_live_search(new_context, people):
    """Staff search as they type; the export forms (outside the live region) take the new words."""
    page = new_context().new_page()
    sign_in(page, people["staff"])
    page.goto("/directory/")
    with page.expect_response(re.compile(r"/directory/\?q=else")):
        page.get_by_label("Search families, parents and children").press_sequentially("else", delay=30)
    expect(page.locator(".family")).to_have_count(1)
    export = page.locator("#directory-export")
    expect(export.locator('input[name="q"]')).to_have_count(2)
    expect(export.locator('input[name="q"]').first).to_have_value("else")
    with page.expect_download() as download:
        export.get_by_role("button", name="Download these families (CSV)").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert "Elsewhere family" in text and "Classmate family" not in text


@pytest.mark.parametrize(
    ("viewer", "sees", "hidden"),
    [
        ("classmate", [EMAIL, PHONE], [ADDRESS]),  # same class: email (classes) and phone (school)
        ("elsewhere", [PHONE], [EMAIL, ADDRESS]),  # another class: only the school-wide phone
        ("staff", [EMAIL, PHONE, ADDRESS], []),  # staff see every detail
    ],
)
def test_each_detail_shows_to_the_viewers_its_owner_chose(new_context, people, viewer, sees, hidden):
    page = new_context().new_page()
    sign_in(page, people[viewer])
    page.goto("/directory/?q=owner")
    expect(page).to_have_url(re.compile(r"/directory/\?q=owner$"))
    card = page.locator(".family", has_text="Owner family")
    expect(card).to_contain_text("Olive Owner")
    for value in sees:
        expect(card).to_contain_text(value)
    for value in hidden:
        expect(card).not_to_contain_text(value)
    # Nor anywhere else on the page (not in a link, an attribute or a hidden element).
    html = page.content()
    for value in hidden:
        assert value not in html
