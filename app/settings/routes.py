"""Settings blueprint: sections that save in place with htmx, and as plain forms (303 + flash).

Each section needs its own permission from the catalogue: the page itself settings.view,
changing the school settings.edit, people members.manage (and members.permissions for single
permissions), the members' email suppressions members.manage, support access support.grant,
the audit log audit.view, the data data.export.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, render_template, url_for
from flask_babel import gettext as _
from flask_babel import ngettext

from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.identity import services as identity
from app.lookup import or_404
from app.members import rules
from app.models import Role
from app.permissions import can, requires
from app.settings import confirmations, forms, support_access
from app.settings import school as school_settings
from app.settings.audit_routes import bp as audit_bp
from app.settings.people_routes import bp as people_bp
from app.settings.suppression_routes import bp as suppressions_bp

bp = Blueprint("settings", __name__, url_prefix="/settings")
bp.register_blueprint(people_bp)
bp.register_blueprint(audit_bp)
bp.register_blueprint(suppressions_bp)

PAGE = "settings/index.html"


# -- the settings page -------------------------------------------------------------------


def _page_context(**forms_given) -> dict:
    """Everything the settings page shows; forms not given start from the school's values."""
    school = g.school
    context = {
        "school": school,
        "profile_form": forms.ProfileForm(formdata=None, obj=school),
        "invite_form": forms.InviteCodeForm(formdata=None),
        "rotate_confirmation": confirmations.rotate_code(school),
        "code_off_confirmation": confirmations.code_off(school),
        "joining_form": forms.JoiningForm(
            formdata=None,
            families_edit_own=school.families_edit_own,
            default_visibility=school.default_visibility.value,
            approval_role=(school.approval_role or Role.STAFF).value,
        ),
        "brand_form": forms.BrandColourForm(formdata=None, brand_colour=school.brand_colour),
        "crest_form": forms.CrestForm(formdata=None),
        "grant_form": forms.GrantForm(formdata=None),
        "confirm_form": forms.ConfirmForm(formdata=None),
        "time_zones": school_settings.time_zones(),
        "export_url": url_for("consent.school.export"),
    }
    if can("support.grant"):
        context["active_grants"], context["past_grants"] = support_access.grants()
    if can("settings.edit"):
        context["deletions"] = support_access.deletion_requests()
    context.update(forms_given)
    return context


def _section(block: str, status: int = 200, **forms_given):
    """The page, or one section for htmx (with its errors when ``status`` is 400)."""
    return render(PAGE, block=block, target=f"section-{block}", status=status, **_page_context(**forms_given))


def _saved(block: str, message: str, category: str = "success"):
    """After a change: the fresh section for htmx, or a 303 back to the page for a plain form."""
    flash(message, category)
    if wants_fragment(f"section-{block}"):
        return _section(block)
    return redirect_after_post(url_for("settings.index") + f"#section-{block}")


@bp.route("/")
@requires("settings.view")
def index():
    """The school's settings, one section per concern."""
    return render_template(PAGE, **_page_context())


@bp.route("/profile", methods=["POST"])
@requires("settings.edit")
def profile():
    """Rename the school, or change its time zone or default language."""
    form = forms.ProfileForm()
    if not form.validate_on_submit():
        return _section("profile", 400, profile_form=form)
    changed = school_settings.update_profile(
        g.school,
        name=form.name.data,
        timezone=form.timezone.data,
        default_language=form.default_language.data,
    )
    db.session.commit()
    return _saved("profile", _("School profile saved.") if changed else _("Nothing to change."), "success")


@bp.route("/brand-colour", methods=["POST"])
@requires("settings.edit")
def brand_colour():
    """Set the school's brand colour (refused unless white text on it meets WCAG AA), or clear it."""
    form = forms.BrandColourForm()
    if not form.validate_on_submit():
        return _section("brand", 400, brand_form=form)
    changed = identity.set_brand_colour(g.school, form.colour)
    db.session.commit()
    return _saved("brand", _("Brand colour saved.") if changed else _("Nothing to change."))


