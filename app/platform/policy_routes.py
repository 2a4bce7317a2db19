"""Platform administrators write, edit and publish versions of the privacy policy.

Nested in the platform blueprint (``platform.policy.*``, under /platform/policy/). The
public side (the policy, its history and notice) is the consent blueprint's.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from app.consent import policy
from app.extensions import db
from app.htmx import redirect_after_post
from app.i18n import current_locale
from app.lookup import or_404
from app.models import PlatformRole
from app.permissions import platform
from app.platform import forms

bp = Blueprint("policy", __name__, url_prefix="/policy")
EDIT = "platform/policy/edit.html"


@bp.route("/")
@platform(PlatformRole.ADMIN)
def versions():
    """Every version, drafts first, with when each was posted, emailed and takes effect."""
    return render_template(
        "platform/policy/versions.html", versions=policy.all_versions(), publish_form=forms.PublishForm()
    )


@bp.route("/new", methods=["GET", "POST"])
@platform(PlatformRole.ADMIN)
def new_version():
    """Write a draft (starting from the newest text)."""
    form = forms.PolicyVersionForm()
    if request.method == "GET":
        newest = policy.newest_posted()
        form.body.data = newest.body_markdown if newest else policy.placeholder_body()
        # The text it starts from keeps its language (ours is in the reader's).
        form.language.data = newest.language if newest and not policy.is_placeholder(newest) else None
        form.language.data = form.language.data or current_locale()
    if form.validate_on_submit():
        version = policy.create_draft(
            body=form.body.data,
            summary=form.summary.data.strip(),
            material=form.material.data,
            email=form.notify_by_email.data,
            notice=form.notify_by_notice.data,
            by=current_user,
            language=form.language.data,
        )
        db.session.commit()
        flash(
            _("Draft version %(number)s saved. Check it, then publish it.", number=version.number), "success"
        )
        return redirect_after_post(url_for(".versions"))
    return render_template(EDIT, form=form, version=None), 400 if form.errors else 200


@bp.route("/<int:number>/edit", methods=["GET", "POST"])
@platform(PlatformRole.ADMIN)
def edit_version(number: int):
    """Change a draft; posted versions are fixed."""
    version = or_404(policy.get_version(number))
    if version.is_posted:
        flash(str(policy.POSTED_IS_FIXED), "error")
        return redirect_after_post(url_for(".versions"))
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
                language=form.language.data,
            )
        except policy.PublishRefused as refusal:
            # Posted meanwhile: keep what was typed on the page, to start a new version from it.
            db.session.rollback()
            flash(str(refusal), "error")
            return render_template(EDIT, form=form, version=version), 409
        db.session.commit()
        flash(_("Draft version %(number)s saved.", number=version.number), "success")
        return redirect_after_post(url_for(".versions"))
    return render_template(EDIT, form=form, version=version), 400 if form.errors else 200


@bp.route("/<int:number>/publish", methods=["POST"])
@platform(PlatformRole.ADMIN)
def publish_version(number: int):
    """Post a draft; a material change also posts the notice and/or emails everyone."""
    version = or_404(policy.get_version(number))
    if not forms.PublishForm().validate_on_submit():
        abort(400)
    try:
        policy.publish(version)
    except policy.PublishRefused as refusal:
        db.session.rollback()
        flash(str(refusal), "error")
        return redirect_after_post(url_for(".versions"))
    db.session.commit()
    flash(_("Version %(number)s is posted.", number=number), "success")
    return redirect_after_post(url_for(".versions"))
