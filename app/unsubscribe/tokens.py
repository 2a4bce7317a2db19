"""Unsubscribe tokens: per recipient and category, signed, never expiring, nothing personal inside.

A token is ``<mail key>.<category code>.<signature>``: the mail key is a random value kept
on the account for this purpose only, so the link names nobody to whoever reads it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from flask import current_app
from sqlalchemy import select

from app.extensions import db
from app.models import Category, User
from app.urls import external_url

ALL = "all"
_CODES = {
    Category.SCHOOL_ANNOUNCEMENTS: "s",
    Category.CLASS_ANNOUNCEMENTS: "c",
    Category.NEWSLETTERS: "n",
    Category.PROMOTIONAL: "p",
    ALL: "a",
}
_BY_CODE = {code: category for category, code in _CODES.items()}


def _signature(body: str) -> str:
    secret = current_app.secret_key
    if not secret:  # every config sets one; production refuses to start without
        raise RuntimeError("SECRET_KEY is not set: unsubscribe links cannot be signed.")
    secret_bytes = secret if isinstance(secret, bytes) else secret.encode()
    key = hashlib.sha256(b"unsubscribe:" + secret_bytes).digest()
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def make(user: User, category: Category | str) -> str:
    """The token for this person and category (or ALL)."""
    body = f"{user.mail_key}.{_CODES[category]}"
    return f"{body}.{_signature(body)}"


def read(token: str) -> tuple[User, Category | str] | None:
    """The person and category a token stands for, or None if it is malformed or forged."""
    parts = token.split(".") if token and len(token) < 120 else []
    if len(parts) != 3 or parts[1] not in _BY_CODE:
        return None
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(parts[2].encode(), _signature(body).encode()):
        return None
    user = db.session.scalar(select(User).where(User.mail_key == parts[0]))
    return (user, _BY_CODE[parts[1]]) if user is not None else None


def link(user: User, category: Category | str, lang: str | None = None) -> str:
    """The absolute unsubscribe URL to put in an email (``lang``: the page opens in the email's language)."""
    return external_url("unsubscribe.confirm", token=make(user, category), **_language(lang))


def link_template(placeholder: str, lang: str | None = None) -> str:
    """The unsubscribe URL with ``placeholder`` where the token goes (built once per batch)."""
    return external_url("unsubscribe.confirm", token=placeholder, **_language(lang))


def _language(lang: str | None) -> dict[str, str]:
    """``?lang=`` for a link, when a language is given."""
    return {"lang": lang} if lang else {}
