"""The school's settings, its people's roles and permissions, support grants and the audit log.

Services flush and never commit; the route commits once. Every change writes the audit log.
Role and status changes are the membership lifecycle (app/members/lifecycle.py); the rules
about people are in app/members/rules.py.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo, available_timezones

from flask import g
from sqlalchemy import func, or_, select
from sqlalchemy.orm import joinedload, selectinload

from app import audit, clock, permissions
from app.extensions import db
from app.members import lifecycle, rules
from app.models import (
    Membership,
    MembershipStatus,
    PermissionChange,
    Role,
    School,
    User,
    Visibility,
)
from app.models.audit import AuditEntry
from app.models.base import utcnow
from app.models.support import DeletionState, SupportGrant, SupportKind, SupportRequest

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
MIN_GRANT_HOURS, MAX_GRANT_HOURS = 1, 168
AUDIT_PAGE_SIZE = 50
SIGN_IN = "auth.signed_in"


# -- school profile, invitation code, joining rules ----------------------------------------


def time_zones() -> list[str]:
    """Every IANA time zone name, sorted, for the time zone field."""
    return sorted(available_timezones())


def is_time_zone(name: str) -> bool:
    """Is this a time zone zoneinfo knows?"""
    if name not in available_timezones():
        return False
    try:
        ZoneInfo(name)
    except (ValueError, KeyError):
        return False
    return True


def _changed(school: School, **values) -> dict:
    """Set the values that differ and return them as {field: [old, new]} for the audit log."""
    changes = {}
    for name, value in values.items():
        old = getattr(school, name)
        if old != value:
            changes[name] = [str(old), str(value)]
            setattr(school, name, value)
    return changes


def update_profile(school: School, *, name: str, timezone: str) -> bool:
    """Rename the school and set its time zone; audited when anything changed."""
    changes = _changed(school, name=name.strip(), timezone=timezone)
    if changes:
        audit.record("settings.changed", target="School profile", changes=changes)
    return bool(changes)


def update_joining_rules(
    school: School, *, families_edit_own: bool, default_visibility: Visibility, approval_role: Role
) -> bool:
    """Who edits families, guardians' default visibility, and who approves newcomers."""
    changes = _changed(
        school,
        families_edit_own=families_edit_own,
        default_visibility=Visibility(default_visibility),
        approval_role=Role(approval_role),
    )
    if changes:
        audit.record("settings.changed", target="Joining rules", changes=changes)
    return bool(changes)


def new_invite_code() -> str:
    """A fresh code such as ``K7QM-2XPD`` that no school has (typed by hand: no 0/O or 1/I)."""
    while True:
        code = "-".join("".join(secrets.choice(CODE_ALPHABET) for _ in range(4)) for _ in range(2))
        if db.session.scalar(select(School.id).where(School.invite_code == code)) is None:
            return code


def rotate_invite_code(school: School) -> str:
    """Replace (or switch on) the invitation code; the old one stops working at once."""
    school.invite_code = new_invite_code()
    audit.record("invite_code.rotated", target="Invitation code")
    return school.invite_code


def switch_off_invite_code(school: School) -> None:
    """Nobody can ask to join with a code until a new one is made."""
    if school.invite_code is not None:
        school.invite_code = None
        audit.record("invite_code.switched_off", target="Invitation code")


# -- people ------------------------------------------------------------------------------


PEOPLE_PAGE = 50


def people(search: str = "", limit: int = PEOPLE_PAGE, offset: int = 0) -> list[Membership]:
    """Members of the school (not those still waiting or refused), matching a name or email."""
    query = (
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .options(joinedload(Membership.user))
        .where(Membership.status.in_((MembershipStatus.APPROVED, MembershipStatus.DEACTIVATED)))
        .order_by(User.name, Membership.id)
        .limit(limit)
        .offset(offset)
    )
    term = search.strip().lower()
    if term:
        like = f"%{term.replace('%', '').replace('_', '')}%"
        query = query.where(or_(func.lower(User.name).like(like), func.lower(User.email).like(like)))
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
        raise rules.Refused("A SuperAdmin always keeps managing people and their permissions.", 422)
    current = permissions.permissions_with_role(target)
    raising = (wanted - current) - actor_permissions
    if raising:
        labels = ", ".join(permissions.BY_KEY[key].label for key in sorted(raising))
        raise rules.Refused(f"You can only give permissions you have yourself (not: {labels}).")
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


# -- support access ----------------------------------------------------------------------


def grants() -> tuple[list[SupportGrant], list[SupportGrant]]:
    """The school's grants: (active, past), newest first."""
    rows = db.session.scalars(
        select(SupportGrant)
        .options(joinedload(SupportGrant.granted_by), joinedload(SupportGrant.revoked_by))
        .order_by(SupportGrant.created_at.desc(), SupportGrant.id.desc())
        .limit(100)
    ).all()
    now = utcnow()
    return [r for r in rows if r.is_active(now)], [r for r in rows if not r.is_active(now)]


