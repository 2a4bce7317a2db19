"""Development pages: the mail the app would have sent (admins), and the living style page."""

from __future__ import annotations

import functools

from flask import Blueprint, abort, current_app, g, render_template
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


@bp.route("/mailbox/<int:mail_id>")
@requires("settings.view")
@development_only
def mail(mail_id: int):
    """One caught email, as text (the HTML part is shown escaped, never rendered)."""
    found = db.session.get(DevMail, mail_id)
    if found is None:
        abort(404)
    return render_template("dev/mail.html", mail=found)


@bp.route("/style")
@public
def style():
    """The living style guide: every token and component with its markup (development only)."""
    if current_app.config.get("ENV_NAME") != "development":
        abort(404)
    return render_template("dev/style.html")
