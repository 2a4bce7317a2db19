"""Platform blueprint: the support console, and entering a school under its grant (P3).

Policy authoring and email suppressions (platform admins) are nested in it from
policy_routes.py and suppression_routes.py.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, render_template, request, session, url_for
from flask_babel import gettext as _

from app import audit, tenancy
from app.extensions import db
from app.forms import GuardedForm
from app.htmx import redirect_after_post
from app.lookup import or_404
from app.models import PlatformRole
from app.permissions import platform
from app.platform import access, schools, services
from app.platform.forms import NewSchoolForm
from app.platform.policy_routes import bp as policy_bp
from app.platform.suppression_routes import bp as suppressions_bp
from app.settings import school as school_settings

bp = Blueprint("platform", __name__, url_prefix="/platform")
bp.register_blueprint(policy_bp)
bp.register_blueprint(suppressions_bp)
STAFF = (PlatformRole.SUPPORT, PlatformRole.ADMIN)


class ButtonForm(GuardedForm):
    """A button that does one thing: only the CSRF token."""


@bp.route("/")
@platform(*STAFF)
def console():
    """Support requests across schools, and which schools have allowed support in."""
    requests = services.recent_requests()
    view = session.get(access.SESSION_KEY)
    return render_template(
        "platform/console.html",
        requests=requests,
        schools=services.schools_in_view(requests),
        viewing=g.school if view and g.get("support_grant") is not None else None,
        ended=bool(view) and g.get("support_grant") is None,
        form=ButtonForm(),
    )


@bp.route("/schools/new", methods=["GET", "POST"])
@platform(PlatformRole.ADMIN)
def new_school():
    """Create a school and invite its first admin by email."""
    form = NewSchoolForm()
    if request.method == "GET":
        form.code.data = schools.suggest_code()
    elif form.validate_on_submit():
        new = schools.NewSchool(
            name=form.name.data,
            code=form.code.data,
            admin_email=form.admin_email.data,
            admin_name=form.admin_name.data,
            timezone=form.timezone.data,
            default_language=form.default_language.data,
        )
        try:
            school = schools.create_school(new)
        except schools.SchoolRefused as refusal:
            db.session.rollback()
            getattr(form, refusal.field).errors.append(refusal.message)
        else:
            db.session.commit()
            flash(
                _(
                    "%(school)s is created. Its first admin has an email with a link to choose a password.",
                    school=school.name,
                ),
                "success",
            )
            return redirect_after_post(url_for("platform.console"))
    status = 400 if form.errors else 200
    return render_template(
        "platform/new_school.html", form=form, time_zones=school_settings.time_zones()
    ), status


@bp.route("/schools/<int:school_id>/enter", methods=["POST"])
@platform(*STAFF)
def enter(school_id: int):
    """Open a school's directory and settings read-only, if the school has an active grant."""
    if not ButtonForm().validate_on_submit():
        abort(400)
    grant = access.enter(school_id)
    if grant is None:
        abort(403)  # no active grant: staff see no school data
    g.support_grant = grant
    rule = request.url_rule.rule if request.url_rule is not None else request.endpoint  # as access.py does
    with tenancy.bound(school_id):
        audit.record("support.viewed", target=rule, school_id=school_id, route=rule)
        db.session.commit()
    return redirect_after_post(url_for("directory.index"))


@bp.route("/leave", methods=["POST"])
@platform(*STAFF)
def leave():
    """Stop looking at a school's data."""
    if not ButtonForm().validate_on_submit():
        abort(400)
    access.leave()
    flash(_("You left the school's data."), "info")
    return redirect_after_post(url_for("platform.console"))


@bp.route("/requests/<int:request_id>/mark-deletion", methods=["POST"])
@platform(*STAFF)
def mark_deletion(request_id: int):
    """Mark a deletion request to be carried out; it happens once the school's admin confirms."""
    if not ButtonForm().validate_on_submit():
        abort(400)
    support_request = or_404(services.get_request(request_id))
    if services.mark_deletion(support_request):
        db.session.commit()
        flash(
            _(
                "%(reference)s is marked; the school's admin confirms it in their settings.",
                reference=support_request.reference,
            ),
            "success",
        )
    else:
        flash(_("That request cannot be marked (not a deletion request, or marked already)."), "error")
    return redirect_after_post(url_for("platform.console"))
