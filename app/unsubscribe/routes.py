"""Unsubscribe blueprint: the link in every optional email, one-click POST, and email settings."""

from __future__ import annotations

from flask import Blueprint, abort, flash, make_response, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.lookup import or_404
from app.mail import preferences
from app.models import Category, DeliveryMode
from app.permissions import public, signed_in
from app.unsubscribe import tokens

bp = Blueprint("unsubscribe", __name__)


def _read_or_400(token: str):
    found = tokens.read(token)
    if found is None:
        abort(make_response(render_template("unsubscribe/invalid.html"), 400))
    return found


@bp.route("/unsubscribe/<token>", methods=["GET"])
@public
def confirm(token: str):
    """Say what the link would stop and ask; a GET changes nothing (mail scanners follow links).

    The link carries the email's ``?lang=``, and the page's form keeps it for the answer.
    """
    user, category = _read_or_400(token)
    return render_template("unsubscribe/confirm.html", token=token, category=category, all=tokens.ALL)


# Takes no CSRF token: listed, with the reason, in app.security.CSRF_EXEMPT.
@bp.route("/unsubscribe/<token>", methods=["POST"])
@public
def apply(token: str):
    """One-click (List-Unsubscribe=One-Click) or the page's buttons: stop now, answer 200."""
    user, category = _read_or_400(token)
    if request.form.get("List-Unsubscribe") == "One-Click":
        preferences.unsubscribe(user, None if category == tokens.ALL else category)
        db.session.commit()
        answer = "%s\n" % _("Unsubscribed.")  # noqa: UP031 - a line of plain text, the text translated
        return make_response(answer, 200, {"Content-Type": "text/plain; charset=utf-8"})
    scope = request.form.get("scope")
    if scope not in ("category", "all") or (scope == "category" and category == tokens.ALL):
        abort(400)
    stopped = preferences.unsubscribe(user, None if scope == "all" or category == tokens.ALL else category)
    db.session.commit()
    return render_template("unsubscribe/done.html", stopped=stopped)


@bp.route("/account/email-settings", endpoint="preferences")
@signed_in
def preferences_page():
    """Each optional category: immediately, daily digest, or off; account notices locked on."""
    return _settings_page()


def _settings_page(
    status: int = 200, error: tuple[Category, str] | None = None, block="content", target="main"
):
    return render(
        "unsubscribe/preferences.html",
        block=block,
        target=target,
        status=status,
        modes=preferences.modes_of(current_user),
        categories=list(Category),
        error=error,
        DeliveryMode=DeliveryMode,
    )


@bp.route("/account/email-settings/<category>", methods=["POST"])
@signed_in
def set_preference(category: str):
    """Save one category's mode; htmx swaps just that row."""
    try:
        chosen_category = Category(category)
        mode = DeliveryMode(request.form.get("mode", ""))
        preferences.set_mode(current_user, chosen_category, mode)
    except ValueError as error:  # unknown category or mode, or PreferenceError
        db.session.rollback()
        message = (
            str(error) if isinstance(error, preferences.PreferenceError) else _("Choose one of the options.")
        )
        known = or_404(category if category in Category._value2member_map_ else None)
        return _settings_page(400, (Category(known), message), block="rows", target="email-settings")
    db.session.commit()
    flash(_("%(category)s: saved.", category=chosen_category.label), "success")
    if wants_fragment("email-settings"):
        return _settings_page(block="rows", target="email-settings")
    return redirect_after_post(url_for("unsubscribe.preferences"))
