"""In Chromium: the month grid at 1366 px, the agenda it becomes at 360 px (no sideways
scrolling), month-to-month links with and without JavaScript, and no serious axe violations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from app.models import Role
from tests.browser.helpers import sign_in
from tests.browser.test_a11y import BLOCKING, RUN_AXE

pytestmark = pytest.mark.browser

OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"


@pytest.fixture
def next_march(make_school, make_member, make_event) -> str:
    """A school in London with a long-titled event on 10 March next year (the real clock: the
    live server does not run on the clock fixture)."""
    year = datetime.now(UTC).year + 1
    school = make_school(name="Larkspur Primary")
    school.timezone = "Europe/London"
    make_member(school, role=Role.STAFF, email="sam@example.org")
    make_event(
        school,
        "Spring concert rehearsal for every class, parents welcome in the main hall",
        start=datetime(year, 3, 10, 18, 0, tzinfo=UTC),
        location="Main hall",
    )
    return f"{year}-03"


def _axe(page, axe_source: str) -> list[str]:
    page.evaluate(axe_source)
    return [f"{v['id']}: {v['help']} {v['nodes']}" for v in page.evaluate(RUN_AXE) if v["impact"] in BLOCKING]


@pytest.mark.parametrize("width", [1366, 360])
def test_the_month_fits_the_screen(new_context, next_march, axe_source, width):
    page = new_context(viewport={"width": width, "height": 800}).new_page()
    sign_in(page, "sam@example.org")
    page.goto(f"/calendar/month?month={next_march}")
    table = page.locator("table.month-grid")
    expect(table.locator("caption")).to_have_text(f"March {next_march[:4]}")
    assert page.evaluate(OVERFLOW) <= 0
    day = table.locator(f'td[data-day="{next_march}-10"]')
    expect(day).to_contain_text("6:00 PM")
    if width == 360:
        # An agenda: no weekday header row, only the days that have events, each with its date.
        expect(table.locator("thead")).to_be_hidden()
        expect(table.locator(f'td[data-day="{next_march}-11"]')).to_be_hidden()
        expect(day.locator(".day-full")).to_be_visible()
        box = day.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    else:
        expect(table.locator("thead th")).to_have_count(7)
        expect(table.locator(f'td[data-day="{next_march}-11"]')).to_be_visible()
        expect(day.locator(".day-full")).not_to_be_in_viewport()
    assert _axe(page, axe_source) == []


@pytest.mark.parametrize("javascript", [True, False], ids=["htmx", "no-js"])
def test_next_and_previous_months(new_context, next_march, javascript):
    page = new_context(java_script_enabled=javascript).new_page()
    sign_in(page, "sam@example.org")
    page.goto(f"/calendar/month?month={next_march}")
    year = next_march[:4]
    with page.expect_response(lambda r: "/calendar/month" in r.url) as answer:
        page.get_by_role("link", name="Next month").click()
    assert (answer.value.request.header_value("hx-request") == "true") is javascript
    expect(page.locator("table.month-grid caption")).to_have_text(f"April {year}")
    expect(page).to_have_url(f"{page.url.split('/calendar')[0]}/calendar/month?month={year}-04")
    page.get_by_role("link", name="Previous month").click()
    expect(page.locator("table.month-grid caption")).to_have_text(f"March {year}")
    # "Add to my calendar" opens without JavaScript (a details element).
    page.get_by_text("Add to my calendar").first.click()
    expect(page.get_by_role("link", name="Google Calendar")).to_be_visible()
