"""Closing one's own account, with the objection it carries, and acknowledging a notice."""

from __future__ import annotations

from sqlalchemy import select

from app import audit, tenancy
from app.auth.services import LIVE_STATUSES, deactivate_account
from app.consent import ledger, policy
from app.extensions import db
from app.models import User
from app.models.consent import ConsentKind, PolicyVersion


def close_account(user: User) -> list[PolicyVersion]:
    """Deactivate: no sign-in, no sessions, no email, out of every directory; the school keeps the data.

    Records "objected" for each material version not yet in force for the person, then
    "deactivated", and tells each of their schools' audit logs. Returns the objections.
    """
    objections = ledger.objections_due(user)
    # Sessions are ended on their own connection first (SQLite has one writer at a time).
    deactivate_account(user)
    for version in objections:
        ledger.record(user.id, ConsentKind.OBJECTED, version.id)
    current = policy.version_for_user(user)
    ledger.record(user.id, ConsentKind.DEACTIVATED, current.id if current else None)
    for membership in tenancy.memberships_of(user.id, LIVE_STATUSES):
        with tenancy.bound(membership.school_id):
            audit.record("account.closed", target=user.name, school_id=membership.school_id)
            db.session.flush()
    return objections


def acknowledge(user: User, number: int) -> bool:
    """The person read the notice of a posted version: the banner goes away for them."""
    version = db.session.scalar(
        select(PolicyVersion).where(PolicyVersion.number == number, PolicyVersion.posted_at.is_not(None))
    )
    if version is None:
        return False
    ledger.record(user.id, ConsentKind.ACKNOWLEDGED, version.id)
    return True
