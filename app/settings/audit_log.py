"""The audit log as the school reads it: entries newest first, sign-ins counted per day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from app import audit, clock
from app.extensions import db
from app.models.audit import AuditEntry
from app.models.base import utcnow
from app.models.counts import SignInCount

AUDIT_PAGE_SIZE = 50
SIGN_IN = "auth.signed_in"
# The sign-ins box counts this many days (up to the filter's last day, or today): a bounded
# range of the (school_id, action, created_at) index, not the school's whole history.
SIGN_IN_DAYS = 60


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
    """How many sign-ins there were each day on the school's clock, newest first: counts, never names.

    At most ``SIGN_IN_DAYS`` days, ending with the filter's last day (today without one).
    Read from the kept per-day counts (``SignInCount``, added to at each sign-in): a school of
    20,000 families has 20,000 sign-in entries a month, which this box would otherwise count on
    every view.
    """
    zone = clock.school_zone()
    last = audit_filter.until or utcnow().astimezone(zone).date()
    first = last - timedelta(days=SIGN_IN_DAYS - 1)
    if audit_filter.since is not None and audit_filter.since > first:
        first = audit_filter.since
    query = (
        select(SignInCount.day, SignInCount.count)
        .where(SignInCount.day >= first, SignInCount.day <= last, SignInCount.count > 0)
        .order_by(SignInCount.day.desc())
    )
    return [(str(d), n) for d, n in db.session.execute(query)]


def actions() -> dict[str, Any]:
    """Every action the log knows, with its words."""
    return dict(audit.ACTIONS)
