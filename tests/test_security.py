"""P8, P9, P12: cookies, CSRF (htmx included), headers, rate limits."""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import zlib
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.members.lifecycle import deactivate_account
from app.models import Role, WebSession
from app.models.base import utcnow
from config import ProductionConfig
from tests.conftest import PASSWORD, HtmxClient, make_config, sign_in

# --- CSRF ---------------------------------------------------------------------------------


def test_state_changes_without_a_csrf_token_are_refused(client, make_school, make_member):
    member = make_member(make_school())
    client.get("/sign-in")  # a session exists, so this is not the cookies-off case
    response = client.post("/sign-in", data={"email": member.user.email, "password": PASSWORD})
    assert response.status_code == 400
    assert "That form expired" in response.get_data(as_text=True)
    assert client.get("/account").status_code == 302


def test_htmx_requests_carry_the_token_in_a_header(client, make_school, make_member):
    school = make_school()
    member = make_member(school, role=Role.ADMIN)
    sign_in(client, member.user.email)
    applicant = make_member(school, status="pending")
    ok = client.htmx(f"/members/{applicant.id}/approve", target=f"pending-{applicant.id}")
    assert ok.status_code == 200
    another = make_member(school, status="pending")
    refused = client.post(
        f"/members/{another.id}/approve", headers={"HX-Request": "true", "HX-Target": f"pending-{another.id}"}
    )
    assert refused.status_code == 400


def test_a_browser_refusing_cookies_is_told_so_plainly(app):
    client = app.test_client(use_cookies=False)
    page = client.get("/sign-in").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]* value="([^"]+)"', page).group(1)
    response = client.post("/sign-in", data={"email": "a@example.org", "password": "x", "csrf_token": token})
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "Please allow cookies for this site" in body
    assert "CSRF" not in body


# --- cookies --------------------------------------------------------------------------------


def _cookie_values(client) -> list[str]:
    return [cookie.value for cookie in client._cookies.values()]


def _decoded_forms(value: str) -> str:
    """The value as sent and every base64 reading of its parts, to catch encoded personal data."""
    seen = [value]
    for part in re.split(r"[.:]", value):
        for pad in ("", "=", "=="):
            try:
                raw = base64.urlsafe_b64decode(part + pad)
            except ValueError:
                continue
            seen.append(raw.decode("latin-1"))
            with contextlib.suppress(zlib.error):  # Flask compresses large signed cookies
                seen.append(zlib.decompress(raw).decode("latin-1"))
    return "\n".join(seen).lower()


def test_no_cookie_ever_holds_personal_data(client, make_school, make_member):
    """P8: after every flow, decode every cookie: no email, no name, no id."""
    school = make_school(name="Quince School")
    admin = make_member(
        school, role=Role.ADMIN, email="zebediah.quackenbush@example.org", name="Zebediah Quackenbush"
    )
    applicant = make_member(school, status="pending", name="Philomena Applicant")
    needles = ["zebediah", "quackenbush", "example.org", "philomena", f'"{admin.user_id}"', "school_id"]

    flows = [
        lambda: client.get("/sign-in"),
        lambda: sign_in(client, "zebediah.quackenbush@example.org"),
        lambda: client.get("/"),
        lambda: client.get("/members/pending"),
        lambda: client.form(f"/members/{applicant.id}/approve"),  # sets a flash message
        lambda: client.get("/account"),
        lambda: client.form("/account/password", {"pw-current_password": "wrong"}),
        lambda: client.form("/password/forgot", {"email": "zebediah.quackenbush@example.org"}),
        lambda: client.form("/sign-out"),
        lambda: client.form(
            "/join", {"invite_code": "x", "name": "Zebediah Quackenbush", "email": "z@example.org"}
        ),
    ]
    for flow in flows:
        flow()
        values = _cookie_values(client)
        assert values, "a session cookie is expected after each flow"
        for value in values:
            decoded = _decoded_forms(value)
            for needle in needles:
                assert needle.lower() not in decoded, (needle, value)


def test_session_cookie_is_an_opaque_signed_id_with_safe_flags(client):
    response = client.get("/sign-in")
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Secure" not in header
    value = _cookie_values(client)[0]
    # Exactly a 32-byte random id and its signature: there is no room for anything else.
    # (Decoding random bytes and looking for "{" would fail by chance one run in eight.)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{20,40}", value), value


def test_production_cookies_are_secure_and_hsts_is_sent(build_app, database_url, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "production-like-secret-for-this-test")
    monkeypatch.setenv("PUBLIC_URL", "https://school.example.org")
    monkeypatch.setenv("MAIL_BACKEND", "devmailbox")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")  # required; never reached here
    config = ProductionConfig()
    config.REDIS_URL, config.RATELIMIT_STORAGE_URI = None, "memory://"
    app = build_app(config)
    response = app.test_client().get("/sign-in")
    assert "Secure" in response.headers["Set-Cookie"]
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_sign_in_gives_a_new_session_id(client, make_school, make_member):
    member = make_member(make_school())
    client.get("/sign-in")
    before = _cookie_values(client)[0]
    sign_in(client, member.user.email)
    after = _cookie_values(client)[0]
    assert before != after
    planted = HtmxClient(client.application)
    planted.set_cookie("session", before, domain="localhost")
    assert planted.get("/account").status_code == 302  # the old id opens nothing


