"""Google Analytics, only when configured, and never with anything that names a person (P5).

The page location and title sent are the route's template (``/classes/:class_id``), never the
real URL: no ids, names, query string or token. No user id; Google signals and ad
personalisation off. Nothing loads on a page whose URL holds a secret, nor for a browser
that asks not to be tracked (``Sec-GPC: 1`` or ``DNT: 1``).
"""

from __future__ import annotations

import re

from flask import current_app, request

GOOGLE_SCRIPT_HOST = "https://www.googletagmanager.com"
CSP_HOSTS = {
    "script-src": ["https://*.googletagmanager.com"],
    "img-src": ["https://*.google-analytics.com", "https://*.googletagmanager.com"],
    "connect-src": [
        "https://*.google-analytics.com",
        "https://*.analytics.google.com",
        "https://*.googletagmanager.com",
    ],
}

# Pages reached through a link that carries a secret (or that show one).
SECRET_ENDPOINTS = frozenset(
    {
        "auth.reset_link",
        "auth.reset_password",
        "auth.email_link",
        "auth.confirm_email",
    }
)
SECRET_BLUEPRINTS = frozenset({"unsubscribe"})
_SECRET_WORDS = re.compile(r"token|feed|secret|key", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


_MEASUREMENT_ID = re.compile(r"G-[A-Z0-9]{4,20}")


def enabled() -> bool:
    """Analytics is configured for this deployment (with a well-formed measurement id)."""
    return bool(_MEASUREMENT_ID.fullmatch(current_app.config.get("GA_MEASUREMENT_ID") or ""))


def content_security_hosts() -> dict[str, list[str]]:
    """Extra CSP sources Google's tag needs, only when analytics is configured."""
    return CSP_HOSTS if enabled() else {}


def refused_by_browser() -> bool:
    """Global Privacy Control or Do Not Track."""
    return request.headers.get("Sec-GPC", "").strip() == "1" or request.headers.get("DNT", "").strip() == "1"


def url_holds_secret() -> bool:
    """Unsubscribe, password reset, email confirmation, calendar feeds, export downloads..."""
    if request.endpoint in SECRET_ENDPOINTS or request.blueprint in SECRET_BLUEPRINTS:
        return True
    rule = request.url_rule.rule if request.url_rule is not None else ""
    return bool(_SECRET_WORDS.search(rule)) or any(_SECRET_WORDS.search(k) for k in request.view_args or {})


def route_template() -> str:
    """The route pattern with placeholders by name: ``/classes/<int:class_id>`` -> ``/classes/:class_id``."""
    rule = request.url_rule.rule if request.url_rule is not None else "/unknown"
    return _PLACEHOLDER.sub(r":\1", rule)


def config_for_page() -> dict | None:
    """What the static analytics.js reads from the page, or None when nothing may load."""
    if not enabled() or request.url_rule is None or refused_by_browser() or url_holds_secret():
        return None
    template = route_template()
    origin = request.host_url.rstrip("/")
    return {
        "id": current_app.config["GA_MEASUREMENT_ID"],
        "src": f"{GOOGLE_SCRIPT_HOST}/gtag/js?id={current_app.config['GA_MEASUREMENT_ID']}",
        "params": {
            "page_location": origin + template,
            "page_title": template,
            "page_referrer": origin + "/",
            "allow_google_signals": False,
            "allow_ad_personalization_signals": False,
            "send_page_view": True,
        },
    }
