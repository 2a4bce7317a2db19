"""The language switch in every page's footer: a plain form, so it works without JavaScript."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, request, session, url_for
from flask_babel import refresh
from flask_login import current_user

from app.extensions import db
from app.htmx import redirect_after_post
from app.i18n import SESSION_KEY, supported
from app.permissions import public
from app.urls import safe_next

bp = Blueprint("i18n", __name__)


def _without_lang(path: str) -> str:
    """The page to go back to, minus any ``lang=`` (it would outrank the choice just made)."""
    parts = urlsplit(path)
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key != "lang"]
    return urlunsplit(("", "", parts.path, urlencode(query), parts.fragment))


@bp.post("/language")
@public
def set_language():
    """Keep the chosen language (the account's, or the visitor's server-side session) and go back."""
    back = _without_lang(safe_next(request.form.get("next")) or url_for("main.home"))
    code = supported(request.form.get("lang"))
    if code is None:  # a tampered form: nothing to keep, and nothing to complain about either
        return redirect_after_post(back)
    session[SESSION_KEY] = code
    if current_user.is_authenticated and current_user.language != code:
        current_user.language = code
        db.session.commit()
    refresh()
    return redirect_after_post(back)
