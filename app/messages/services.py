"""Announcements and newsletters: who may send what to whom, safe HTML from Markdown, and counts.

Recipients come from one query whatever the size of the school or class, and the delivery
counts of any number of messages from one grouped query. Messages are not school-scoped
rows (the outbox also carries platform mail), so every read here names the current school.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import markdown
import nh3
from flask import current_app, g
from flask_babel import gettext as _
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import Select, and_, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app import audit, clock, paging
from app.extensions import db
from app.i18n import formatting
from app.lazytext import lazy_gettext as _l
from app.mail import queue_email
from app.models import (
    Category,
    ClassHelper,
    DeliveryStatus,
    Enrollment,
    Guardian,
    MailDelivery,
    MailMessage,
    Membership,
    SchoolClass,
    Student,
    User,
    listed_membership,
)
from app.models.base import rowcount, utcnow
from app.models.counts import SettledCounts
from app.models.messaging import CLASS_COMMUNITY, EVERYONE_AT, audience_text, delivery_reason_text
from app.permissions import can

TEMPLATE = "announcement"
MAX_AHEAD = timedelta(days=90)
LIST_LIMIT = 100


@dataclass(frozen=True)
class Kind:
    """What a message is: its email category and the permission that sends it."""

    key: str
    label: Any  # lazy gettext: translated where it is shown
    category: Category
    permission: str


KINDS: dict[str, Kind] = {
    kind.key: kind
    for kind in (
        Kind("school", _l("School announcement"), Category.SCHOOL_ANNOUNCEMENTS, "messages.school"),
        Kind("newsletter", _l("Newsletter"), Category.NEWSLETTERS, "messages.newsletter"),
        Kind("class", _l("Class announcement"), Category.CLASS_ANNOUNCEMENTS, "messages.class"),
    )
}
KIND_OF_CATEGORY: dict[Category, Kind] = {kind.category: kind for kind in KINDS.values()}


# --- who may send ---------------------------------------------------------------------------


def may_send_any() -> bool:
    """Holds at least one of the three sending permissions (the list and message pages)."""
    return any(can(kind.permission) for kind in KINDS.values())


def allowed_kinds() -> list[Kind]:
    """The kinds of message the current member may write, in menu order."""
    return [kind for kind in KINDS.values() if can(kind.permission)]


def _helped_class_ids() -> Select:
    """Ids of the classes the current member teaches or is a room parent of."""
    return select(ClassHelper.class_id).where(
        ClassHelper.membership_id == g.membership.id, ClassHelper.school_id == g.school.id
    )


def may_email_class(school_class: SchoolClass) -> bool:
    """messages.class, and a teacher or room parent of this class unless they may email the school."""
    if not can("messages.class"):
        return False
    if can("messages.school"):
        return True
    helping = select(ClassHelper.id).where(
        ClassHelper.class_id == school_class.id, ClassHelper.membership_id == g.membership.id
    )
    return db.session.scalar(helping.limit(1)) is not None


def classes_to_email() -> list[SchoolClass]:
    """Classes the current member may email: all of them with messages.school, else their own."""
    if not can("messages.class"):
        return []
    query = select(SchoolClass).order_by(SchoolClass.grade, SchoolClass.name)
    if not can("messages.school"):
        query = query.where(SchoolClass.id.in_(_helped_class_ids()))
    return list(db.session.scalars(query))


def get_class(class_id: int) -> SchoolClass | None:
    """A class of the current school (None for another school's id)."""
    return db.session.scalar(select(SchoolClass).where(SchoolClass.id == class_id))


# --- who receives ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    """The people a message goes to: the whole school, or one class's community."""

    kind: Kind
    label: str  # stored in English with the message (MailMessage.audience_label)
    school_class: SchoolClass | None = None

    @property
    def display_label(self) -> str:
        """The label in the reader's language ('Everyone at X')."""
        return audience_text(self.label)

    def memberships(self) -> Select:
        """Approved memberships of open accounts reached, each once (joined to their User).

        Membership is the statement's top-level entity, so tenancy scopes it (and the
        subqueries) to the current school; the class's own rows are of that school too.
        A closed account would only be skipped at send time, and "Sending to N people"
        would count it: it is left out here.
        """
        query = select(Membership).join(User, User.id == Membership.user_id).where(listed_membership())
        if self.school_class is None:
            return query
        class_id = self.school_class.id
        guardians = (
            select(Guardian.membership_id)
            .join(Student, Student.family_id == Guardian.family_id)
            .join(Enrollment, Enrollment.student_id == Student.id)
            .where(Enrollment.class_id == class_id)
        )
        helpers = select(ClassHelper.membership_id).where(ClassHelper.class_id == class_id)
        return query.where(Membership.id.in_(guardians.union(helpers)))


def audience_for(kind: Kind, school_class: SchoolClass | None = None) -> Audience:
    """The audience of a kind of message (a class announcement names its class)."""
    if kind.key == "class":
        if school_class is None:
            raise ValueError("a class announcement needs a class")
        label = CLASS_COMMUNITY + school_class.name  # stored in English; see audience_text
    else:
        label = EVERYONE_AT + g.school.name
        school_class = None
    return Audience(kind=kind, label=label[:200], school_class=school_class)


def recipient_rows(audience: Audience, school_id: int) -> Select:
    """(user id, email) of everyone the message reaches, for the outbox's INSERT ... SELECT.

    An INSERT ... SELECT is not scoped by tenancy (it scopes reads), so the statement names the
    school itself; the class's rows (its enrollments and helpers) are of that school already.
    """
    return (
        audience.memberships()
        .where(Membership.school_id == school_id)
        .with_only_columns(User.id, User.email)
        .order_by(None)
    )


def count_recipients(audience: Audience) -> int:
    """How many people the message reaches (one query)."""
    return db.session.scalar(audience.memberships().with_only_columns(func.count(Membership.id))) or 0


# --- Markdown to safe HTML ------------------------------------------------------------------

ALLOWED_TAGS = {"p", "br", "strong", "em", "ul", "ol", "li", "a", "h2", "h3", "blockquote"}
LINK_SCHEMES = ("http://", "https://", "mailto:")
_TOP_HEADING = re.compile(r"<(/?)h1\b", re.IGNORECASE)
_SMALL_HEADING = re.compile(r"<(/?)h[4-6]\b", re.IGNORECASE)


def _only_absolute_links(tag: str, attribute: str, value: str) -> str | None:
    """Keep a link only to http, https or mailto (no relative, javascript: or data: links)."""
    if tag == "a" and attribute == "href":
        return value if value.strip().lower().startswith(LINK_SCHEMES) else None
    return value


def render_markdown(source: str) -> Markup:
    """Markdown to HTML with only simple tags and safe links; anything else is dropped."""
    html = markdown.markdown(source or "", output_format="html")
    # An email's own heading is its subject: # becomes a section heading, #### and below sub-headings.
    html = _SMALL_HEADING.sub(r"<\1h3", _TOP_HEADING.sub(r"<\1h2", html))
    cleaned = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes={"a": {"href"}},
        attribute_filter=_only_absolute_links,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    )
    return Markup(cleaned)  # noqa: S704 - sanitised by nh3 just above


