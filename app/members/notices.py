"""Join-request emails to approvers: one per request, one a day while requests wait, or none.

Each approver (an approved member with ``members.approve``) chooses, per school, on the
approvals page (``Membership.join_notices``; default: one per request). The guarantee, while
requests wait someone with the permission hears of them at least daily, is kept twice:

- choosing "no emails" is refused unless another approver of the school still gets them (one
  per request or the digest): ``may_turn_off``;
- should nobody get them all the same (the others lost the permission, left or closed their
  account since), everyone who chose "no emails" gets the daily digest: ``effective_modes``.

The digest goes once a local day, from ``DIGEST_HOUR`` in the school's time zone, while at
least one request waits. It says how many wait and links to the queue: no names, no more than
the one-per-request email says.
"""

from __future__ import annotations

import logging
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload, selectinload

from app import jobs, tenancy
from app.extensions import db
from app.mail import queue_email
from app.models import JoinNotices, Membership, MembershipStatus, School, User
from app.models.base import utcnow
from app.permissions import effective_permissions
from app.urls import external_url

log = logging.getLogger(__name__)

DIGEST_HOUR = 7  # local time: before the school day, read with the morning's mail
DIGEST_EVERY_SECONDS = 15 * 60  # how often the worker looks; each approver gets one a day


def approver_memberships(school_id: int) -> list[Membership]:
    """The approved memberships of active accounts in this school that may approve newcomers."""
    with tenancy.bound(school_id):
        members = db.session.scalars(
            select(Membership)
            .options(joinedload(Membership.user), selectinload(Membership.permission_changes))
            .where(Membership.status == MembershipStatus.APPROVED)
            .order_by(Membership.id)
        ).all()
    return [m for m in members if m.user.active and "members.approve" in effective_permissions(m)]


def effective_modes(approvers: list[Membership]) -> dict[int, JoinNotices]:
    """Each approver's mode by membership id; if every one chose "off", all get the digest."""
    modes = {m.id: m.join_notices for m in approvers}
    if modes and all(mode is JoinNotices.OFF for mode in modes.values()):
        return dict.fromkeys(modes, JoinNotices.DIGEST)
    return modes


def may_turn_off(membership: Membership) -> bool:
    """True if another approver of the school still hears of requests (each, or the digest)."""
    others = [m for m in approver_memberships(membership.school_id) if m.id != membership.id]
    return any(m.join_notices is not JoinNotices.OFF for m in others)


def immediate_recipients(school_id: int) -> list[User]:
    """The approvers who get an email for each request."""
    approvers = approver_memberships(school_id)
    modes = effective_modes(approvers)
    return [m.user for m in approvers if modes[m.id] is JoinNotices.IMMEDIATE]


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def digest_due_since(school: School, now: datetime) -> datetime | None:
    """Today's DIGEST_HOUR on the school's clock (in UTC) if it has passed, else None."""
    local = now.astimezone(_zone(school.timezone))
    start = datetime.combine(local.date(), time(DIGEST_HOUR), tzinfo=local.tzinfo)
    if local < start:
        return None
    return start.astimezone(now.tzinfo)


@jobs.job
@jobs.repeating
def send_join_digests() -> dict:
    """Queue today's digest to each approver due one, in every school where requests wait."""
    now = utcnow()
    with tenancy.unscoped():  # every school's queue; each digest is written under its school
        waiting = dict(
            db.session.execute(
                select(Membership.school_id, func.count(Membership.id))
                .where(Membership.status == MembershipStatus.PENDING)
                .group_by(Membership.school_id)
            ).all()
        )
        # Only a member who chose the digest or "no emails" can be due one (those who chose
        # "no emails" get it only when nobody else would hear): the others are never loaded.
        choosers = (
            db.session.execute(
                select(Membership.school_id, Membership.join_digest_sent_at).where(
                    Membership.school_id.in_(waiting),
                    Membership.status == MembershipStatus.APPROVED,
                    Membership.join_notices != JoinNotices.IMMEDIATE,
                )
            ).all()
            if waiting
            else []
        )
        candidates = {row.school_id for row in choosers}
        schools = (
            list(db.session.scalars(select(School).where(School.id.in_(candidates)))) if candidates else []
        )
    last_sent: dict[int, list[datetime | None]] = {}
    for row in choosers:
        last_sent.setdefault(row.school_id, []).append(row.join_digest_sent_at)
    sent = 0
    for school in schools:
        due_since = digest_due_since(school, now)
        if due_since is None or all(at is not None and at >= due_since for at in last_sent[school.id]):
            continue
        approvers = approver_memberships(school.id)
        modes = effective_modes(approvers)
        due = [
            m
            for m in approvers
            if modes[m.id] is JoinNotices.DIGEST
            and (m.join_digest_sent_at is None or m.join_digest_sent_at < due_since)
        ]
        if not due:
            continue
        with tenancy.bound(school.id):
            for membership in due:
                queue_email(
                    "join_requests_digest",
                    [membership.user],
                    school_id=school.id,
                    school_name=school.name,
                    count=waiting[school.id],
                    queue_url=external_url("members.pending"),
                )
                membership.join_digest_sent_at = now
                sent += 1
            db.session.flush()
    db.session.commit()
    log.info("join-request digests queued: %d", sent)
    return {"digests": sent}
