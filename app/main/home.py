"""What a member's home page shows besides the feed: next events, things to do, and queues.

Every number here is a bounded query (``LIMIT cap + 1``, shown as "20+") or a short list, so
the page runs the same statements for a school of 50 families and one of 20,000.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.calendar import services as calendar
from app.classes import families
from app.main import feed
from app.members import services as members
from app.messages import services as messages
from app.permissions import can

EVENTS_SHOWN = 5
REQUESTS_SHOWN = 5
QUEUE_CAP = 20  # a queue's count stops there: "20+"
FAILED_WINDOW = 20  # failed deliveries are looked for among the latest 20 messages


@dataclass(frozen=True)
class Count:
    """A bounded count: ``number`` and whether more lie beyond it."""

    number: int
    more: bool

    @classmethod
    def of(cls, counted: tuple[int, bool]) -> Count:
        return cls(*counted)

    def __bool__(self) -> bool:
        return self.number > 0


@dataclass
class ThingsToDo:
    """What waits for this member: unread news, their children's class changes, family requests."""

    unread: Count
    my_requests: list[Any]  # EnrollmentChange rows still waiting, with child and classes loaded
    guardians_waiting: Count
    signups: list[Any] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.unread or self.my_requests or self.guardians_waiting or self.signups)


@dataclass
class Queues:
    """The queues a staff member or room parent acts on (None: they may not act on that queue)."""

    approvals: Count | None = None
    class_changes: Count | None = None
    scheduled: Count | None = None
    failed: int | None = None

    @property
    def any(self) -> bool:
        return any(q is not None for q in (self.approvals, self.class_changes, self.scheduled, self.failed))


def open_signups(reader: feed.Reader) -> list[Any]:
    """HOOK for issue 16 (sign-up sheets): the sign-ups open to this reader. None exist yet."""
    return []


def things_to_do(reader: feed.Reader) -> ThingsToDo:
    """This member's to-do list (there is no "confirm your details" step in the app to remind of)."""
    return ThingsToDo(
        unread=Count.of(feed.unread_count(reader)),
        my_requests=families.my_waiting_requests(reader.membership_id, REQUESTS_SHOWN),
        guardians_waiting=Count.of(families.guardians_waiting_count(reader.membership_id, QUEUE_CAP)),
        signups=open_signups(reader),
    )


def queues() -> Queues:
    """Only the queues the member's permissions let them act on."""
    found = Queues()
    if can("members.approve"):
        found.approvals = Count.of(members.waiting_count(QUEUE_CAP))
        found.class_changes = Count.of(families.waiting_changes_count(QUEUE_CAP))
    if messages.may_send_any():
        found.scheduled = Count.of(messages.scheduled_count(QUEUE_CAP))
        found.failed = messages.failed_among_latest(FAILED_WINDOW)
    return found


def next_events(reader: feed.Reader, now: datetime) -> list[Any]:
    """The next few events of the school and the reader's classes (the calendar's own rule)."""
    audience = calendar.Audience(reader.class_ids, any(can(p) for p in calendar.EVERY_CLASS))
    return calendar.upcoming(audience, now, limit=EVENTS_SHOWN)