@bp.route("/crest", methods=["POST"])
@requires("settings.edit")
def crest():
    """Upload the school's crest: checked by its content, cleaned of metadata, kept in the database."""
    form = forms.CrestForm()
    if form.validate_on_submit():
        data = form.crest.data.stream.read(identity.MAX_CREST_BYTES + 1)
        try:
            identity.save_crest(g.school, data)
        except identity.Refused as refusal:
            db.session.rollback()
            form.crest.errors.append(str(refusal))
        else:
            db.session.commit()
            return _saved("brand", _("Crest saved."))
    return _section("brand", 400, crest_form=form)


@bp.route("/crest/remove", methods=["POST"])
@requires("settings.edit")
def remove_crest():
    """Remove the school's crest; the header shows the school's name alone."""
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    removed = identity.remove_crest(g.school)
    db.session.commit()
    return _saved("brand", _("Crest removed.") if removed else _("There was no crest to remove."))


@bp.route("/invite-code/rotate", methods=["GET", "POST"])
@requires("settings.edit")
def rotate_code():
    """Make a new invitation code (or switch it back on), once confirmed; the old one stops working."""
    if not confirmations.confirmed():
        return confirmations.ask(confirmations.rotate_code(g.school))
    school_settings.rotate_invite_code(g.school)
    db.session.commit()
    return _saved("invite", _("New invitation code made. The old one no longer works."))


@bp.route("/invite-code/off", methods=["GET", "POST"])
@requires("settings.edit")
def code_off():
    """Switch the invitation code off, once confirmed: nobody can ask to join until a new one is made."""
    if not confirmations.confirmed():
        return confirmations.ask(confirmations.code_off(g.school))
    school_settings.switch_off_invite_code(g.school)
    db.session.commit()
    return _saved("invite", _("Invitation code switched off."))


@bp.route("/joining", methods=["POST"])
@requires("settings.edit")
def joining():
    """Whether families edit their own members, default visibility, and who approves."""
    form = forms.JoiningForm()
    if not form.validate_on_submit():
        return _section("joining", 400, joining_form=form)
    changed = school_settings.update_joining_rules(
        g.school,
        families_edit_own=form.families_edit_own.data,
        default_visibility=form.default_visibility.data,
        approval_role=form.approval_role.data,
    )
    db.session.commit()
    return _saved("joining", _("Joining rules saved.") if changed else _("Nothing to change."))


@bp.route("/support/grant", methods=["POST"])
@requires("support.grant")
def grant_support():
    """Let platform support read the school's data, read-only, for a number of hours."""
    form = forms.GrantForm()
    if not form.validate_on_submit():
        return _section("support", 400, grant_form=form)
    support_access.grant_support(form.hours.data)
    db.session.commit()
    return _saved(
        "support",
        ngettext(
            "Support may read the school's data for %(num)s hour.",
            "Support may read the school's data for %(num)s hours.",
            form.hours.data,
        ),
    )


@bp.route("/support/<int:grant_id>/revoke", methods=["POST"])
@requires("support.grant")
def revoke_support(grant_id: int):
    """End a support grant now."""
    grant = or_404(support_access.get_grant(grant_id))
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    revoked = support_access.revoke_grant(grant)
    db.session.commit()
    return _saved("support", _("Support access revoked.") if revoked else _("That access had already ended."))


@bp.route("/deletions/<int:request_id>/confirm", methods=["POST"])
@requires("settings.edit")
def confirm_deletion(request_id: int):
    """Second step of a deletion request: the school confirms what support marked."""
    support_request = or_404(support_access.get_deletion_request(request_id))
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    try:
        done = support_access.confirm_deletion(support_request)
    except rules.Refused as refusal:
        db.session.rollback()
        return _saved("deletions", str(refusal), "error")
    db.session.commit()
    return _saved(
        "deletions", _("Deletion carried out.") if done else _("Nothing to confirm for this request.")
    )