def grant_support(hours: int, *, support_request: SupportRequest | None = None) -> SupportGrant:
    """Let platform support read this school's data for ``hours`` (1 to 168), from now."""
    if not MIN_GRANT_HOURS <= hours <= MAX_GRANT_HOURS:
        raise rules.Refused(f"Choose between {MIN_GRANT_HOURS} and {MAX_GRANT_HOURS} hours.")
    now = utcnow()
    grant = SupportGrant(
        granted_by_id=g.membership.user_id,
        starts_at=now,
        expires_at=now + timedelta(hours=hours),
        support_request_id=support_request.id if support_request is not None else None,
    )
    db.session.add(grant)
    db.session.flush()
    audit.record(
        "support.granted",
        target=support_request.reference if support_request is not None else f"{hours} hours",
        hours=hours,
        grant=grant.id,
    )
    return grant


def get_grant(grant_id: int) -> SupportGrant | None:
    """One of the school's grants (None for another school's id)."""
    return db.session.scalar(select(SupportGrant).where(SupportGrant.id == grant_id))


def revoke_grant(grant: SupportGrant) -> bool:
    """End a grant now; support's next request in the school is refused."""
    if not grant.is_active():
        return False
    grant.revoked_at = utcnow()
    grant.revoked_by_id = g.membership.user_id
    audit.record("support.revoked", target=f"Grant until {grant.expires_at:%d %b %H:%M} UTC", grant=grant.id)
    return True


# -- deletion requests -------------------------------------------------------------------


def deletion_requests() -> list[SupportRequest]:
    """The school's deletion requests that support has marked, and those already carried out."""
    return list(
        db.session.scalars(
            select(SupportRequest)
            .where(
                SupportRequest.school_id == g.school.id,
                SupportRequest.kind == SupportKind.DELETION,
                SupportRequest.deletion_state.is_not(None),
            )
            .order_by(SupportRequest.created_at.desc())
        )
    )


def confirm_deletion(support_request: SupportRequest) -> bool:
    """Second step: a school admin confirms a request support marked; it is carried out now.

    Carrying out means: the requester's membership in this school is deactivated and their
    directory details here (title, phone, address) are erased.
    """
    if support_request.deletion_state is not DeletionState.MARKED:
        return False
    if support_request.user_id is not None:
        membership = db.session.scalar(
            select(Membership).where(Membership.user_id == support_request.user_id)
        )
        if membership is not None:
            lifecycle.erase_and_deactivate(g.membership, membership)
    support_request.deletion_state = DeletionState.CARRIED_OUT
    support_request.deletion_confirmed_by_id = g.membership.user_id
    support_request.deletion_confirmed_at = utcnow()
    audit.record("support.deletion", target=support_request.reference)
    return True


def get_deletion_request(request_id: int) -> SupportRequest | None:
    """A deletion request of the current school."""
    return db.session.scalar(
        select(SupportRequest).where(
            SupportRequest.id == request_id,
            SupportRequest.school_id == g.school.id,
            SupportRequest.kind == SupportKind.DELETION,
        )
    )


# -- the audit log -----------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """What the log is narrowed to: one action, a range of days on the school's clock, and a page."""

    action: str | None = None
    since: date | None = None
    until: date | None = None
    before_id: int | None = None  # keyset paging: entries older than this one


@dataclass
class AuditPage:
    """One page of entries, the sign-ins counted per day, and the next page's key."""

    entries: list[AuditEntry]
    sign_ins: list[tuple[str, int]]
    next_before_id: int | None


def _range(query, column, audit_filter: AuditFilter):
    """Entries from the start of ``since`` to the end of ``until``, days on the school's clock."""
    zone = clock.school_zone()
    if audit_filter.since:
        query = query.where(column >= clock.start_of_day(audit_filter.since, zone))
    if audit_filter.until:
        query = query.where(column < clock.start_of_day(audit_filter.until + timedelta(days=1), zone))
    return query


def audit_page(audit_filter: AuditFilter, page_size: int = AUDIT_PAGE_SIZE) -> AuditPage:
    """Entries newest first (sign-ins left out of the list), in two queries whatever the size."""
    query = select(AuditEntry).options(joinedload(AuditEntry.actor)).where(AuditEntry.action != SIGN_IN)
    if audit_filter.action:
        query = query.where(AuditEntry.action == audit_filter.action)
    if audit_filter.before_id:
        query = query.where(AuditEntry.id < audit_filter.before_id)
    query = _range(query, AuditEntry.created_at, audit_filter)
    rows = list(db.session.scalars(query.order_by(AuditEntry.id.desc()).limit(page_size + 1)))
    more = len(rows) > page_size
    rows = rows[:page_size]
    sign_ins: list[tuple[str, int]] = []
    if audit_filter.action in (None, SIGN_IN) and not audit_filter.before_id:
        sign_ins = sign_ins_per_day(audit_filter)
    return AuditPage(rows, sign_ins, rows[-1].id if more else None)


def sign_ins_per_day(audit_filter: AuditFilter) -> list[tuple[str, int]]:
    """How many sign-ins there were each day on the school's clock, newest first: counts, never names."""
    day = clock.local_date(AuditEntry.created_at, clock.school_zone())
    query = select(day, func.count(AuditEntry.id)).where(AuditEntry.action == SIGN_IN)
    query = _range(query, AuditEntry.created_at, audit_filter)
    rows = db.session.execute(query.group_by(day).order_by(day.desc()).limit(60)).all()
    return [(str(d), n) for d, n in rows]


def actions() -> dict[str, str]:
    """Every action the log knows, with its words."""
    return dict(audit.ACTIONS)