# --- times in the school's time zone --------------------------------------------------------


def local_time(moment: datetime | None) -> str:
    """A stored (UTC) time as the school reads it, in the reader's language and clock (12 or 24 h)."""
    if moment is None:
        return ""
    return formatting.moment(moment, clock.school_zone())


def local_input_value(moment: datetime) -> str:
    """A time in the school's zone as a datetime-local value."""
    return moment.astimezone(clock.school_zone()).strftime("%Y-%m-%dT%H:%M")


def schedule_time(local: datetime, zone: ZoneInfo) -> tuple[datetime | None, str | None]:
    """A wall-clock time typed in ``zone`` as UTC, or why it cannot be used."""
    aware = local.replace(tzinfo=zone)
    try:
        moment = aware.astimezone(UTC)
    except OverflowError:  # year 9999 west of UTC
        return None, _("Choose a time at most 90 days ahead.")
    if moment.astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        return None, _(
            "That time does not exist in %(zone)s (the clocks go forward). Choose another time.",
            zone=zone.key,
        )
    now = utcnow()
    if moment <= now:
        return None, _("Choose a time in the future, or leave this empty to send now.")
    if moment > now + MAX_AHEAD:
        return None, _("Choose a time at most 90 days ahead.")
    return moment, None


# --- writing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """What the sender sees before sending."""

    subject: str
    html: Markup
    count: int


def preview(audience: Audience, subject: str, body: str) -> Preview:
    """The sanitised body and how many people would get it."""
    return Preview(subject=subject, html=render_markdown(body), count=count_recipients(audience))


@dataclass(frozen=True)
class Sent:
    """A message written to the outbox, and how many people it goes to."""

    message: MailMessage
    people: int


