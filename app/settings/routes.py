"""Settings blueprint: sections that save in place with htmx, and as plain forms (303 + flash).

Each section needs its own permission from the catalogue: the page itself settings.view,
changing the school settings.edit, people members.manage (and members.permissions for single
permissions), support access support.grant, the audit log audit.view, the data data.export.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, g, render_template, request, url_for

from app import clock, permissions
from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.members import lifecycle, rules
from app.models import Role
from app.parsing import optional_id
from app.permissions import can, requires
from app.settings import forms, services

bp = Blueprint("settings", __name__, url_prefix="/settings")

PAGE = "settings/index.html"
PERSON = "settings/person.html"
EXPORT_ENDPOINT = "consent.school_export"


# -- the settings page -------------------------------------------------------------------


def _page_context(**forms_given) -> dict:
    """Everything the settings page shows; forms not given start from the school's values."""
    school = g.school
    context = {
        "school": school,
        "profile_form": forms.ProfileForm(formdata=None, obj=school),
        "invite_form": forms.InviteCodeForm(formdata=None),
        "joining_form": forms.JoiningForm(
            formdata=None,
            families_edit_own=school.families_edit_own,
            default_visibility=school.default_visibility.value,
            approval_role=(school.approval_role or Role.STAFF).value,
        ),
        "grant_form": forms.GrantForm(formdata=None),
        "confirm_form": forms.ConfirmForm(formdata=None),
        "time_zones": services.time_zones(),
        "export_url": url_for(EXPORT_ENDPOINT) if EXPORT_ENDPOINT in current_app.view_functions else None,
    }
    if can("support.grant"):
        context["active_grants"], context["past_grants"] = services.grants()
    if can("settings.edit"):
        context["deletions"] = services.deletion_requests()
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
    """Rename the school or change its time zone."""
    form = forms.ProfileForm()
    if not form.validate_on_submit():
        return _section("profile", 400, profile_form=form)
    changed = services.update_profile(g.school, name=form.name.data, timezone=form.timezone.data)
    db.session.commit()
    return _saved("profile", "School profile saved." if changed else "Nothing to change.", "success")


@bp.route("/invite-code/rotate", methods=["POST"])
@requires("settings.edit")
def rotate_code():
    """Make a new invitation code (or switch it back on); the old one stops working."""
    if not forms.InviteCodeForm().validate_on_submit():
        abort(400)
    services.rotate_invite_code(g.school)
    db.session.commit()
    return _saved("invite", "New invitation code made. The old one no longer works.")


@bp.route("/invite-code/off", methods=["POST"])
@requires("settings.edit")
def code_off():
    """Switch the invitation code off: nobody can ask to join until a new one is made."""
    if not forms.InviteCodeForm().validate_on_submit():
        abort(400)
    services.switch_off_invite_code(g.school)
    db.session.commit()
    return _saved("invite", "Invitation code switched off.")


@bp.route("/joining", methods=["POST"])
@requires("settings.edit")
def joining():
    """Whether families edit their own members, default visibility, and who approves."""
    form = forms.JoiningForm()
    if not form.validate_on_submit():
        return _section("joining", 400, joining_form=form)
    changed = services.update_joining_rules(
        g.school,
        families_edit_own=form.families_edit_own.data,
        default_visibility=form.default_visibility.data,
        approval_role=form.approval_role.data,
    )
    db.session.commit()
    return _saved("joining", "Joining rules saved." if changed else "Nothing to change.")


@bp.route("/support/grant", methods=["POST"])
@requires("support.grant")
def grant_support():
    """Let platform support read the school's data, read-only, for a number of hours."""
    form = forms.GrantForm()
    if not form.validate_on_submit():
        return _section("support", 400, grant_form=form)
    services.grant_support(form.hours.data)
    db.session.commit()
    return _saved("support", f"Support may read the school's data for {form.hours.data} hours.")


@bp.route("/support/<int:grant_id>/revoke", methods=["POST"])
@requires("support.grant")
def revoke_support(grant_id: int):
    """End a support grant now."""
    grant = services.get_grant(grant_id)
    if grant is None:
        abort(404)
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    revoked = services.revoke_grant(grant)
    db.session.commit()
    return _saved("support", "Support access revoked." if revoked else "That access had already ended.")


@bp.route("/deletions/<int:request_id>/confirm", methods=["POST"])
@requires("settings.edit")
def confirm_deletion(request_id: int):
    """Second step of a deletion request: the school confirms what support marked."""
    support_request = services.get_deletion_request(request_id)
    if support_request is None:
        abort(404)
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    try:
        done = services.confirm_deletion(support_request)
    except rules.Refused as refusal:
        db.session.rollback()
        return _saved("deletions", str(refusal), "error")
    db.session.commit()
    return _saved("deletions", "Deletion carried out." if done else "Nothing to confirm for this request.")


# -- people ------------------------------------------------------------------------------


@bp.route("/people")
@requires("members.manage")
def people():
    """Search the school's members; htmx asks for just the results while the admin types."""
    form = forms.PeopleSearchForm(request.args)
    search = (form.q.data if form.validate() else "") or ""
    page = _page_number(request.args.get("page"))
    size = services.PEOPLE_PAGE
    # One row more than a page says whether a next page exists, without counting them all.
    found = services.people(search, limit=size + 1, offset=(page - 1) * size)
    return render(
        "settings/people.html",
        block="results",
        target="people-results",
        form=form,
        people=found[:size],
        page=page,
        has_next=len(found) > size,
        search=search,
    )


