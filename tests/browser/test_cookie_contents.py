"""No cookie ever carries who you are: after each main flow, read what the browser holds.

The session cookie should be a signed random id and nothing else (the data is server-side).
Values are checked as stored and also decoded (URL-quoting, base64 segments, zlib), so a
cookie that merely encodes personal data (Flask's default signed-cookie session) is caught too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import zlib
from urllib.parse import unquote

import pytest
from playwright.sync_api import BrowserContext, Response, expect

from app.extensions import db
from app.models import Role
from tests.browser.helpers import NEW_PASSWORD, join, open_approvals, path_is, sign_in
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

ADMIN_NAME = "Zebediah Quackenbush"
ADMIN_EMAIL = "Zebediah.Quackenbush@Example.org"
PARENT_NAME = "Philomena Wigglesworth"
PARENT_EMAIL = "philomena.wigglesworth@example.org"


def personal_strings(*people: tuple[str, str]) -> set[str]:
    """Email, its local part, the name, and each name word longer than three letters (lower case)."""
    found: set[str] = set()
    for name, email in people:
        found |= {email.lower(), email.split("@")[0].lower(), name.lower()}
        found |= {word.lower() for word in re.findall(r"\w+", name) if len(word) > 3}
    return found


SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{20,}$")
"""What DatabaseSessionInterface sets: token_urlsafe(32), a dot, its itsdangerous signature."""

FORBIDDEN = personal_strings((ADMIN_NAME, ADMIN_EMAIL), (PARENT_NAME, PARENT_EMAIL)) | {
    PASSWORD.lower(),
    NEW_PASSWORD.lower(),
}


def readings(value: str) -> list[str]:
    """The value as stored, URL-unquoted, and every part that decodes as base64 (and zlib)."""
    texts = [value, unquote(value)]
    for part in re.split(r"[.:|]", unquote(value)):
        if len(part) < 4:
            continue
        try:
            raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except (binascii.Error, ValueError):
            continue
        texts.append(raw.decode("latin-1"))
        with contextlib.suppress(zlib.error):
            texts.append(zlib.decompress(raw).decode("latin-1"))
    return texts


def test_readings_see_through_encodings():
    """The decoder must find personal data hidden the way Flask's own cookie session hides it."""
    payload = base64.urlsafe_b64encode(zlib.compress(b'{"email":"zebediah.quackenbush@example.org"}'))
    flask_style = "." + payload.decode().rstrip("=") + ".ZXhh.c2lnbmF0dXJl"
    assert any("zebediah" in text for text in readings(flask_style))
    plain = base64.urlsafe_b64encode(b"Philomena").decode()
    assert any("Philomena" in text for text in readings(plain))
    assert any("quackenbush" in text.lower() for text in readings("Zebediah%20Quackenbush"))


def _identities(jar: list) -> list[tuple[str, str, str]]:
    """Which cookies a jar holds: name, domain and path."""
    return sorted((cookie["name"], cookie["domain"], cookie["path"]) for cookie in jar)


