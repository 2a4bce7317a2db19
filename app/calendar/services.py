"""Events and feeds: who sees which event, who may change it, and each person's secret feed.

A school event (no class) is for every approved member; a class event is for the families
and helpers of that class, and for people whose permissions reach every class's events.
Services flush and never commit; the route commits once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import g
from sqlalchemy import delete, or_, select, true
from sqlalchemy.orm import joinedload, selectinload

from app import audit, tenancy
from app.directory.visibility import classes_of
from app.extensions import db
from app.models import Membership, SchoolClass, User, listed_membership
from app.models.base import utcnow
from app.models.calendar import CalendarFeed, Event
from app.permissions import can, effective_permissions

# Whoever may edit or delete any event, or manages classes, sees every class's events.
EVERY_CLASS = frozenset({"events.edit_any", "events.delete_any", "classes.manage"})
PAGE_LIMIT = 200
MONTH_LIMIT = 500  # events drawn in one month grid (a school has far fewer)
FEED_PAST_DAYS = 90


def to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock time typed in the school's zone, as an aware UTC datetime.

    Near datetime's limits (years 1 and 9999) the shift overflows: the event form keeps times
    within forms.EARLIEST and forms.LATEST so it never gets here with one.
    """
    return local.replace(tzinfo=zone).astimezone(UTC)


def to_local(moment: datetime, zone: ZoneInfo) -> datetime:
    """A stored UTC time on the school's wall clock."""
    return moment.astimezone(zone)


@dataclass(frozen=True)
class Audience:
    """Which events a person may see: school events, and these classes' (or every class's)."""

    class_ids: frozenset[int]
    every_class: bool


def audience_of(membership_id: int, permissions: frozenset[str]) -> Audience:
    """The person's classes (children and helping) in one query, or every class."""
    return Audience(classes_of(membership_id), bool(EVERY_CLASS & permissions))


def current_audience() -> Audience:
    """The signed-in member as an audience of events."""
    return audience_of(g.membership.id, frozenset(p for p in EVERY_CLASS if can(p)))


def _visible(audience: Audience):
    if audience.every_class:
        return true()
    return or_(Event.class_id.is_(None), Event.class_id.in_(list(audience.class_ids)))


def upcoming(audience: Audience, since: datetime, limit: int = PAGE_LIMIT) -> list[Event]:
    """Events this audience may see, ending after ``since``, soonest first, in one query."""
    query = (
        select(Event)
        .options(joinedload(Event.school_class))
        .where(_visible(audience), Event.ends_at >= since)
        .order_by(Event.starts_at, Event.id)
        .limit(limit)
    )
    return list(db.session.scalars(query))


def between(audience: Audience, start: datetime, end: datetime, limit: int = MONTH_LIMIT) -> list[Event]:
    """Events this audience may see that overlap [start, end), soonest first, in one bounded query.

    Served by ix_event_school_ends_starts (school_id, ends_at, starts_at): the school's events
    ending after ``start``, their start checked in the index; never the school's whole history.
    """
    query = (
        select(Event)
        .options(joinedload(Event.school_class))
        .where(_visible(audience), Event.ends_at > start, Event.starts_at < end)
        .order_by(Event.starts_at, Event.id)
        .limit(limit)
    )
    return list(db.session.scalars(query))


def visible_event(event_id: int, audience: Audience) -> Event | None:
    """One event of the current school this audience may see (None otherwise)."""
    return db.session.scalar(select(Event).where(Event.id == event_id, _visible(audience)))


def class_choices(audience: Audience, also: int | None = None) -> list[SchoolClass]:
    """Classes a person may put an event in: their own, or every class if they see every class."""
    query = select(SchoolClass).order_by(SchoolClass.grade, SchoolClass.name)
    if not audience.every_class:
        wanted = set(audience.class_ids) | ({also} if also else set())
        query = query.where(SchoolClass.id.in_(list(wanted)))
    return list(db.session.scalars(query))


def may_edit(event: Event) -> bool:
    """events.edit_any, or events.edit_own for the event's creator."""
    return can("events.edit_any") or (can("events.edit_own") and event.created_by_id == g.membership.id)


def may_delete(event: Event) -> bool:
    """events.delete_any, or events.delete_own for the event's creator."""
    return can("events.delete_any") or (can("events.delete_own") and event.created_by_id == g.membership.id)


def save_event(event: Event | None, *, title, starts_at, ends_at, location, description, class_id) -> Event:
    """Create or change an event (times already in UTC), audited."""
    created = event is None
    if event is None:
        event = Event(created_by_id=g.membership.id)
        db.session.add(event)
    event.title = title.strip()
    event.starts_at, event.ends_at = starts_at, ends_at
    event.location = (location or "").strip() or None
    event.description = (description or "").strip() or None
    event.class_id = class_id
    event.updated_at = utcnow()
    db.session.flush()
    audit.record("event.created" if created else "event.changed", target=event.title)
    return event


def delete_event(event: Event) -> None:
    """Delete an event, audited."""
    title = event.title
    db.session.execute(delete(Event).where(Event.id == event.id))
    db.session.expunge(event)
    audit.record("event.deleted", target=title)


# --- the personal feed ------------------------------------------------------------------------


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def has_feed(membership_id: int) -> bool:
    """Does this member have a feed address?"""
    return (
        db.session.scalar(select(CalendarFeed.id).where(CalendarFeed.membership_id == membership_id))
        is not None
    )


def new_feed(membership_id: int) -> str:
    """A new secret feed token for this member (the old address stops working); only its hash is kept."""
    token = secrets.token_urlsafe(32)
    feed = db.session.scalar(select(CalendarFeed).where(CalendarFeed.membership_id == membership_id))
    if feed is None:
        feed = CalendarFeed(membership_id=membership_id)
        db.session.add(feed)
    feed.token_hash = _hash(token)
    feed.created_at = utcnow()
    db.session.flush()
    audit.record("calendar_feed.rotated")
    return token


def revoke_feed(membership_id: int) -> None:
    """Switch the member's feed address off."""
    db.session.execute(delete(CalendarFeed).where(CalendarFeed.membership_id == membership_id))


@dataclass
class Feed:
    school_name: str
    zone: str
    events: list[Event]


def feed_for_token(token: str) -> Feed | None:
    """The events a feed token's owner may see now (None for an unknown token or a member no longer in).

    Public on purpose (calendar apps send no cookie): the token is looked up across schools,
    then everything else is read bound to the token's school, as its owner would see it.
    """
    if not token or len(token) > 100:
        return None
    with tenancy.unscoped():
        feed = db.session.scalar(select(CalendarFeed).where(CalendarFeed.token_hash == _hash(token)))
    if feed is None:
        return None
    with tenancy.bound(feed.school_id):
        owner = db.session.scalar(
            select(Membership)
            .join(User, User.id == Membership.user_id)
            .options(joinedload(Membership.school), selectinload(Membership.permission_changes))
            .where(
                Membership.id == feed.membership_id,
                listed_membership(),
            )
        )
        if owner is None:
            return None
        audience = audience_of(owner.id, effective_permissions(owner))
        since = utcnow() - timedelta(days=FEED_PAST_DAYS)
        return Feed(owner.school.name, owner.school.timezone, upcoming(audience, since, limit=1000))