def send(
    audience: Audience,
    *,
    subject: str,
    body: str,
    send_at: datetime | None,
    submission: str | None = None,
    language: str | None = None,
    sender: User | None = None,
) -> Sent | None:
    """Write the message and its deliveries, or have the worker write them (None: nobody to send to).

    ``sender``: who signs it (default: the person signed in; the demo seed names its teacher).

    ``queue_email`` renders the message and enqueues the send job for after the commit. Up to
    ``MESSAGE_INLINE_RECIPIENTS`` people, it copies them into deliveries here with one
    INSERT ... SELECT in the database (no account is loaded); a larger audience is left to the
    send job, which writes the same rows chunk by chunk first (app/messages/fanout.py): 300,000
    rows in the request would pass gunicorn's timeout. Scheduled, the send job finds the
    message not yet due and the sweeper enqueues it again once ``send_at`` has passed.
    """
    earlier = submitted(submission)
    if earlier is not None:
        return Sent(message=earlier, people=earlier.audience_size or 0)
    people = count_recipients(audience)
    if not people:
        return None
    author = sender if sender is not None else current_user
    inline = people <= current_app.config["MESSAGE_INLINE_RECIPIENTS"]
    message = queue_email(
        TEMPLATE,
        recipient_rows(audience, g.school.id) if inline else [],
        category=audience.kind.category,
        school_id=g.school.id,
        created_by_id=author.id,
        subject=subject,
        body=body,
        body_html=render_markdown(body),
        school_name=g.school.name,
        sender_name=author.name,
        audience_label=audience.label,
        language=language,  # the compose form's "Written in": what a translation starts from
    )
    message.audience_label = audience.label
    message.class_id = audience.school_class.id if audience.school_class is not None else None
    message.source_markdown = body
    message.scheduled_for = send_at
    message.audience_size = people
    message.fanout_after = None if inline else 0
    message.submission_key = submission
    return Sent(message=message, people=people)


