"""The consent blueprint: the policy and its versions, the notice, closing an account, your data,
school exports, cookies and third-party services."""

from __future__ import annotations

import click
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from app import audit
from app.auth import passwords
from app.auth.services import sign_out
from app.consent import analytics, export, forms, ledger, policy, services
from app.extensions import db
from app.htmx import redirect_after_post, render
from app.models import PlatformRole
from app.models.base import utcnow
from app.models.consent import ConsentKind, ExportStatus
from app.permissions import platform, public, requires, signed_in
from app.urls import safe_next

bp = Blueprint("consent", __name__)


# --- the public policy --------------------------------------------------------------------------


def policy_page():
    """The privacy page: the version in force, the one coming and when, and the history."""
    if policy.refresh_all_dispatches():
        db.session.commit()
    state = policy.state()
    return render_template(
        "consent/policy.html",
        state=state,
        body=policy.render_body(state.in_force) if state.in_force else None,
        placeholder=policy.render_markdown(policy.PLACEHOLDER_BODY) if not state.history else None,
        now=utcnow(),
    )


@bp.route("/privacy/versions/<int:number>")
@public
def show_version(number: int):
    """One posted version's full text."""
    version = policy.get_version(number)
    if version is None or not version.is_posted:
        abort(404)
    return render_template("consent/version.html", version=version, body=policy.render_body(version))


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
    if request.headers.get("HX-Request") == "true":
        return render_template("consent/_banner_done.html")
    flash("Thank you. The notice stays under 'Policy changes' at the bottom of every page.", "success")
    return redirect_after_post(safe_next(request.form.get("next")) or url_for("main.home"))


# --- platform administrators write versions --------------------------------------------------


@bp.route("/platform/policy/")
@platform(PlatformRole.ADMIN)
def versions():
    """Every version, drafts first, with when each was posted, emailed and takes effect."""
    if policy.refresh_all_dispatches():
        db.session.commit()
    return render_template(
        "consent/versions.html", versions=policy.all_versions(), publish_form=forms.PublishForm()
    )


@bp.route("/platform/policy/new", methods=["GET", "POST"])
@platform(PlatformRole.ADMIN)
def new_version():
    """Write a draft (starting from the newest text)."""
    form = forms.PolicyVersionForm()
    if request.method == "GET":
        newest = policy.newest_posted()
        form.body.data = newest.body_markdown if newest else policy.PLACEHOLDER_BODY
    if form.validate_on_submit():
        version = policy.create_draft(
            body=form.body.data,
            summary=form.summary.data.strip(),
            material=form.material.data,
            email=form.notify_by_email.data,
            notice=form.notify_by_notice.data,
            by=current_user,
        )
        db.session.commit()
        flash(f"Draft version {version.number} saved. Check it, then publish it.", "success")
        return redirect_after_post(url_for("consent.versions"))
    return render_template("consent/edit.html", form=form, version=None), 400 if form.errors else 200


@bp.route("/platform/policy/<int:number>/edit", methods=["GET", "POST"])
@platform(PlatformRole.ADMIN)
def edit_version(number: int):
    """Change a draft; posted versions are fixed."""
    version = policy.get_version(number)
    if version is None:
        abort(404)
    if version.is_posted:
        flash(policy.POSTED_IS_FIXED, "error")
        return redirect_after_post(url_for("consent.versions"))
    form = forms.PolicyVersionForm(obj=version)
    if form.validate_on_submit():
        try:
            policy.update_draft(
                version,
                body=form.body.data,
                summary=form.summary.data.strip(),
                material=form.material.data,
                email=form.notify_by_email.data,
                notice=form.notify_by_notice.data,
            )
        except policy.PublishRefused as refusal:
            # Posted meanwhile: keep what was typed on the page, to start a new version from it.
            db.session.rollback()
            flash(str(refusal), "error")
            return render_template("consent/edit.html", form=form, version=version), 409
        db.session.commit()
        flash(f"Draft version {version.number} saved.", "success")
        return redirect_after_post(url_for("consent.versions"))
    return render_template("consent/edit.html", form=form, version=version), 400 if form.errors else 200


@bp.route("/platform/policy/<int:number>/publish", methods=["POST"])
@platform(PlatformRole.ADMIN)
def publish_version(number: int):
    """Post a draft; a material change also posts the notice and/or emails everyone."""
    version = policy.get_version(number)
    if version is None:
        abort(404)
    if not forms.PublishForm().validate_on_submit():
        abort(400)
    try:
        policy.publish(version)
    except policy.PublishRefused as refusal:
        db.session.rollback()
        flash(str(refusal), "error")
        return redirect_after_post(url_for("consent.versions"))
    db.session.commit()
    flash(f"Version {number} is posted.", "success")
    return redirect_after_post(url_for("consent.versions"))


