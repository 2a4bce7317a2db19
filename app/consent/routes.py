"""The consent blueprint: the public policy, its history and notice, cookies and third parties.

A person's own account (my data, closing it) is in account_routes.py, the school admins' consent
counts and data export in school_routes.py; platform admins write versions in
app/platform/policy_routes.py.
"""

from __future__ import annotations

import click
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user

from app.consent import analytics, disclosures, forms, ledger, policy, services
from app.consent.account_routes import bp as account_bp
from app.consent.school_routes import bp as school_bp
from app.extensions import db
from app.htmx import redirect_after_post, wants_fragment
from app.models.base import utcnow
from app.permissions import public, signed_in
from app.urls import safe_next

bp = Blueprint("consent", __name__)


# --- the public policy --------------------------------------------------------------------------


def policy_page():
    """The privacy page: the version in force, the one coming and when, and the history."""
    state = policy.state()
    return render_template(
        "consent/policy.html",
        state=state,
        body=policy.render_body(state.in_force) if state.in_force else None,
        body_language=policy.body_language(state.in_force) if state.in_force else None,
        placeholder=policy.render_markdown(policy.placeholder_body()) if not state.history else None,
        now=utcnow(),
    )


@bp.route("/privacy/versions/<int:number>")
@public
def show_version(number: int):
    """One posted version's full text."""
    version = policy.get_version(number)
    if version is None or not version.is_posted:
        abort(404)
    return render_template(
        "consent/version.html",
        version=version,
        body=policy.render_body(version),
        body_language=policy.body_language(version),
    )


@bp.route("/privacy/changes")
@public
def diff():
    """What changed between any two posted versions, line by line."""
    versions = policy.posted_versions()
    by_number = {v.number: v for v in versions}
    old = by_number.get(request.args.get("from", type=int) or 0)
    new = by_number.get(request.args.get("to", type=int) or 0)
    if old is None and len(versions) >= 2:
        old = versions[1]
    if new is None and versions:
        new = versions[0]
    lines = policy.diff(old, new) if old is not None and new is not None else []
    return render_template("consent/diff.html", versions=versions, old=old, new=new, lines=lines)


@bp.route("/privacy/notice")
@public
def notice():
    """The latest material change, always reachable from the footer, with a way to object."""
    version = ledger.latest_material_notice()
    objections = ledger.objections_due(current_user) if current_user.is_authenticated else []
    return render_template(
        "consent/notice.html",
        version=version,
        objecting=objections,
        acknowledge_form=forms.AcknowledgeForm(),
    )


@bp.route("/privacy/notice/<int:number>/acknowledge", methods=["POST"])
@signed_in
def acknowledge(number: int):
    """'I've read it': the banner goes away for this person (htmx removes it in place)."""
    if not forms.AcknowledgeForm().validate_on_submit():
        abort(400)
    if not services.acknowledge(current_user, number):
        abort(404)
    db.session.commit()
    if wants_fragment("consent-banner"):
        return render_template("consent/partials/_banner_done.html")
    flash(_("Thank you. The notice stays under 'Policy changes' at the bottom of every page."), "success")
    return redirect_after_post(safe_next(request.form.get("next")) or url_for("main.home"))


@bp.cli.command("seed-policy")
def seed_policy():
    """Publish our short placeholder as version 1 if no version is posted yet."""
    version = policy.ensure_placeholder()
    db.session.commit()
    click.echo(f"Version {version.number} is the newest posted version.")


# --- cookies and third parties -----------------------------------------------------------------


@bp.route("/cookies")
@public
def cookies():
    """Every cookie the app sets, and why."""
    config = current_app.config
    return render_template(
        "consent/cookies.html",
        session_cookie=config["SESSION_COOKIE_NAME"],
        lifetime_days=config["PERMANENT_SESSION_LIFETIME"].days,
        secure=config["SESSION_COOKIE_SECURE"],
        analytics=analytics.enabled(),
    )


def third_party_services() -> list[disclosures.Processor]:
    """The outside services this deployment uses, from its configuration."""
    return disclosures.processors()


@bp.route("/third-parties")
@public
def third_parties():
    """The third-party services this deployment uses, what for, and what they receive."""
    return render_template("consent/third_parties.html", services=third_party_services())


# --- nested blueprints: a person's own account (consent.account.*), school admins (consent.school.*)
# Registered here, at the end, so the blueprint's head stays as the request pipeline left it.
bp.register_blueprint(account_bp)
bp.register_blueprint(school_bp)
