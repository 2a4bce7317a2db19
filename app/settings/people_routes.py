"""People and permissions (members.manage): search the school's members, change a person's
role, single permissions and status. Nested in the settings blueprint (``settings.people.*``).

Role and status changes go through the membership lifecycle; the route commits once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, abort, flash, g, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext

from app import permissions
from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.lookup import or_404
from app.members import lifecycle, rules
from app.models import Membership, Role
from app.parsing import optional_id
from app.permissions import requires
from app.settings import confirmations, forms, people

T = TypeVar("T")

bp = Blueprint("people", __name__, url_prefix="/people")

PERSON = "settings/person.html"


@bp.route("")
@requires("members.manage")
def index():
    """Search the school's members; htmx asks for just the results while the admin types."""
    form = forms.PeopleSearchForm(request.args)
    search = (form.q.data if form.validate() else "") or ""
    page = _page_number(request.args.get("page"))
    size = people.PEOPLE_PAGE
    # One row more than a page says whether a next page exists, without counting them all.
    found = people.people(search, limit=size + 1, offset=(page - 1) * size)
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
        deactivate_confirmation=confirmations.deactivate(target),
        rows=people.permission_rows(actor_permissions, target),
        module_labels=permissions.MODULE_LABELS,  # rows are keyed by the plain module name
        defaults=people.role_defaults(target),
        error=error,
        is_self=target.id == g.membership.id,
    )


def _changed_person(target, message: str):
    flash(message, "success")
    if wants_fragment("person"):
        return _person(target)
    return redirect_after_post(url_for("settings.people.person", membership_id=target.id))


@bp.route("/<int:membership_id>")
@requires("members.manage")
def person(membership_id: int):
    """One person: their role, their permissions (role defaults and single changes), their status."""
    return _person(or_404(people.person(membership_id)))


@bp.route("/<int:membership_id>/role", methods=["POST"])
@requires("members.manage")
def change_role(membership_id: int):
    """Give a person another role, up to the actor's own; never demote the last SuperAdmin."""
    target = or_404(people.person(membership_id))
    form = forms.RoleForm()
    form.role.choices = [(r.value, r.label) for r in Role]
    if not form.validate_on_submit():
        return _person(target, 400, role_form=form)
    return _commit_unless_refused(
        target,
        lambda: lifecycle.change_role(g.membership, target, Role(form.role.data)),
        lambda changed: (
            _("Role changed to %(role)s.", role=target.role.label) if changed else _("Nothing to change.")
        ),
    )


@bp.route("/<int:membership_id>/permissions", methods=["POST"])
@requires("members.manage", "members.permissions")
def change_permissions(membership_id: int):
    """Grant or revoke single permissions; only ones the actor holds themselves."""
    target = or_404(people.person(membership_id))
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    wanted = set(request.form.getlist("permission"))
    return _commit_unless_refused(
        target,
        lambda: people.set_permissions(g.membership, target, wanted),
        lambda changed: (
            ngettext("%(num)d permission changed.", "%(num)d permissions changed.", len(changed))
            if changed
            else _("Nothing to change.")
        ),
    )


def _commit_unless_refused(target: Membership, change: Callable[[], T], said: Callable[[T], str]):
    """Run a change to a person; commit and say what it did, or roll back and show the refusal."""
    membership_id = target.id
    try:
        changed = change()
    except rules.Refused as refusal:
        db.session.rollback()
        return _person(people.person(membership_id), refusal.status, error=str(refusal))
    db.session.commit()
    return _changed_person(target, said(changed))


@bp.route("/<int:membership_id>/deactivate", methods=["GET", "POST"])
@requires("members.manage")
def deactivate(membership_id: int):
    """Switch a person's membership of this school off, once confirmed; access ends on their next request."""
    if not confirmations.confirmed():
        return confirmations.ask(confirmations.deactivate(or_404(people.person(membership_id))))
    return _status_change(membership_id, lifecycle.deactivate, _("Membership deactivated."))


@bp.route("/<int:membership_id>/reactivate", methods=["POST"])
@requires("members.manage")
def reactivate(membership_id: int):
    """Let a deactivated person back into the school."""
    return _status_change(membership_id, lifecycle.reactivate, _("Membership reactivated."))


def _status_change(membership_id: int, change, message: str):
    target = or_404(people.person(membership_id))
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    try:
        changed = change(g.membership, target)
    except rules.Refused as refusal:
        db.session.rollback()
        return _person(people.person(membership_id), refusal.status, error=str(refusal))
    db.session.commit()
    return _changed_person(target, message if changed else _("Nothing to change."))
