"""A person's own account: download my data, close my account (``consent.account.*``)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template
from flask_babel import gettext as _
from flask_login import current_user

from app.auth import passwords
from app.auth.services import sign_out
from app.consent import export, forms, ledger
from app.extensions import db
from app.htmx import render
from app.members import lifecycle
from app.permissions import signed_in

bp = Blueprint("account", __name__, url_prefix="/account")


@bp.route("/my-data.json")
@signed_in
def my_data():
    """Download my own and my family's data as JSON."""
    return Response(
        export.personal_json(current_user),
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-data.json"'},
    )


@bp.route("/close", methods=["GET", "POST"])
@signed_in
def close():
    """Close my account (and object to a coming policy change): no sign-in, no email, out of directories."""
    form = forms.CloseAccountForm()
    objecting = ledger.objections_due(current_user)
    if form.validate_on_submit():
        if not passwords.verify_password(current_user.password_hash, form.password.data):
            form.password.errors.append(_("That is not your password."))
        else:
            user = current_user._get_current_object()
            objected = lifecycle.close_account(user)
            db.session.commit()
            sign_out()
            return render_template("consent/closed.html", objected=objected)
    status = 400 if form.errors else 200
    return render(
        "consent/close.html", block="form", target="close-form", form=form, objecting=objecting, status=status
    )