def submission_fingerprint(
    key: str | None, audience: Audience, subject: str, body: str, send_at: datetime | None
) -> str | None:
    """What one submission of the compose form is: its one-off key with what it would send.

    A second click of Send repeats the key and the content: it finds the first message. The
    same form sent back from the browser's history after an edit carries the old key with new
    content: that is a new message, never silently the old one.
    """
    if key is None:
        return None
    parts = [
        key,
        audience.kind.key,
        str(audience.school_class.id if audience.school_class else ""),
        subject,
        body,
        send_at.isoformat() if send_at else "",
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def submitted(submission: str | None) -> MailMessage | None:
    """The message an earlier submission of the same compose form wrote, if any."""
    if submission is None:
        return None
    found = select(MailMessage).where(
        MailMessage.school_id == g.school.id, MailMessage.submission_key == submission
    )
    return db.session.scalar(found)


def is_preparing(message: MailMessage) -> bool:
    """The worker is still writing this message's deliveries (and it was not called off)."""
    return message.fanout_after is not None and message.cancelled_at is None


# --- reading ----------------------------------------------------------------------------------


def _visible() -> Select:
    """Announcements of the current school this member may follow.

    Whoever may email the school or send newsletters sees them all; a teacher or room parent
    who may only email classes sees their classes' messages and what they wrote themselves.
    """
    query = select(MailMessage).where(MailMessage.school_id == g.school.id, MailMessage.template == TEMPLATE)
    if can("messages.school") or can("messages.newsletter"):
        return query
    return query.where(
        or_(
            MailMessage.created_by_id == g.membership.user_id,
            and_(
                MailMessage.category == Category.CLASS_ANNOUNCEMENTS,
                MailMessage.class_id.in_(_helped_class_ids()),
            ),
        )
    )


@dataclass(frozen=True)
class Listed:
    """One row of the sent messages list."""

    message: MailMessage
    sender_name: str | None


def list_messages(limit: int = LIST_LIMIT) -> list[Listed]:
    """The latest messages, newest first, with their senders' names (one query)."""
    query = (
        _visible()
        .add_columns(User.name)
        .outerjoin(User, User.id == MailMessage.created_by_id)
        .order_by(MailMessage.created_at.desc(), MailMessage.id.desc())
        .limit(limit)
    )
    return [Listed(message, name) for message, name in db.session.execute(query)]


def get_message(message_id: int) -> Listed | None:
    """One message of the current school this member may follow (None for any other id)."""
    query = (
        _visible()
        .add_columns(User.name)
        .outerjoin(User, User.id == MailMessage.created_by_id)
        .where(MailMessage.id == message_id)
    )
    row = db.session.execute(query).first()
    return Listed(*row) if row is not None else None


def scheduled_count(cap: int) -> tuple[int, bool]:
    """Messages this member may follow that wait for their time, counted no further than ``cap``."""
    waiting = _visible().where(MailMessage.cancelled_at.is_(None), MailMessage.scheduled_for > utcnow())
    return paging.capped_count(waiting, MailMessage.id, cap)


def failed_among_latest(window: int) -> int:
    """How many of the latest ``window`` messages this member follows ended with failed deliveries.

    Read from the kept counts only (a message still sending has none yet, and is not recounted
    here), so the home page reads ``window`` rows whatever the size of the audiences.
    """
    latest = (
        _visible()
        .with_only_columns(MailMessage.id)
        .order_by(MailMessage.created_at.desc(), MailMessage.id.desc())
        .limit(window)
        .subquery()
    )
    failed = select(func.count()).select_from(
        select(SettledCounts.message_id)
        .where(SettledCounts.message_id.in_(select(latest.c.id)), SettledCounts.failed > 0)
        .subquery()
    )
    return db.session.scalar(failed) or 0


def kind_of(message: MailMessage) -> Kind | None:
    """The kind of message its category makes it (None for mail that is no announcement)."""
    return KIND_OF_CATEGORY.get(message.category)


def is_waiting_for_its_time(message: MailMessage) -> bool:
    """Scheduled, not cancelled, and the time has not come yet."""
    return (
        message.cancelled_at is None
        and message.scheduled_for is not None
        and message.scheduled_for > utcnow()
    )


# --- calling off a scheduled message ---------------------------------------------------------


def may_resend(message: MailMessage) -> bool:
    """May the current member send this message's kind to its audience (so cancel or copy it)?"""
    kind = kind_of(message)
    if kind is None or not can(kind.permission):
        return False
    if kind.key != "class":
        return True
    school_class = get_class(message.class_id) if message.class_id is not None else None
    return school_class is not None and may_email_class(school_class)


class CancelRefused(Exception):
    """The message cannot be called off (it has gone out, or is going out)."""


GONE_OUT = _l("This message has already gone out, so it can no longer be cancelled.")


def cancel(message: MailMessage) -> int:
    """Call off a scheduled message before its time: every delivery is skipped. Returns how many.

    The message is claimed with a conditional UPDATE (not yet cancelled, time still to come), so
    a double-click cancels once. Its pending rows are then skipped in one UPDATE; the send job
    claims only pending rows. If a send job got to some first (a worker whose clock runs ahead),
    the caller is refused and rolls back: the message goes out rather than being half cancelled.
    """
    if not is_waiting_for_its_time(message):
        raise CancelRefused(str(GONE_OUT))
    now = utcnow()
    claimed = rowcount(
        db.session.execute(
            update(MailMessage)
            .where(
                MailMessage.id == message.id,
                MailMessage.cancelled_at.is_(None),
                MailMessage.scheduled_for > now,
            )
            .values(cancelled_at=now, cancelled_by_id=current_user.id)
            .execution_options(synchronize_session=False)
        )
    )
    if claimed != 1:
        raise CancelRefused(_("This message has already been cancelled, or has gone out."))
    skipped = rowcount(
        db.session.execute(
            update(MailDelivery)
            .where(MailDelivery.message_id == message.id, MailDelivery.status == DeliveryStatus.PENDING)
            .values(status=DeliveryStatus.SKIPPED, last_error="cancelled before it was sent", updated_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    if _any_going_out(message.id):
        raise CancelRefused(str(GONE_OUT))
    audit.record("message.cancelled", target=message.subject, deliveries=skipped)
    return skipped


def _any_going_out(message_id: int) -> bool:
    """Has a send job claimed or sent any of this message's deliveries?"""
    going = select(MailDelivery.id).where(
        MailDelivery.message_id == message_id,
        MailDelivery.status.in_((DeliveryStatus.SENDING, DeliveryStatus.SENT)),
    )
    return db.session.scalar(going.limit(1)) is not None


def copy_of(message_id: int | None) -> MailMessage | None:
    """A message of this school the member may follow and send again, to start a new one from."""
    found = get_message(message_id) if message_id is not None else None
    if found is None or not may_resend(found.message):
        return None
    return found.message


@dataclass
class DeliveryCounts:
    """Where a message's deliveries stand."""

    sent: int = 0
    waiting: int = 0
    skipped: int = 0
    failed: int = 0
    digest: int = 0  # held for, or sent in, a person's daily digest
    delayed: int = 0  # pending again after a temporary failure, with its reason; retried for 72 h

    @property
    def total(self) -> int:
        """Every delivery of the message, whatever became of it."""
        return self.sent + self.waiting + self.skipped + self.failed + self.digest + self.delayed

    @property
    def settled(self) -> bool:
        """Nothing left waiting to be sent."""
        return self.waiting == 0 and self.delayed == 0


_BUCKET = {
    DeliveryStatus.PENDING: "waiting",
    DeliveryStatus.SENDING: "waiting",
    DeliveryStatus.SENT: "sent",
    DeliveryStatus.SKIPPED: "skipped",
    DeliveryStatus.FAILED: "failed",
    DeliveryStatus.DIGEST: "digest",
    DeliveryStatus.DIGESTED: "digest",
}


# Pending with a reason: a temporary failure put it back for a later try (app/mail/claims.py).
_DELAYED = case(
    (and_(MailDelivery.status == DeliveryStatus.PENDING, MailDelivery.last_error.is_not(None)), 1), else_=0
)


_FINAL = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.SKIPPED, DeliveryStatus.FAILED, DeliveryStatus.DIGESTED}
)


def delivery_counts(message_ids: Iterable[int]) -> dict[int, DeliveryCounts]:
    """Counts per message for any number of messages: the kept counts of messages that are done
    (one query), and one grouped query for the others, whose counts are kept once all final.

    Kept counts are added to the session (``db.session.info["counts_written"]``); the view commits.
    """
    counts = {message_id: DeliveryCounts() for message_id in message_ids}
    if not counts:
        return counts
    kept = db.session.execute(
        select(
            SettledCounts.message_id,
            SettledCounts.sent,
            SettledCounts.skipped,
            SettledCounts.failed,
            SettledCounts.digest,
        ).where(SettledCounts.message_id.in_(list(counts)))
    ).all()
    for message_id, sent, skipped, failed, digest in kept:
        counts[message_id] = DeliveryCounts(sent=sent, skipped=skipped, failed=failed, digest=digest)
    live = [message_id for message_id in counts if message_id not in {row[0] for row in kept}]
    if not live:
        return counts
    rows = db.session.execute(
        select(MailDelivery.message_id, MailDelivery.status, _DELAYED, func.count(MailDelivery.id))
        .where(MailDelivery.message_id.in_(live))
        .group_by(MailDelivery.message_id, MailDelivery.status, _DELAYED)
    )
    unfinished: set[int] = set()
    for message_id, status, delayed, number in rows:
        bucket = "delayed" if delayed else _BUCKET[DeliveryStatus(status)]
        setattr(counts[message_id], bucket, getattr(counts[message_id], bucket) + number)
        if DeliveryStatus(status) not in _FINAL:
            unfinished.add(message_id)
    _keep([(message_id, counts[message_id]) for message_id in live if message_id not in unfinished])
    return counts


def _keep(done: list[tuple[int, DeliveryCounts]]) -> None:
    """Keep the counts of messages whose deliveries are all final (a second writer's row wins)."""
    done = [(message_id, c) for message_id, c in done if c.total]
    if not done:
        return
    dialect = db.session.get_bind().dialect.name
    insert_ = postgresql_insert if dialect == "postgresql" else sqlite_insert
    rows = [
        {
            "message_id": message_id,
            "sent": c.sent,
            "skipped": c.skipped,
            "failed": c.failed,
            "digest": c.digest,
        }
        for message_id, c in done
    ]
    db.session.execute(insert_(SettledCounts).values(rows).on_conflict_do_nothing())
    db.session.info["counts_written"] = True


@dataclass
class Delay:
    """Why a message's delayed deliveries wait, and when the next try is due."""

    reason: str
    next_attempt_at: datetime | None

    @property
    def display_reason(self) -> str:
        """The reason in the reader's language where it is one of the app's own."""
        return delivery_reason_text(self.reason)


def delay_of(message_id: int) -> Delay | None:
    """The latest reason among the message's delayed deliveries (one indexed query), or None."""
    row = db.session.execute(
        select(MailDelivery.last_error, MailDelivery.next_attempt_at)
        .where(MailDelivery.message_id == message_id, _DELAYED == 1)
        .order_by(MailDelivery.updated_at.desc())
        .limit(1)
    ).first()
    return Delay(reason=row[0] or "", next_attempt_at=row[1]) if row is not None else None
