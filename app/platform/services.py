"""What the support console reads across schools, on purpose (``tenancy.unscoped()``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask_login import current_user
from sqlalchemy import select

from app import audit, tenancy
from app.extensions import db
from app.models import School
from app.models.base import utcnow
from app.models.support import DeletionState, SupportGrant, SupportKind, SupportRequest

CONSOLE_LIMIT = 200


@dataclass(frozen=True)
class SchoolAccess:
    """A school in the console: its name and, if it has one, when its active grant ends."""

    school_id: int
    name: str
    grant_until: datetime | None


def recent_requests(limit: int = CONSOLE_LIMIT) -> list[tuple[SupportRequest, str | None]]:
    """Support requests of every school (and the public form), newest first, with the school's name."""
    with tenancy.unscoped():
        rows = db.session.execute(
            select(SupportRequest, School.name)
            .outerjoin(School, School.id == SupportRequest.school_id)
            .order_by(SupportRequest.created_at.desc(), SupportRequest.id.desc())
            .limit(limit)
        ).all()
    return [(request, name) for request, name in rows]


def active_grants_by_school() -> dict[int, datetime]:
    """When each school's latest active grant ends (reads every school's grants on purpose)."""
    now = utcnow()
    with tenancy.unscoped():
        grants = db.session.scalars(
            select(SupportGrant).where(
                SupportGrant.revoked_at.is_(None),
                SupportGrant.starts_at <= now,
                SupportGrant.expires_at > now,
            )
        ).all()
    ends: dict[int, datetime] = {}
    for grant in grants:
        ends[grant.school_id] = max(grant.expires_at, ends.get(grant.school_id, grant.expires_at))
    return ends


def schools_in_view(requests: list[tuple[SupportRequest, str | None]]) -> list[SchoolAccess]:
    """Schools that asked for help or granted access, with their grant (one query each kind)."""
    ends = active_grants_by_school()
    ids = {r.school_id for r, _ in requests if r.school_id is not None} | set(ends)
    if not ids:
        return []
    schools = db.session.execute(
        select(School.id, School.name).where(School.id.in_(ids)).order_by(School.name)
    )
    return [SchoolAccess(school_id, name, ends.get(school_id)) for school_id, name in schools]


def get_request(request_id: int) -> SupportRequest | None:
    """Any support request (the console is cross-school by design)."""
    with tenancy.unscoped():
        return db.session.get(SupportRequest, request_id)


def mark_deletion(support_request: SupportRequest) -> bool:
    """First step: support marks a deletion request; the school's admin then confirms it."""
    if support_request.kind is not SupportKind.DELETION or support_request.school_id is None:
        return False
    if support_request.deletion_state is not None:
        return False
    support_request.deletion_state = DeletionState.MARKED
    support_request.deletion_marked_by_id = current_user.id
    support_request.deletion_marked_at = utcnow()
    with tenancy.bound(support_request.school_id):
        audit.record("support.deletion_marked", target=support_request.reference)
        db.session.flush()
    return True