def _page_number(value: str | None) -> int:
    """A page number from the query string: 1 unless it is a sensible positive integer."""
    number = optional_id(value)
    return number if number is not None and number <= 10_000 else 1


def _person_or_404(membership_id: int):
    target = services.person(membership_id)
    if target is None:
        abort(404)
    return target


def _person(target, status: int = 200, error: str | None = None, role_form=None):
    """The person page, or its card for htmx."""
    actor_permissions = permissions.effective_permissions(g.membership)
    if role_form is None:
        role_form = forms.RoleForm(formdata=None, role=target.role.value)
    role_form.role.choices = [(r.value, r.label) for r in rules.assignable_roles(g.membership)]
    if target.role.value not in dict(role_form.role.choices):
        role_form.role.choices.append((target.role.value, target.role.label))
    return render(
        PERSON,
        block="person",
        target="person",
        status=status,
        target_member=target,
        role_form=role_form,
        confirm_form=forms.ConfirmForm(formdata=None),
        rows=services.permission_rows(actor_permissions, target),
        defaults=services.role_defaults(target),
        error=error,
        is_self=target.id == g.membership.id,
    )


def _changed_person(target, message: str):
    flash(message, "success")
    if wants_fragment("person"):
        return _person(target)
    return redirect_after_post(url_for("settings.person", membership_id=target.id))


@bp.route("/people/<int:membership_id>")
@requires("members.manage")
def person(membership_id: int):
    """One person: their role, their permissions (role defaults and single changes), their status."""
    return _person(_person_or_404(membership_id))


@bp.route("/people/<int:membership_id>/role", methods=["POST"])
@requires("members.manage")
def change_role(membership_id: int):
    """Give a person another role, up to the actor's own; never demote the last SuperAdmin."""
    target = _person_or_404(membership_id)
    form = forms.RoleForm()
    form.role.choices = [(r.value, r.label) for r in Role]
    if not form.validate_on_submit():
        return _person(target, 400, role_form=form)
    try:
        changed = lifecycle.change_role(g.membership, target, Role(form.role.data))
    except rules.Refused as refusal:
        db.session.rollback()
        return _person(services.person(membership_id), refusal.status, error=str(refusal))
    db.session.commit()
    return _changed_person(
        target, f"Role changed to {target.role.label}." if changed else "Nothing to change."
    )


@bp.route("/people/<int:membership_id>/permissions", methods=["POST"])
@requires("members.manage", "members.permissions")
def change_permissions(membership_id: int):
    """Grant or revoke single permissions; only ones the actor holds themselves."""
    target = _person_or_404(membership_id)
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    wanted = set(request.form.getlist("permission"))
    try:
        changed = services.set_permissions(g.membership, target, wanted)
    except rules.Refused as refusal:
        db.session.rollback()
        return _person(services.person(membership_id), refusal.status, error=str(refusal))
    db.session.commit()
    return _changed_person(
        target, f"{len(changed)} permission(s) changed." if changed else "Nothing to change."
    )


@bp.route("/people/<int:membership_id>/deactivate", methods=["POST"])
@requires("members.manage")
def deactivate(membership_id: int):
    """Switch a person's membership of this school off; they lose access on their next request."""
    return _status_change(membership_id, lifecycle.deactivate, "Membership deactivated.")


@bp.route("/people/<int:membership_id>/reactivate", methods=["POST"])
@requires("members.manage")
def reactivate(membership_id: int):
    """Let a deactivated person back into the school."""
    return _status_change(membership_id, lifecycle.reactivate, "Membership reactivated.")


def _status_change(membership_id: int, change, message: str):
    target = _person_or_404(membership_id)
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    try:
        changed = change(g.membership, target)
    except rules.Refused as refusal:
        db.session.rollback()
        return _person(services.person(membership_id), refusal.status, error=str(refusal))
    db.session.commit()
    return _changed_person(target, message if changed else "Nothing to change.")


# -- the audit log -----------------------------------------------------------------------


@bp.route("/audit")
@requires("audit.view")
def audit_log():
    """Who did what and when, newest first; filter by action and by day; sign-ins as counts."""
    form = forms.AuditFilterForm(request.args)
    form.action.choices = [("", "Every action"), *services.actions().items()]
    valid = form.validate()
    before = request.args.get("before", "")
    audit_filter = services.AuditFilter(
        action=form.action.data or None if valid else None,
        since=form.since.data if valid else None,
        until=form.until.data if valid else None,
        before_id=optional_id(before),
    )
    page = services.audit_page(audit_filter)
    next_args = {k: v for k, v in request.args.items() if k != "before" and v}
    return render(
        "settings/audit.html",
        block="results",
        target="audit-results",
        status=200 if valid else 400,
        form=form,
        page=page,
        labels=services.actions(),
        zone=clock.school_zone(),
        next_url=url_for("settings.audit_log", before=page.next_before_id, **next_args)
        if page.next_before_id
        else None,
    )
