"""Security headers on every response, the only views exempt from CSRF, and the CSRF failure
that means 'cookies are off'."""

from __future__ import annotations

import json
import re
from itertools import accumulate

from flask import Flask, abort, current_app, render_template, request
from flask_wtf.csrf import CSRFError

from app.htmx import main_fragment

# The only state-changing views that take no CSRF token, by endpoint, and what proves the caller
# instead. Exemptions go through this list alone (``exempt_listed_views``); tests/test_csrf_walk.py
# posts to every other state-changing route without a token and checks this list against Flask-WTF.
CSRF_EXEMPT: dict[str, str] = {
    "unsubscribe.apply": "RFC 8058 one-click: mail clients POST without cookies or tokens; "
    "the signed per-recipient link is the proof",
    "webhooks.mailgun": "called by Mailgun, not a browser; authenticated by its HMAC signature",
}


def exempt_listed_views(app: Flask) -> None:
    """Exempt exactly the views of CSRF_EXEMPT (called once the blueprints are registered)."""
    from app.extensions import csrf

    for endpoint in CSRF_EXEMPT:
        csrf.exempt(app.view_functions[endpoint])


CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def content_security_policy() -> str:
    """CSP: our own origin only, plus Google Analytics' hosts when (and only when) it is configured."""
    from app.consent.analytics import content_security_hosts

    extra = content_security_hosts()
    if not extra:
        return CSP
    parts = []
    for part in CSP.split("; "):
        directive = part.split()[0]
        parts.append(" ".join([part, *extra[directive]]) if directive in extra else part)
    return "; ".join(parts)


def security_headers(response):
    """after_request: the headers every response needs (CSP, framing, sniffing, referrer, caching)."""
    headers = response.headers
    # The page's language may follow the browser's Accept-Language: a cache must keep them apart.
    response.vary.add("Accept-Language")
    headers.setdefault("Content-Security-Policy", content_security_policy())
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if current_app.config.get("HSTS"):
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    if request.endpoint != "static":
        headers.setdefault("Cache-Control", "no-store")
    return response


# No body this app takes nests deeper than a handful of levels (a Mailgun event: five). Python's
# json parser recurses once per level: 100,000 "[" end in RecursionError, a 500, so a JSON body
# deeper than this is refused before anything decodes it.
MAX_JSON_DEPTH = 32
# A JSON string; possessive, so an unterminated one cannot make the scan quadratic.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_nesting_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Does this JSON text open more than ``limit`` arrays or objects inside one another?

    Linear and without recursion: the body is read as the json module reads bytes (UTF-8, -16
    or -32, so a UTF-16 body cannot hide its brackets from a byte scan), strings are dropped (a
    "[" inside one opens nothing), the brackets left become +1 and -1, and the deepest running
    total is the nesting.
    """
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")  # what json.loads does
    except UnicodeDecodeError:
        return False  # not JSON text: the parser refuses it with a ValueError, a plain 400
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text)).encode("ascii")
    if len(brackets) <= limit:
        return False  # too few brackets to nest that deep: nearly every body stops here
    steps = memoryview(brackets.translate(_DEPTH_STEPS)).cast("b")  # 0x01 is +1, 0xff is -1
    return max(accumulate(steps)) > limit


def refuse_deep_json():
    """before_request: a JSON body nested beyond MAX_JSON_DEPTH is a 400, before anything decodes it."""
    if request.is_json and json_nesting_exceeds(request.get_data(cache=True)):
        abort(400)


def refuse_nul_characters():
    """before_request: a NUL byte is never typed by a person, and PostgreSQL cannot store one."""
    values = list(request.args.values())
    if request.method != "GET" and request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        values += list(request.form.values())
    if request.method != "GET" and request.is_json:
        values += _strings_in(request.get_json(silent=True))  # Flask-WTF reads JSON bodies as forms
    values += [v for v in (request.view_args or {}).values() if isinstance(v, str)]
    if any("\x00" in value for value in values):
        abort(400)


def _strings_in(value) -> list[str]:
    """Every string in a decoded JSON body (at most MAX_JSON_DEPTH deep: refuse_deep_json ran first)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (*_strings_in(key), *_strings_in(item))]
    if isinstance(value, list):
        return [s for item in value for s in _strings_in(item)]
    return []


def cookies_refused() -> bool:
    """A form came back with no session cookie at all: the browser is not keeping cookies."""
    return current_app.config["SESSION_COOKIE_NAME"] not in request.cookies


def handle_csrf_error(error: CSRFError):
    """Explain a refused form in words a parent understands, never a bare 400."""
    template = "errors/cookies.html" if cookies_refused() else "errors/csrf.html"
    if request.headers.get("HX-Request") != "true":
        return render_template(template), 400
    # htmx would swap a whole page into the form it posted: send the message into <main>.
    return main_fragment(template, 400)