class CookieAudit:
    """Records every Set-Cookie a context receives; check() audits them and the cookie jar."""

    def __init__(self, context: BrowserContext, origin: str):
        self.context = context
        self.origin = origin
        self.responses: list[Response] = []
        context.on("response", self._record)

    def _record(self, response: Response) -> None:
        self.responses.append(response)

    def check(self, step: str, *, expect_cookie: bool = True) -> None:
        cookies = self.context.cookies()
        if expect_cookie:
            assert cookies, f"{step}: the site should hold its session cookie"
        # Compared by identity: a response landing between the two reads (the favicon's 404 page
        # hands out a CSRF token) refreshes the cookie's expiry, not which cookies there are.
        here = _identities(self.context.cookies(self.origin))
        assert _identities(cookies) == here, f"{step}: cookies only for this site"
        for cookie in cookies:
            label = f"{step}: cookie {cookie['name']}"
            assert cookie["httpOnly"] is True, f"{label} is readable by scripts"
            assert cookie["sameSite"] == "Lax", f"{label} is SameSite={cookie['sameSite']}"
            if cookie["name"] == "session":
                assert SESSION_ID.match(cookie["value"]), (
                    f"{label} is not a bare signed id: {cookie['value']}"
                )
            self._no_personal_data(label, cookie["name"], cookie["value"])
        self._check_headers(step)

    def _check_headers(self, step: str) -> None:
        """The Set-Cookie headers themselves (the jar reports SameSite=Lax even when unset)."""
        responses, self.responses = self.responses, []
        for response in responses:
            for header in response.headers_array():
                if header["name"].lower() != "set-cookie":
                    continue
                label = f"{step}: Set-Cookie from {response.url}"
                attributes = {
                    a.strip().split("=")[0].lower(): a.strip() for a in header["value"].split(";")[1:]
                }
                assert "httponly" in attributes, f"{label} lacks HttpOnly: {header['value']}"
                assert attributes.get("samesite", "").lower() == "samesite=lax", f"{label}: {header['value']}"
                name, _, value = header["value"].split(";")[0].partition("=")
                self._no_personal_data(label, name.strip(), value.strip())

    @staticmethod
    def _no_personal_data(label: str, name: str, value: str) -> None:
        for text in [name, *readings(value)]:
            lowered = text.lower()
            leaked = sorted(s for s in FORBIDDEN if s in lowered)
            assert not leaked, f"{label} carries {leaked}"
            assert '":' not in text, f"{label} carries serialised data: {text!r}"


def test_cookies_never_carry_personal_data(new_context, live_server, make_school, make_member):
    school = make_school(name="Thistledown School", code="THISTLE-1")
    make_member(school, role=Role.SUPERADMIN, name=ADMIN_NAME, email=ADMIN_EMAIL.lower())
    db.session.remove()

    # A parent joins; their browser is audited on the way.
    parent_context = new_context()
    parent_audit = CookieAudit(parent_context, live_server)
    parent = parent_context.new_page()
    parent.goto("/join")
    parent_audit.check("join page")
    join(parent, code="THISTLE-1", name=PARENT_NAME, email=PARENT_EMAIL)
    expect(parent.get_by_role("heading", level=1)).to_contain_text("Thistledown School")
    parent_audit.check("joined, pending page")
    parent.goto("/account")
    expect(parent.get_by_text(PARENT_EMAIL)).to_be_visible()  # the page has it; the cookie must not
    parent_audit.check("parent's account page")

    # The admin signs in, looks around, approves with htmx and signs out.
    admin_context = new_context()
    admin_audit = CookieAudit(admin_context, live_server)
    admin = admin_context.new_page()
    admin.goto("/sign-in")
    admin_audit.check("sign-in page")
    sign_in(admin, ADMIN_EMAIL)  # typed with capitals: the check ignores case
    expect(admin.get_by_text(f"Welcome back, {ADMIN_NAME}.")).to_be_visible()
    admin_audit.check("signed in, home")
    admin.goto("/account")
    expect(admin.get_by_text(ADMIN_EMAIL.lower())).to_be_visible()
    admin_audit.check("account page")
    admin.goto("/privacy")
    admin_audit.check("privacy page")
    admin.goto("/")
    open_approvals(admin)
    admin_audit.check("approvals page")
    admin.get_by_role("button", name=f"Approve {PARENT_NAME}").click()
    expect(admin.locator("li.queue-row.decided")).to_contain_text(f"{PARENT_NAME}: approved")
    admin_audit.check("approved with htmx")
    admin.get_by_role("button", name="Sign out").click()
    admin.wait_for_url(path_is("/sign-in"))
    expect(admin.get_by_text("You are signed out.")).to_be_visible()
    admin_audit.check("signed out", expect_cookie=False)

    # The approved parent comes back to the school home.
    parent.goto("/")
    expect(parent.get_by_role("heading", name="Your classes")).to_be_visible()
    parent_audit.check("approved parent, home")
