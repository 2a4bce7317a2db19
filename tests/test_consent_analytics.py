"""Cookies page, third-party services page and Google Analytics without personal data (P5, P7, P8, P15)."""

from __future__ import annotations

import html
import json
import re

import pytest
from flask import request

from app.models import Role
from tests.conftest import sign_in

GA_ID = "G-TEST12345"
CONFIG = re.compile(r'<script id="analytics-config" src="([^"]+)" data-config="([^"]+)" defer></script>')
SCRIPT_SRC = re.compile(r'<script[^>]*\bsrc="([^"]+)"')


def analytics_of(page: str) -> dict | None:
    """The analytics configuration a page hands to static/js/analytics.js, or None."""
    match = CONFIG.search(page)
    return json.loads(html.unescape(match.group(2))) if match else None


@pytest.fixture
def people(make_school, make_member, make_class):

    school = make_school(name="Poplar School")
    school_class = make_class(school, "Kestrel", grade="Grade 4")
    parent = make_member(school, email="gwen.glass@example.org", name="Gwen Glass")
    admin = make_member(school, role=Role.ADMIN, email="hal.admin@example.org", name="Hal Admin")
    return {"school": school, "class": school_class, "parent": parent, "admin": admin}


@pytest.fixture
def ga_client(build_app):
    return build_app(GA_MEASUREMENT_ID=GA_ID).test_client()


# --- without analytics --------------------------------------------------------------------------


def test_without_a_measurement_id_nothing_loads_and_the_csp_stays_strict(client, people):
    sign_in(client, "gwen.glass@example.org")
    for url in ("/", "/privacy", f"/classes/{people['class'].id}", "/account"):
        response = client.get(url)
        page = response.get_data(as_text=True)
        assert analytics_of(page) is None and "googletagmanager" not in page, url
        assert "google" not in response.headers["Content-Security-Policy"], url


def test_no_page_loads_a_script_from_another_site(client, people):
    """P15: no advertising or tracking code; only our own scripts (analytics is off here)."""
    sign_in(client, "hal.admin@example.org")
    for url in ("/", "/privacy", "/cookies", "/third-parties", "/directory/", "/account", "/school/export"):
        page = client.get(url).get_data(as_text=True)
        for src in SCRIPT_SRC.findall(page):
            assert src.startswith("/static/"), (url, src)


def test_cookies_page_lists_the_session_cookie_only(client, people):
    page = client.get("/cookies").get_data(as_text=True)
    assert "<code>session</code>" in page and "HttpOnly" in page
    assert "_ga" not in page
    assert "no separate CSRF cookie" in page


def test_third_party_page_lists_exactly_the_configured_services(client, build_app):
    page = client.get("/third-parties").get_data(as_text=True)
    for name in ("Mailgun", "Google Analytics", "Zendesk"):
        assert f'<th scope="row">{name}</th>' not in page
    assert "uses no third-party services" in page

    configured = build_app(
        MAIL_BACKEND="mailgun",
        MAILGUN_API_KEY="key-test",
        MAILGUN_DOMAIN="mg.example.org",
        GA_MEASUREMENT_ID=GA_ID,
        ZENDESK_SUBDOMAIN="school",
        ZENDESK_EMAIL="ops@example.org",
        ZENDESK_API_TOKEN="token",
    )
    page = configured.test_client().get("/third-parties").get_data(as_text=True)
    for name in ("Mailgun", "Google Analytics", "Zendesk"):
        assert f'<th scope="row">{name}</th>' in page, name

    only_zendesk = build_app(
        ZENDESK_SUBDOMAIN="school", ZENDESK_EMAIL="ops@example.org", ZENDESK_API_TOKEN="t"
    )
    page = only_zendesk.test_client().get("/third-parties").get_data(as_text=True)
    assert [n for n in ("Mailgun", "Google Analytics", "Zendesk") if f'<th scope="row">{n}</th>' in page] == [
        "Zendesk"
    ]


# --- with analytics -----------------------------------------------------------------------------


def test_the_configuration_names_the_route_never_the_person_or_the_ids(ga_client, people):
    sign_in(ga_client, "gwen.glass@example.org")
    class_id = people["class"].id
    response = ga_client.get(f"/classes/{class_id}?q=Gwen+Glass")
    config = analytics_of(response.get_data(as_text=True))
    assert config["id"] == GA_ID
    assert config["src"] == f"https://www.googletagmanager.com/gtag/js?id={GA_ID}"
    params = config["params"]
    assert params["page_location"] == "http://localhost/classes/:class_id"
    assert params["page_title"] == "/classes/:class_id"
    assert params["allow_google_signals"] is False and params["allow_ad_personalization_signals"] is False
    assert "user_id" not in params and "user_properties" not in params
    sent = json.dumps(config).lower()
    for secret in ("gwen", "glass", "example.org", f"/{class_id}", "?q", str(people["parent"].user_id) + '"'):
        assert secret not in sent, secret
    csp = response.headers["Content-Security-Policy"]
    assert "https://*.googletagmanager.com" in csp and "https://*.google-analytics.com" in csp
    assert "'unsafe-inline'" not in csp


@pytest.mark.parametrize("header", [{"Sec-GPC": "1"}, {"DNT": "1"}])
def test_a_browser_that_asks_not_to_be_tracked_gets_no_analytics(ga_client, people, header):
    assert analytics_of(ga_client.get("/privacy").get_data(as_text=True)) is not None
    assert analytics_of(ga_client.get("/privacy", headers=header).get_data(as_text=True)) is None


def test_no_analytics_where_the_url_holds_a_secret(ga_client, people):
    """Unsubscribe links, password reset, email confirmation and the export download pages."""
    pages = {
        "unsubscribe": "/unsubscribe/some-token-value",
        "reset": "/password/reset",
        "email": "/account/email/confirm",
    }
    for name, url in pages.items():
        page = ga_client.get(url, follow_redirects=True).get_data(as_text=True)
        assert analytics_of(page) is None, name
    sign_in(ga_client, "hal.admin@example.org")
    status_url = ga_client.form("/school/export").headers["Location"]
    assert analytics_of(ga_client.get(status_url).get_data(as_text=True)) is None
    assert analytics_of(ga_client.get("/school/export").get_data(as_text=True)) is not None


def test_every_route_with_a_secret_in_its_rule_is_excluded(build_app):
    """Any route whose pattern mentions a token, key or feed (a calendar feed too) loads nothing."""
    from app.consent import analytics

    app = build_app(GA_MEASUREMENT_ID=GA_ID)
    risky = [r for r in app.url_map.iter_rules() if re.search(r"token|key|feed", r.rule, re.I)]
    assert risky  # the unsubscribe and export routes at least
    for rule in risky:
        path = re.sub(r"<[^>]+>", "1", rule.rule)
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        with app.test_request_context(path, method=method):
            assert request.url_rule is not None, rule.rule
            assert analytics.config_for_page() is None, rule.rule


def test_a_malformed_measurement_id_loads_nothing(build_app, people):
    client = build_app(GA_MEASUREMENT_ID='G-1"><script>').test_client()
    response = client.get("/privacy")
    assert analytics_of(response.get_data(as_text=True)) is None
    assert "google" not in response.headers["Content-Security-Policy"]