@bp.cli.command("seed-policy")
def seed_policy():
    """Publish our short placeholder as version 1 if no version is posted yet."""
    version = policy.ensure_placeholder()
    db.session.commit()
    click.echo(f"Version {version.number} is the newest posted version.")


# --- a person's own account -------------------------------------------------------------------


@bp.route("/account/my-data.json")
@signed_in
def my_data():
    """Download my own and my family's data as JSON."""
    return Response(
        export.personal_json(current_user),
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-data.json"'},
    )


@bp.route("/account/close", methods=["GET", "POST"])
@signed_in
def close_account():
    """Close my account (and object to a coming policy change): no sign-in, no email, out of directories."""
    form = forms.CloseAccountForm()
    objecting = ledger.objections_due(current_user)
    if form.validate_on_submit():
        if not passwords.verify_password(current_user.password_hash, form.password.data):
            form.password.errors.append("That is not your password.")
        else:
            user = current_user._get_current_object()
            objected = services.close_account(user)
            db.session.commit()
            sign_out()
            return render_template("consent/closed.html", objected=objected)
    status = 400 if form.errors else 200
    return render(
        "consent/close.html", block="form", target="close-form", form=form, objecting=objecting, status=status
    )


# --- school administrators ---------------------------------------------------------------------


@bp.route("/school/consent")
@requires("settings.view")
def consent_summary():
    """How many of the school's people are at each step for each version (counts, never names)."""
    return render_template(
        "consent/summary.html",
        versions=policy.posted_versions(),
        counts=ledger.counts_for_school(),
        kinds=ConsentKind,
    )


@bp.route("/school/export", methods=["GET", "POST"])
@requires("data.export")
def school_export():
    """Export the school's data (JSON and CSV in a ZIP), built by the worker."""
    form = forms.ExportForm()
    if form.validate_on_submit():
        _, raw = export.request_school_export(current_user)
        audit.record("export.school_data", target=g.school.name)
        db.session.commit()
        return redirect_after_post(url_for("consent.export_status", token=raw))
    return render_template("consent/export.html", form=form), 400 if form.errors else 200


def _export_or_404(token: str):
    found = export.find_export(token)
    if found is None:
        abort(404)
    return found


@bp.route("/school/export/<token>")
@requires("data.export")
def export_status(token: str):
    """The export's progress; htmx polls the status block until the link appears."""
    found = _export_or_404(token)
    expired = export.forget_if_expired(found)
    return render(
        "consent/export_status.html",
        block="status",
        target="export-status",
        export=found,
        token=token,
        expired=expired,
        ExportStatus=ExportStatus,
    )


@bp.route("/school/export/<token>/download")
@requires("data.export")
def export_download(token: str):
    """The ZIP, while the link has not expired."""
    found = _export_or_404(token)
    if export.forget_if_expired(found) or found.status is not ExportStatus.READY or found.content is None:
        return render_template("consent/export_gone.html"), 410
    stamp = found.created_at.strftime("%Y-%m-%d")
    return Response(
        found.content,
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="school-data-{stamp}.zip"'},
    )


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


def third_party_services() -> list[dict]:
    """The outside services this deployment uses, from its configuration."""
    config = current_app.config
    found = []
    if config.get("MAIL_BACKEND") == "mailgun":
        found.append(
            {
                "name": "Mailgun",
                "purpose": "Delivers the emails the service sends.",
                "data": "Each recipient's email address, and the message itself.",
            }
        )
    if analytics.enabled():
        found.append(
            {
                "name": "Google Analytics",
                "purpose": "Counts which kinds of page are visited, so we can improve them.",
                "data": (
                    "The page's pattern (never its real address, ids or names), your browser's "
                    "type, screen size and language, and a random visitor number in a cookie. "
                    "No account id; Google signals and ad personalisation are off; nothing is "
                    "sent if your browser asks not to be tracked."
                ),
            }
        )
    if all(config.get(name) for name in ("ZENDESK_SUBDOMAIN", "ZENDESK_EMAIL", "ZENDESK_API_TOKEN")):
        found.append(
            {
                "name": "Zendesk",
                "purpose": "Handles support and contact requests.",
                "data": "Your name, your email address and what you wrote in the request.",
            }
        )
    return found


@bp.route("/third-parties")
@public
def third_parties():
    """The third-party services this deployment uses, what for, and what they receive."""
    return render_template("consent/third_parties.html", services=third_party_services())