def test_deactivation_ends_every_session(client, make_school, make_member):
    member = make_member(make_school())
    sign_in(client, member.user.email)
    assert client.get("/account").status_code == 200
    deactivate_account(member.user)
    db.session.commit()
    assert client.get("/account").status_code == 302
    count = db.session.scalar(
        select(func.count()).select_from(WebSession).where(WebSession.user_id == member.user_id)
    )
    assert count == 0


def test_a_tampered_session_cookie_is_ignored(client):
    client.get("/sign-in")
    value = _cookie_values(client)[0]
    client.set_cookie("session", value[:-2] + "xx", domain="localhost")
    assert client.get("/account").status_code == 302


# --- headers ----------------------------------------------------------------------------------


def _every_get_path(app, ids):
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        path = rule.rule
        for name in rule.arguments:
            path = re.sub(rf"<(?:[a-z]+:)?{name}>", str(ids.get(name, "x")), path)
        yield path


@pytest.mark.parametrize("signed_in", [False, True])
def test_security_headers_on_every_route(client, make_school, make_member, make_class, signed_in):
    school = make_school()
    admin = make_member(school, role=Role.SUPERADMIN)
    school_class = make_class(school, "Headers", grade="1")
    if signed_in:
        sign_in(client, admin.user.email)
    ids = {"class_id": school_class.id, "membership_id": admin.id, "mail_id": 1, "filename": "css/app.css"}
    seen = 0
    for path in _every_get_path(client.application, ids):
        response = client.get(path)
        headers = response.headers
        csp = headers["Content-Security-Policy"]
        assert (
            "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        ), path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "same-origin", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert "Strict-Transport-Security" not in headers  # only in production
        response.close()
        seen += 1
    assert seen >= 15


def test_pages_have_no_inline_script(client):
    for path in ("/", "/sign-in", "/join", "/privacy", "/password/forgot"):
        page = client.get(path).get_data(as_text=True)
        assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", page) == [], path
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", page), path  # no inline event handlers
        assert "hx-on" not in page, path


# --- rate limits -------------------------------------------------------------------------------


def test_sign_in_slows_repeated_failures(client, clock, make_school, make_member):
    """Five typos are free; the sixth makes this address-and-IP pair wait (tests/test_sign_in_limits.py)."""
    member = make_member(make_school())
    for _ in range(5):
        assert sign_in(client, member.user.email, "wrong password here").status_code == 400
    assert sign_in(client, member.user.email, "wrong password here").status_code == 429
    limited = sign_in(client, member.user.email)  # even the right password waits now
    assert limited.status_code == 429
    assert "Too many attempts from here. Try again in 2 seconds." in limited.get_data(as_text=True)
    clock.shift(seconds=2)
    assert sign_in(client, member.user.email).status_code == 303


def test_health_reports_the_database(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok"}}


def test_make_config_overrides_apply(database_url):
    assert make_config(database_url, RATELIMIT_SIGN_IN="1 per minute").RATELIMIT_SIGN_IN == "1 per minute"


JUNK = {
    "long": "x" * 20_000,
    "nul": "a\x00b",
    "markup": "<script>alert(1)</script>",
    "unicode": "名前 🙂 \u202e",
    "number": "-1",
}


@pytest.mark.parametrize("role", [None, Role.PARENT, Role.SUPERADMIN])
def test_junk_posted_to_every_form_never_gives_a_500(client, make_school, make_member, role):
    """Every POST route, every field name it might read, hostile values: a clear answer, never 500."""
    school = make_school()
    if role is not None:
        member = make_member(school, role=role)
        sign_in(client, member.user.email)
    applicant = make_member(school, status="pending")
    fields = [
        "email",
        "password",
        "name",
        "invite_code",
        "accept_policy",
        "confirm",
        "reason",
        "school_id",
        "pw-current_password",
        "pw-password",
        "pw-confirm",
        "em-new_email",
        "em-current_password",
        "js-invite_code",
    ]
    posted = 0
    rules = [r for r in client.application.url_map.iter_rules() if "POST" in r.methods]
    # Sign-out last, so every other form is posted as the role under test.
    for rule in sorted(rules, key=lambda r: r.endpoint == "auth.sign_out"):
        path = re.sub(r"<int:membership_id>", str(applicant.id), rule.rule)
        for value in JUNK.values():
            response = client.form(path, dict.fromkeys(fields, value))
            assert response.status_code < 500, (path, response.status_code)
            assert "<script>alert(1)</script>" not in response.get_data(as_text=True), path
            posted += 1
    assert posted >= 40


def test_the_development_server_does_not_log_paths(app):
    """Werkzeug's request lines carry the full path (reset and unsubscribe tokens); only warnings pass."""
    import logging

    assert not logging.getLogger("werkzeug").isEnabledFor(logging.INFO)


def test_visitors_who_never_sign_in_get_short_sessions(client):
    client.get("/sign-in")
    assert db.session.scalar(select(WebSession)) is None  # reading a form keeps nothing
    client.form("/sign-out")  # an anonymous session with something to keep: the flash
    row = db.session.scalar(select(WebSession))
    assert row.user_id is None
    assert row.expires_at - utcnow() <= timedelta(hours=2)


def test_a_failing_request_logs_the_rule_not_the_path(build_app, caplog):
    app = build_app(PROPAGATE_EXCEPTIONS=False)

    @app.route("/boom/<token>")
    def boom(token):
        raise RuntimeError("boom")

    from app.permissions import public

    public(boom)
    caplog.set_level(logging.ERROR)
    assert app.test_client().get("/boom/secret-token-value").status_code == 500
    assert "/boom/<token>" in caplog.text and "secret-token-value" not in caplog.text
