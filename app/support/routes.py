"""Support blueprint: the Help form, the public contact form and a person's own requests.

Both forms store the request and commit before anything else; the forwarding job runs after
the commit (in the worker, or in-process on a laptop), so a Zendesk outage never loses one.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, request, session, url_for
from flask_login import current_user

from app.extensions import db, limiter
from app.htmx import redirect_after_post, render
from app.models.support import new_reference
from app.permissions import can, public, signed_in
from app.support import forms, services
from app.support.zendesk import ZendeskClient

bp = Blueprint("support", __name__)

SESSION_KEY = "support_reference"  # a random reference: nothing personal in the session (P8)


@bp.record_once
def _check_configuration(state) -> None:
    """Refuse to start half configured (e.g. a subdomain but no token), like the mail backend."""
    ZendeskClient.from_config(state.app.config)


def _contact_limit() -> str:
    return current_app.config["RATELIMIT_CONTACT"]


def _may_grant_access() -> bool:
    """The support.grant tick is for people who hold that permission in their current school."""
    membership = g.get("membership")
    return membership is not None and membership.is_approved and can("support.grant")


@bp.route("/help", methods=["GET", "POST"])
@signed_in
def help_form():
    """Ask the support team for help; name and email start as the account's."""
    form = forms.HelpForm()
    may_grant = _may_grant_access()
    if request.method == "GET":
        form.name.data = current_user.name
        form.email.data = current_user.email
    if form.validate_on_submit():
        membership = g.get("membership")
        support_request = services.submit_help(
            user_id=current_user.id,
            school_id=membership.school_id if membership is not None else None,
            name=form.name.data,
            email=form.email.data,
            subject=form.subject.data,
            message=form.message.data,
            # Ignored for anyone without the permission, whatever the form says.
            grant_access_hours=forms.GRANT_HOURS if may_grant and form.grant_access.data else None,
            deletion=bool(form.deletion.data and _in_a_school()),
        )
        db.session.commit()
        return _thank(support_request.reference)
    status = 400 if form.errors else 200
    return render(
        "support/help.html",
        block="form",
        target="help-form",
        status=status,
        form=form,
        may_grant=may_grant,
        in_school=_in_a_school(),
    )


def _in_a_school() -> bool:
    """Deletion requests are about one school: the person's current one, as an approved member."""
    membership = g.get("membership")
    return membership is not None and membership.is_approved and not g.get("support_grant")


@bp.route("/help/requests")
@signed_in
def my_requests():
    """The person's own requests and how far each has got."""
    return render_template("support/requests.html", requests=services.requests_of(current_user.id))


@bp.route("/contact", methods=["GET", "POST"])
@public
@limiter.limit(_contact_limit, methods=["POST"])
def contact():
    """Anyone may write to us; rate limited, and a filled honeypot stores nothing."""
    form = forms.ContactForm()
    if request.method == "GET" and current_user.is_authenticated:
        form.name.data = current_user.name
        form.email.data = current_user.email
    if request.method == "POST" and (request.form.get(form.website.name) or "").strip():
        # A bot filled the field people never see: the usual thanks, nothing stored or sent.
        current_app.logger.info("contact form honeypot filled; nothing stored")
        return _thank(new_reference())
    if form.validate_on_submit():
        support_request = services.submit_contact(
            user_id=current_user.id if current_user.is_authenticated else None,
            name=form.name.data,
            email=form.email.data,
            message=form.message.data,
        )
        db.session.commit()
        return _thank(support_request.reference)
    status = 400 if form.errors else 200
    return render("support/contact.html", block="form", target="contact-form", status=status, form=form)


@bp.route("/support/thanks")
@public
def thanks():
    """After sending: the reference to quote (kept in the server-side session, not the URL)."""
    return render_template("support/thanks.html", reference=session.get(SESSION_KEY))


def _thank(reference: str):
    session[SESSION_KEY] = reference
    return redirect_after_post(url_for("support.thanks"))
