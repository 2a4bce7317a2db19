"""An admin imports a CSV in Chromium: a broken row's problem shows beside it, the fixed file applies."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from app import tenancy
from app.extensions import db
from app.models import Role, SchoolClass
from tests.browser.helpers import path_is, sign_in

pytestmark = pytest.mark.browser

HEADER = "family_key,guardian_name,guardian_email,student_first_name,student_last_name,class_name\n"
GOOD = "F-1,Ada Lovelace,ada.lovelace@example.org,Byron,Lovelace,Rose\n"
BROKEN = "F-2,Grace Hopper,grace.hopper@example.org,Walter,Hopper,Daisy\n"  # no class Daisy
FIXED = BROKEN.replace("Daisy", "Rose")


def _choose(page, name: str, text: str) -> None:
    page.get_by_label("CSV file").set_input_files(
        {"name": name, "mimeType": "text/csv", "buffer": text.encode()}
    )
    page.get_by_role("button", name="Check the file").click()


def test_preview_shows_the_broken_rows_problem_beside_it_then_the_fixed_file_applies(
    new_context, make_school, make_member
):
    school = make_school(name="Larkspur Primary")
    with tenancy.bound(school.id):
        db.session.add(SchoolClass(name="Rose", grade="Grade 1", school_year="2026-27"))
        db.session.commit()
    admin_email = make_member(school, role=Role.ADMIN).user.email
    db.session.remove()  # the test's own session holds nothing while the server works

    page = new_context().new_page()
    sign_in(page, admin_email)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Import").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Import families from a spreadsheet")

    _choose(page, "families.csv", HEADER + GOOD + BROKEN)
    broken_row = page.locator("tr#line-3")
    expect(broken_row).to_contain_text("Grace Hopper")
    expect(broken_row).to_contain_text("There is no class named “Daisy”")
    expect(page.locator("tr#line-2")).to_contain_text("None")  # the good row has no problem
    expect(page.get_by_role("alert")).to_contain_text("1 of 2 rows has a problem")
    expect(page.get_by_role("button", name="Apply the import")).to_have_count(0)

    # The corrected file, uploaded from the same page, checks out and applies.
    _choose(page, "families.csv", HEADER + GOOD + FIXED)
    page.wait_for_url(re.compile(r"/import/\d+$"))
    expect(page.get_by_text("All 2 rows check out")).to_be_visible()
    page.get_by_role("button", name="Apply the import").click()
    expect(page.locator("#import-progress")).to_contain_text("Done.")
    expect(page.locator("#import-progress")).to_contain_text("2 families added")

    page.get_by_role("link", name="See the directory").click()
    expect(page).to_have_url(path_is("/directory/"))
    expect(page.get_by_text("Hopper family")).to_be_visible()
    expect(page.get_by_text("Lovelace family")).to_be_visible()
