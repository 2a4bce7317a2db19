"""Development pages: the mail the app would have sent (admins), and the living style page."""

from __future__ import annotations

import functools

from flask import Blueprint, abort, current_app, g, make_response, render_template
from sqlalchemy import select

from app.extensions import db
from app.models import DevMail, Role
from app.permissions import public, requires

bp = Blueprint("dev", __name__, url_prefix="/dev")


def development_only(view):
    """The view shows every school's mail, reset links included: development, and SuperAdmins, only."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        if not current_app.config.get("DEV_MAILBOX"):
            abort(404)
        membership = g.get("membership")
        if membership is not None and membership.role is not Role.SUPERADMIN:
            abort(403)
        return view(*args, **kwargs)

    return guarded


@bp.route("/mailbox")
@requires("settings.view")
@development_only
def mailbox():
    """The newest caught emails."""
    mails = db.session.scalars(select(DevMail).order_by(DevMail.id.desc()).limit(100)).all()
    return render_template("dev/mailbox.html", mails=mails)


# The caught HTML part runs nothing and reaches nothing: the response is its own sandbox (an
# opaque origin, no script, no form, no request but inline styles and data: images), and only
# this site's own pages may frame it.
HTML_PART_CSP = "; ".join(
    [
        "sandbox",
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src data:",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
    ]
)


@bp.route("/mailbox/<int:mail_id>")
@requires("settings.view")
@development_only
def mail(mail_id: int):
    """One caught email: its headers, its text part, and its HTML part in a sandboxed frame."""
    found = db.session.get(DevMail, mail_id)
    if found is None:
        abort(404)
    return render_template("dev/mail.html", mail=found, headers=header_rows(found))


@bp.route("/mailbox/<int:mail_id>/html")
@requires("settings.view")
@development_only
def mail_html(mail_id: int):
    """One caught email's HTML part, served under a CSP sandbox for the mail page's frame."""
    found = db.session.get(DevMail, mail_id)
    if found is None or not found.html_body:
        abort(404)
    response = make_response(found.html_body)
    response.mimetype = "text/html"
    response.headers["Content-Security-Policy"] = HTML_PART_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


# Shown first, in this order; any other header the backend kept follows, sorted.
LEADING_HEADERS = ("From", "To", "Reply-To", "Subject")


def header_rows(found: DevMail) -> list[tuple[str, str]]:
    """The headers as the backend recorded them, the envelope's first."""
    recorded = {str(k): str(v) for k, v in (found.headers or {}).items()}
    recorded.setdefault("To", found.to_email)
    recorded.setdefault("Subject", found.subject)
    leading = [(name, recorded.pop(name)) for name in LEADING_HEADERS if name in recorded]
    return leading + sorted(recorded.items(), key=lambda item: item[0].lower())


@bp.route("/style")
@public
def style():
    """The living style guide: every token and component with its markup (development only)."""
    if current_app.config.get("ENV_NAME") != "development":
        abort(404)
    return render_template("dev/style.html")
