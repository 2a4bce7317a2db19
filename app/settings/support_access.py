"""Support access the school grants, and the deletion requests support marked for it.

Services flush and never commit; the route commits once. Every change writes the audit log.
"""

from __future__ import annotations

from datetime import timedelta

from flask import g
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from app import audit
from app.extensions import db
from app.members import lifecycle, rules
from app.models import (
    Membership,
)
from app.models.base import utcnow
from app.models.support import DeletionState, SupportGrant, SupportKind, SupportRequest

MIN_GRANT_HOURS, MAX_GRANT_HOURS = 1, 168


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
        raise rules.Refused(
            _("Choose between %(low)s and %(high)s hours.", low=MIN_GRANT_HOURS, high=MAX_GRANT_HOURS)
        )
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
