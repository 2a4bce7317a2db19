"""In Chromium, with mail going out through the fake Mailgun and its webhooks coming back: the
message page counts a bounce and a complaint; the admin finds both addresses on the suppression
list with their reasons and dates, lifts one in place (htmx) and one without JavaScript, and
Mailgun's own lists are emptied through its API."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from babel.dates import format_skeleton
from playwright.sync_api import Page, expect

from app import create_app
from app.extensions import db
from app.models import Role
from tests.browser.helpers import main_nav, path_is, sign_in
from tests.browser.serving import serve_on_loopback
from tests.conftest import make_config
from tests.fakes.mailgun import FakeMailgun, webhook_body
from tests.mailgun_hooks import API_KEY, DOMAIN, SIGNING_KEY, WEBHOOK

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("loopback_only")]
PIA, PAUL = "pia.parent@maple.example", "paul.parent@maple.example"


@pytest.fixture
def site(app, database_url, browser) -> Iterator[tuple[FakeMailgun, str, list]]:
    """The app served on loopback, sending through a fake Mailgun; (fake, base URL, contexts)."""
    with FakeMailgun(api_key=API_KEY, domain=DOMAIN) as fake:
        config = make_config(
            database_url,
            SERVER_NAME=None,
            MAIL_BACKEND="mailgun",
            MAILGUN_API_KEY=API_KEY,
            MAILGUN_DOMAIN=DOMAIN,
            MAILGUN_BASE_URL=fake.base_url,
            MAILGUN_TIMEOUT=5,
            MAILGUN_WEBHOOK_SIGNING_KEY=SIGNING_KEY,
        )
        contexts: list = []
        with serve_on_loopback(create_app(config)) as base_url:
            yield fake, base_url, contexts
            for context in contexts:  # closed before the server stops: no request left in flight
                context.close()


def _page(browser, site, **options) -> Page:
    _, base_url, contexts = site
    context = browser.new_context(base_url=base_url, **options)
    context.set_default_timeout(10_000)
    contexts.append(context)
    return context.new_page()


def _mailgun_posts(base_url: str, event: dict) -> int:
    """POST a signed webhook to the site, as Mailgun does."""
    body = json.dumps(webhook_body(event, SIGNING_KEY)).encode()
    request = urllib.request.Request(
        base_url + WEBHOOK, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        return response.status


def test_bounce_and_complaint_are_counted_listed_and_lifted(browser, site, make_school, make_member):
    fake, base_url, _ = site
    school = make_school(name="Maple Primary")
    admin = make_member(school, role=Role.SUPERADMIN, name="Alma Admin", email="alma@maple.example")
    make_member(school, name="Pia Parent", email=PIA)
    make_member(school, name="Paul Parent", email=PAUL)
    admin_email = admin.user.email
    db.session.remove()

    # The admin sends a school announcement; it goes out through Mailgun at once.
    page = _page(browser, site)
    sign_in(page, admin_email)
    page.goto("/messages/new?kind=school")
    page.get_by_label("Subject").fill("Sports day")
    page.get_by_label("Message").fill("Bring a hat.")
    page.get_by_role("button", name="Send", exact=True).click()
    page.wait_for_url(re.compile(r"/messages/\d+$"))
    expect(page.locator('[data-count="sent"]')).to_have_text("3")
    expect(page.locator('[data-count="bounced"]')).to_have_text("0")

    # Mailgun reports Pia's address dead and Paul's complaint.
    assert _mailgun_posts(base_url, fake.event_for(PIA, "bounce")) == 200
    assert _mailgun_posts(base_url, fake.event_for(PAUL, "complaint")) == 200
    page.reload()
    expect(page.locator('[data-count="bounced"]')).to_have_text("1")
    expect(page.locator('[data-count="complained"]')).to_have_text("1")

    # Both are on the suppression list, with their reasons and dates.
    main_nav(page).get_by_role("link", name="Settings", exact=True).click()
    page.get_by_role("link", name="Email suppressions").click()
    page.wait_for_url(path_is("/settings/suppressions"))
    pia_row = page.locator("li.queue-row", has_text=PIA)
    expect(pia_row).to_contain_text("Pia Parent")
    expect(pia_row).to_contain_text("Bounced: the receiving server says the address does not exist")
    expect(pia_row).to_contain_text("All email")
    today = format_skeleton("yMMMd", datetime.now(UTC), locale="en")  # "Dec 4, 2026"
    expect(pia_row).to_contain_text(today)  # the school's clock: UTC
    expect(page.locator("li.queue-row", has_text=PAUL)).to_contain_text("Marked one of our emails as spam")

    # At 360 px the list fits the screen.
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360

    # Lifting Pia's happens in place; Mailgun is asked to forget her bounce.
    assert fake.suppressed("bounces") == {PIA}
    page.evaluate("window.__sameDocument = true")
    pia_row.get_by_role("button", name=f"Lift the suppression of {PIA}").click()
    expect(page.get_by_role("status").filter(has_text=f"Lifted: email goes to {PIA} again")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    assert fake.removals == [("bounces", PIA)]
    page.reload()
    expect(page.locator("li.queue-row", has_text=PIA)).to_have_count(0)

    # Without JavaScript the same button is a plain form: 303 back to the list, with a flash.
    plain = _page(browser, site, java_script_enabled=False)
    sign_in(plain, admin_email)
    plain.goto("/settings/suppressions")
    plain.get_by_role("button", name=f"Lift the suppression of {PAUL}").click()
    plain.wait_for_url(path_is("/settings/suppressions"))
    expect(plain.locator("#flashes")).to_contain_text("Suppression lifted: email goes to that address again")
    expect(plain.get_by_text("No address is suppressed.")).to_be_visible()
    assert fake.removals == [("bounces", PIA), ("complaints", PAUL)]
    assert fake.suppressed("complaints") == set()
