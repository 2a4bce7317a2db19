"""In Chromium: staff add an event on the school's clock (errors in place), and a parent's
private feed address works in a cookieless client and shows only what the parent may see."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time

import pytest
from babel.dates import format_skeleton, format_time
from playwright.sync_api import expect

from app import tenancy
from app.extensions import db
from app.models import Enrollment, Family, Guardian, Role, SchoolClass, Student
from tests.browser.helpers import main_nav, path_is, sign_in

pytestmark = pytest.mark.browser


def _next_summer_day() -> date:
    """1 July of next year on the real clock: always ahead, and in London's summer time.

    Not the clock fixture: Chromium, which keeps the session cookie, runs on the real clock.
    """
    return date(datetime.now(UTC).year + 1, 7, 1)


@pytest.fixture
def school_people(make_school, make_member):
    school = make_school(name="Larkspur Primary")
    school.timezone = "Europe/London"
    db.session.commit()
    with tenancy.bound(school.id):
        hazel, juniper = (SchoolClass(name=n, grade="3", school_year="2026-27") for n in ("Hazel", "Juniper"))
        db.session.add_all([hazel, juniper])
        db.session.flush()
        parent = make_member(school, email="hana@example.org", name="Hana Hazel")
        family = Family(name="Hazel family")
        db.session.add(family)
        db.session.flush()
        db.session.add(Guardian(family_id=family.id, membership_id=parent.id))
        kid = Student(family_id=family.id, first_name="Kit", last_name="Hazel")
        db.session.add(kid)
        db.session.flush()
        db.session.add(Enrollment(student_id=kid.id, class_id=hazel.id))
        db.session.commit()
    make_member(school, role=Role.STAFF, email="sam@example.org")
    db.session.remove()


@pytest.mark.parametrize("javascript", [True, False], ids=["htmx", "no-js"])
def test_staff_add_events_errors_stay_by_the_field(new_context, school_people, javascript):
    day = _next_summer_day().isoformat()
    page = new_context(java_script_enabled=javascript).new_page()
    sign_in(page, "sam@example.org")
    main_nav(page).get_by_role("link", name="Calendar").click()
    page.get_by_role("link", name="Add an event").click()
    page.get_by_label("Title").fill("Juniper trip")
    page.get_by_label("For").select_option(label="Juniper")
    page.get_by_label("Starts").fill(f"{day}T09:00")
    page.get_by_label("Ends").fill(f"{day}T08:00")
    with page.expect_response(re.compile(r"/calendar/new$")) as answer:
        page.get_by_role("button", name="Save event").click()
    assert answer.value.status == 400
    assert (answer.value.request.header_value("hx-request") == "true") is javascript
    ends = page.locator(".field", has=page.get_by_label("Ends"))
    expect(ends.locator(".error")).to_have_text("The end cannot be before the start.")
    expect(page.get_by_label("Title")).to_have_value("Juniper trip")
    page.get_by_label("Ends").fill(f"{day}T15:30")
    page.get_by_role("button", name="Save event").click()
    page.wait_for_url(path_is("/calendar/"))
    event = page.locator(".event", has_text="Juniper trip")
    starts = datetime.combine(_next_summer_day(), time(9, 0))
    shown = f"{format_skeleton('yMMMEd', starts, locale='en')}, {format_time(starts, 'short', locale='en')}"
    expect(event).to_contain_text(shown)  # London summer time, as typed ("Thu, Jul 1, 2027, 9:00 AM")
    expect(event).to_contain_text(format_time(time(15, 30), "short", locale="en"))


def test_a_parents_feed_works_without_a_cookie_and_holds_only_their_events(
    new_context, school_people, make_member
):
    day = _next_summer_day()
    staff = new_context().new_page()
    sign_in(staff, "sam@example.org")
    for title, audience in (("Hazel picnic", "Hazel"), ("Juniper trip", "Juniper")):
        staff.goto("/calendar/new")
        staff.get_by_label("Title").fill(title)
        staff.get_by_label("For").select_option(label=audience)
        staff.get_by_label("Starts").fill(f"{day.isoformat()}T09:00")
        staff.get_by_label("Ends").fill(f"{day.isoformat()}T10:00")
        staff.get_by_role("button", name="Save event").click()
        staff.wait_for_url(path_is("/calendar/"))

    parent = new_context().new_page()
    sign_in(parent, "hana@example.org")
    parent.goto("/calendar/")
    expect(parent.locator(".event")).to_have_count(1)
    parent.get_by_role("button", name="Make a feed address").click()
    address = parent.get_by_label("Feed address")
    expect(address).to_have_value(re.compile(r"^http://.+/calendar/feed/[A-Za-z0-9_-]{40,}\.ics$"))
    # The address is built from PUBLIC_URL; fetch its path from the live server.
    url = "/" + address.input_value().split("/", 3)[3]

    calendar_app = new_context()  # no cookies: as a calendar app fetches it
    response = calendar_app.request.get(url)
    assert response.status == 200
    body = response.text()
    assert "SUMMARY:Hazel picnic" in body and "Juniper trip" not in body
    assert f"DTSTART:{day:%Y%m%d}T080000Z" in body  # 09:00 in London is 08:00 UTC in July

    parent.reload()
    expect(parent.get_by_label("Feed address")).to_have_count(0)  # shown once only
    parent.get_by_role("button", name="Switch the feed off").click()
    expect(parent.locator(".flash-success")).to_contain_text("switched off")
    assert calendar_app.request.get(url).status == 404
