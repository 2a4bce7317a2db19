"""The software's default privacy policy is written from this deployment's configuration: it
names exactly the outside services that are configured, its retention figures are the ones the
code runs on, and its cookie list is the cookies the app sets. The operator's own version
replaces it."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.consent import disclosures, policy
from app.extensions import db
from app.models import AccountToken, PlatformRole, User
from app.models.consent import PolicyVersion
from tests.conftest import _HASH, sign_in

GA_ID = "G-TEST12345"
# Each processor: the settings that switch it on, and the name the policy must use for it.
PROCESSORS = {
    "Mailgun": {"MAIL_BACKEND": "mailgun", "MAILGUN_API_KEY": "key-test", "MAILGUN_DOMAIN": "mg.example.org"},
    "Zendesk": {"ZENDESK_SUBDOMAIN": "school", "ZENDESK_EMAIL": "ops@example.org", "ZENDESK_API_TOKEN": "t"},
    "Google Analytics": {"GA_MEASUREMENT_ID": GA_ID},
    "LibreTranslate": {"TRANSLATE_URL": "https://translate.example.org"},
}
OFF = {
    "MAIL_BACKEND": "memory",
    "MAILGUN_API_KEY": None,
    "MAILGUN_DOMAIN": None,
    "ZENDESK_SUBDOMAIN": None,
    "ZENDESK_EMAIL": None,
    "ZENDESK_API_TOKEN": None,
    "GA_MEASUREMENT_ID": None,
    "TRANSLATE_URL": None,
}


def _body(app) -> str:
    with app.test_request_context("/"):
        return policy.placeholder_body()


def _section(body: str, heading: str) -> str:
    return body.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _operator() -> User:
    """A platform admin (the operator's own person, in no school)."""
    user = User(email="op@platform.example", name="Op", password_hash=_HASH, platform_role=PlatformRole.ADMIN)
    db.session.add(user)
    db.session.commit()
    return user


def _configure(app, names) -> None:
    app.config.update(OFF)
    for name in names:
        app.config.update(PROCESSORS[name])


def test_the_policy_names_exactly_the_configured_processors(app):
    for count in range(len(PROCESSORS) + 1):
        for on in itertools.combinations(PROCESSORS, count):
            _configure(app, on)
            body = _body(app)
            for name in PROCESSORS:
                assert (name in body) is (name in on), (on, name)
            services = _section(body, "Outside services")
            assert re.findall(r"^- \*\*([^*]+)\*\*", services, re.MULTILINE) == [
                name for name in ("Mailgun", "Google Analytics", "Zendesk", "LibreTranslate") if name in on
            ]
            if not on:
                assert "no outside service" in services
                assert "Google" not in body
    _configure(app, ())


def test_half_a_zendesk_configuration_is_not_named(app):
    _configure(app, ())
    app.config.update(ZENDESK_SUBDOMAIN="school", ZENDESK_EMAIL="ops@example.org")  # no token
    assert "Zendesk" not in _body(app)  # requests wait, stored: nothing reaches Zendesk


def test_the_retention_figures_are_the_ones_the_code_uses(app):
    from app.consent.export import EXPORT_LIFETIME
    from app.imports.services import PREVIEW_DAYS
    from app.members.lifecycle import INVITATION_HOURS
    from app.models.consent import NOTICE_PERIOD
    from app.sessions import ANONYMOUS_LIFETIME
    from app.settings.support_access import MAX_GRANT_HOURS
    from app.support.forms import GRANT_HOURS

    body = _body(app)
    config = app.config
    expected = [
        f"lasts {config['PERMANENT_SESSION_LIFETIME'].days} days after your last visit",
        f"({int(ANONYMOUS_LIFETIME.total_seconds() // 3600)} hours otherwise)",
        f"new password works for {config['PASSWORD_RESET_HOURS']} hour",
        f"new email address for {config['EMAIL_CHANGE_HOURS']} hours",
        f"an invitation for {INVITATION_HOURS // 24} days",
        f"downloaded for {int(EXPORT_LIFETIME.total_seconds() // 3600)} hours",
        f"deleted after {PREVIEW_DAYS} days",
        f"for at most {MAX_GRANT_HOURS} hours",
        f"ends by itself after {GRANT_HOURS} hours",
        f"It takes effect {NOTICE_PERIOD.days} days after",
    ]
    for phrase in expected:
        assert phrase in body, phrase


def test_the_figures_follow_the_configuration_and_constants(app, monkeypatch):
    """Not written into the text: change the settings and constants and the sentences change."""
    import app.consent.export as export
    import app.imports.services as imports
    import app.members.lifecycle as lifecycle
    import app.models.consent as consent_models

    app.config.update(PERMANENT_SESSION_LIFETIME=timedelta(days=9), PASSWORD_RESET_HOURS=3)
    monkeypatch.setattr(lifecycle, "INVITATION_HOURS", 11 * 24)
    monkeypatch.setattr(export, "EXPORT_LIFETIME", timedelta(hours=5))
    monkeypatch.setattr(imports, "PREVIEW_DAYS", 13)
    monkeypatch.setattr(consent_models, "NOTICE_PERIOD", timedelta(days=45))
    body = _body(app)
    for phrase in (
        "lasts 9 days after your last visit",
        "new password works for 3 hours",
        "an invitation for 11 days",
        "downloaded for 5 hours",
        "deleted after 13 days",
        "It takes effect 45 days after",
    ):
        assert phrase in body, phrase


def test_an_invitation_link_lasts_as_long_as_the_policy_says(client, app, sent_mail, clock):
    """The figure is the one the invitation is made with (the first admin of a new school)."""
    from app.models import PlatformRole, User
    from tests.conftest import _HASH

    operator = User(
        email="op@platform.example", name="Op", password_hash=_HASH, platform_role=PlatformRole.ADMIN
    )
    db.session.add(operator)
    db.session.commit()
    sign_in(client, operator.email)
    form = {"name": "Birch", "code": "BIRCH-1", "timezone": "UTC", "default_language": "en"}
    form |= {"admin_name": "Bea", "admin_email": "bea@example.org"}
    assert client.form("/platform/schools/new", form).status_code == 303
    token = db.session.scalar(select(AccountToken))
    days = disclosures.retention().invitation_days
    assert token.expires_at - token.created_at == timedelta(days=days)
    assert f"an invitation for {days} days" in _body(app)


@pytest.mark.parametrize("analytics", [False, True])
def test_the_cookie_list_is_the_cookies_the_app_sets(build_app, make_school, make_member, analytics):
    app = build_app(GA_MEASUREMENT_ID=GA_ID if analytics else None)
    school = make_school(code="ROWAN-1")
    member = make_member(school)
    client = app.test_client()
    set_by_server: set[str] = set()

    def record(response):
        for header in response.headers.getlist("Set-Cookie"):
            set_by_server.add(header.split("=", 1)[0])
        return response

    record(client.get("/sign-in"))
    record(client.get("/privacy"))
    record(sign_in(client, member.user.email))
    record(client.get("/"))
    record(client.get("/directory/"))
    record(client.form("/sign-out"))
    with app.app_context():
        body = _body(app)
        named = re.findall(r"\*\*([^*]+)\*\*", _section(body, "Cookies"))
        listed = disclosures.cookie_names()
    assert named == listed  # the policy and the cookies page share one list
    assert set_by_server == {app.config["SESSION_COOKIE_NAME"]}
    # The server sets the session cookie only; Google's script sets its own, named only when on.
    assert set(named) - set_by_server == (set(disclosures.ANALYTICS_COOKIES) if analytics else set())


def test_the_cookies_page_lists_the_same_cookies(client, build_app):
    for analytics in (False, True):
        app = build_app(GA_MEASUREMENT_ID=GA_ID if analytics else None)
        page = app.test_client().get("/cookies").get_data(as_text=True)
        with app.test_request_context("/"):
            names = disclosures.cookie_names()
        shown = re.findall(r'<th scope="row">(.*?)</th>', page)
        assert [code for row in shown for code in re.findall(r"<code>([^<]+)</code>", row)] == names


def test_the_privacy_page_shows_the_default_until_the_operator_publishes(
    client, app, make_school, make_member
):
    _configure(app, ("Mailgun",))
    page = client.get("/privacy").get_data(as_text=True)
    assert "<strong>Mailgun</strong>" in page and "Zendesk" not in page
    assert db.session.scalar(select(PolicyVersion)) is None  # reading writes nothing
    with app.test_request_context("/"):
        version = policy.ensure_placeholder()
        db.session.commit()
        assert policy.is_placeholder(version)
    from app.models import PlatformRole, User
    from tests.conftest import _HASH

    admin = User(
        email="op@platform.example", name="Op", password_hash=_HASH, platform_role=PlatformRole.ADMIN
    )
    db.session.add(admin)
    db.session.commit()
    sign_in(client, admin.email)
    new = client.get("/platform/policy/new").get_data(as_text=True)
    assert "Mailgun" in new  # the draft starts from the default text, to edit
    data = {
        "body": "## Our own policy\n\nWritten by the operator.",
        "summary": "Our own words.",
        "language": "en",
    }
    assert client.form("/platform/policy/new", data).status_code == 303
    assert client.form("/platform/policy/2/publish").status_code == 303
    page = client.get("/privacy").get_data(as_text=True)
    assert "Written by the operator." in page and "<strong>Mailgun</strong>" not in page
