"""The policy notice in a real browser: htmx dismisses it in place, and it stays reachable."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from playwright.sync_api import expect

from app.consent import policy
from app.extensions import db
from app.models.base import utcnow
from tests.browser.helpers import sign_in

pytestmark = pytest.mark.browser


def test_the_banner_is_dismissed_in_place_and_the_footer_keeps_the_notice(context, make_school, make_member):
    school = make_school(name="Sorrel School")
    make_member(school, email="sol.parent@example.org", name="Sol Parent")
    with time_machine.travel(utcnow() + timedelta(minutes=1)):  # posted after Sol joined
        policy.ensure_placeholder()
        draft = policy.create_draft(
            body="New words",
            summary="We now keep sign-in records for 90 days.",
            material=True,
            email=False,
            notice=True,
            by=None,
        )
        policy.publish(draft)
        db.session.commit()
    db.session.remove()

    page = context.new_page()
    sign_in(page, "sol.parent@example.org")
    banner = page.locator("#consent-banner")
    expect(banner).to_contain_text("We now keep sign-in records for 90 days.")
    page.get_by_role("button", name="I have read it").click()
    expect(banner).to_contain_text("Thank you")  # swapped by htmx, no page load
    assert page.url.endswith("/")
    page.reload()
    expect(page.locator("#consent-banner")).to_have_count(0)
    page.get_by_role("contentinfo").get_by_role("link", name="Policy changes").click()
    expect(page.get_by_role("heading", name="Version 2")).to_be_visible()
    expect(page.get_by_role("link", name="Close my account")).to_be_visible()
