"""The school's people as settings shows them, and their single permissions.

Role and status changes are the membership lifecycle (app/members/lifecycle.py); the rules
about who may change whom are in app/members/rules.py. Services flush and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload

from app import audit, permissions
from app.extensions import db
from app.members import rules
from app.models import (
    Membership,
    MembershipStatus,
    PermissionChange,
    Role,
)

PEOPLE_PAGE = 50


def people(search: str = "", limit: int = PEOPLE_PAGE, offset: int = 0) -> list[Membership]:
    """Members of the school (not those still waiting or refused), matching a name or email.

    Reads the kept ``Membership.search_text`` and ``sort_name`` (app/models/listings.py): the
    school's members are walked in name order on one index, up to the page, without reading
    the host's accounts; the page's accounts are then loaded by id.
    """
    query = (
        select(Membership)
        .where(Membership.status.in_((MembershipStatus.APPROVED, MembershipStatus.DEACTIVATED)))
        .options(selectinload(Membership.user))
        .order_by(Membership.sort_name, Membership.id)
        .limit(limit)
        .offset(offset)
    )
    term = " ".join(search.split()).lower()  # no line break: it separates name from email
    if term:
        like = f"%{term.replace('%', '').replace('_', '')}%"
        query = query.where(Membership.search_text.like(like))
    return list(db.session.scalars(query))


def person(membership_id: int) -> Membership | None:
    """A member of the current school (None for another school's id or a pending request)."""
    return db.session.scalar(
        select(Membership)
        .options(joinedload(Membership.user), selectinload(Membership.permission_changes))
        .where(
            Membership.id == membership_id,
            Membership.status.in_((MembershipStatus.APPROVED, MembershipStatus.DEACTIVATED)),
        )
    )


@dataclass(frozen=True)
class PermissionRow:
    """One catalogue entry as the person page shows it."""

    key: str
    label: str
    by_role: bool  # the role's default
    effective: bool  # what the person has now
    change: bool | None  # True granted, False revoked, None the role's default
    actor_has: bool  # may the actor touch it at all


def permission_rows(actor_permissions: frozenset[str], target: Membership) -> dict[str, list[PermissionRow]]:
    """The catalogue grouped by module, with the role's defaults and the person's effective set."""
    defaults = role_defaults(target)
    # A deactivated person is shown what they would have back: the form saves against the same set.
    effective = permissions.permissions_with_role(target)
    changes = {c.permission: c.granted for c in target.permission_changes}
    return {
        module: [
            PermissionRow(
                p.key,
                p.label,
                p.key in defaults,
                p.key in effective,
                changes.get(p.key),
                p.key in actor_permissions,
            )
            for p in entries
        ]
        for module, entries in permissions.modules().items()
    }


def role_defaults(target: Membership) -> frozenset[str]:
    """What the person's role gives them in this school, before single changes."""
    return permissions.defaults_of_role(target.role, target.school.approval_role)


def set_permissions(actor: Membership, target: Membership, wanted: set[str]) -> list[str]:
    """Make the person's effective permissions ``wanted``, as grants and revocations on the role.

    Only on someone whose role is not above the actor's. Permissions the actor does not hold
    are left as they are, and asking to give one is refused (nobody raises anyone beyond their
    own rights). Returns the keys that changed.
    """
    rules.check_may_change(actor, target)
    actor_permissions = permissions.effective_permissions(actor)
    wanted = wanted & set(permissions.BY_KEY)
    if target.role is Role.SUPERADMIN and not wanted >= rules.KEPT_BY_SUPERADMINS:
        raise rules.Refused(_("A SuperAdmin always keeps managing people and their permissions."), 422)
    current = permissions.permissions_with_role(target)
    raising = (wanted - current) - actor_permissions
    if raising:
        labels = ", ".join(str(permissions.BY_KEY[key].label) for key in sorted(raising))
        raise rules.Refused(
            _("You can only give permissions you have yourself (not: %(labels)s).", labels=labels)
        )
    defaults = role_defaults(target)
    existing = {c.permission: c for c in target.permission_changes}
    changed = []
    for key in sorted(actor_permissions & set(permissions.BY_KEY)):
        want = key in wanted
        if want == (key in current):
            continue
        change = existing.get(key)
        if want == (key in defaults):
            if change is not None:
                target.permission_changes.remove(change)  # back to the role's default
        elif change is not None:
            change.granted = want
        else:
            target.permission_changes.append(PermissionChange(permission=key, granted=want))
        changed.append(key)
        audit.record(
            "member.permission_changed",
            target=target.user.name,
            permission=key,
            granted=want,
        )
    return changed
