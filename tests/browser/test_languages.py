"""Languages in Chromium: a Spanish-speaking parent joins and is approved in Spanish, the footer
switch works without JavaScript, and an Arabic page is laid out right to left.

Expected texts come from the catalogues (gettext under the language), so the tests prove that the
browser shows the catalogue's Spanish, not that someone typed the same words twice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask_babel import force_locale, gettext
from playwright.sync_api import expect
from sqlalchemy import select

from app import create_app, tenancy
from app.extensions import db
from app.models import DevMail, Enrollment, Family, Guardian, Role, SchoolClass, Student
from tests.browser.conftest import TIMEOUT_MS
from tests.browser.helpers import NEW_PASSWORD, open_approvals, path_is, sign_in
from tests.browser.serving import serve_on_loopback
from tests.conftest import make_config

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "directory-ar.png"


def in_language(app, locale: str, text: str, **values) -> str:
    """``text`` as the catalogue of ``locale`` has it."""
    with app.test_request_context("/"), force_locale(locale):
        return gettext(text, **values)


@pytest.fixture
def mailbox_server(database_url) -> Iterator[str]:
    """The app on loopback with the development mailbox, so sent mail is read from the database."""
    server_app = create_app(make_config(database_url, SERVER_NAME=None, MAIL_BACKEND="devmailbox"))
    with serve_on_loopback(server_app) as base_url:
        yield base_url


def test_a_spanish_speaking_parent_joins_and_is_approved_in_spanish(
    app, browser, mailbox_server, make_school, make_member
):
    school = make_school(name="Larkspur Primary", code="LARK-2024")
    admin_email = make_member(school, role=Role.SUPERADMIN).user.email
    db.session.remove()
    es = lambda text, **values: in_language(app, "es", text, **values)  # noqa: E731
    assert es("Invitation code") != "Invitation code"  # the catalogue is there

    parent_context = browser.new_context(base_url=mailbox_server, locale="es-ES")
    parent_context.set_default_timeout(TIMEOUT_MS)
    parent = parent_context.new_page()
    parent.goto("/join")
    expect(parent.locator("html")).to_have_attribute("lang", "es")
    parent.get_by_label(es("Invitation code")).fill("LARK-2024")
    parent.get_by_label(es("Your name")).fill("Lucía Fernández")
    parent.get_by_label(es("Email address")).fill("lucia@example.org")
    parent.get_by_label(es("Choose a password")).fill(NEW_PASSWORD)
    parent.get_by_label(es("I have read the privacy policy and agree to it")).check()
    parent.get_by_role("button", name=es("Ask to join")).click()
    parent.wait_for_url(path_is("/join/sent"))
    expect(parent.get_by_role("heading", level=1)).to_have_text(es("Check your email"))

    admin_context = browser.new_context(base_url=mailbox_server)  # the admin reads English
    admin_context.set_default_timeout(TIMEOUT_MS)
    admin = admin_context.new_page()
    sign_in(admin, admin_email)
    open_approvals(admin)
    admin.get_by_role("button", name="Approve Lucía Fernández").click()
    expect(admin.locator("li.queue-row", has_text="Lucía Fernández")).to_contain_text("approved")

    db.session.remove()
    subjects = {
        mail.subject
        for mail in db.session.scalars(select(DevMail).where(DevMail.to_email == "lucia@example.org"))
    }
    assert es("Welcome to %(school_name)s", school_name="Larkspur Primary") in subjects
    admin_subjects = set(db.session.scalars(select(DevMail.subject).where(DevMail.to_email == admin_email)))
    assert admin_subjects and not any("Larkspur" in s and s in subjects for s in admin_subjects)
    parent_context.close()
    admin_context.close()


def test_the_language_switch_works_without_javascript(app, new_context):
    page = new_context(java_script_enabled=False).new_page()
    page.goto("/privacy")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_label("Language").select_option("es")
    page.get_by_role("button", name="Change").click()
    page.wait_for_url(path_is("/privacy"))
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.get_by_label(in_language(app, "es", "Language"))).to_have_value("es")
    page.goto("/sign-in")  # kept for the visit, on every page
    expect(page.locator("html")).to_have_attribute("lang", "es")


def _a_class_with_families(school) -> int:
    with tenancy.bound(school.id):
        school_class = SchoolClass(name="الصف الثاني أ", grade="2", school_year="2026-27")
        db.session.add(school_class)
        db.session.flush()
        for n, name in enumerate(("Haddad", "Nasser", "Khalil")):
            family = Family(name=f"{name} family", listed=True)
            db.session.add(family)
            db.session.flush()
            student = Student(family_id=family.id, first_name=f"Child{n}", last_name=name)
            db.session.add(student)
            db.session.flush()
            db.session.add(Enrollment(student_id=student.id, class_id=school_class.id))
        db.session.commit()
        return school_class.id


def test_an_arabic_page_is_laid_out_right_to_left(app, new_context, make_school, make_member, tmp_path):
    school = make_school(name="Cedar School")
    parent = make_member(school, name="Layla Haddad", email="layla@example.org")
    parent.user.language = "ar"
    db.session.commit()
    class_id = _a_class_with_families(school)
    with tenancy.bound(school.id):
        family = db.session.scalar(select(Family).where(Family.name == "Haddad family"))
        db.session.add(Guardian(family_id=family.id, membership_id=parent.id))
        db.session.commit()
    db.session.remove()

    page = new_context(viewport={"width": 1280, "height": 800}).new_page()
    sign_in(page, "layla@example.org")
    page.goto(f"/classes/{class_id}")
    html = page.locator("html")
    expect(html).to_have_attribute("lang", "ar")
    expect(html).to_have_attribute("dir", "rtl")
    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    # Mirrored: the main heading's text sits against the right edge of the page's column.
    main = page.locator("main").bounding_box()
    text = page.evaluate(
        """() => { const range = document.createRange();
                   range.selectNodeContents(document.querySelector("main h1"));
                   const box = range.getBoundingClientRect(); return {x: box.x, width: box.width}; }"""
    )
    assert main and text["width"] > 0
    right_gap = (main["x"] + main["width"]) - (text["x"] + text["width"])
    left_gap = text["x"] - main["x"]
    assert right_gap < 40 < left_gap, (right_gap, left_gap)
    page.screenshot(path=str(tmp_path / "directory-ar.png"), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS"):  # docs/screenshots/directory-ar.png, kept in the repo
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
