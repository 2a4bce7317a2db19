"""The worker's half of composing to a large audience: one delivery per person, chunk by chunk.

The request recorded the message with ``fanout_after = 0`` (its audience is its category and
class) and enqueued the send job, which calls ``fan_out`` before sending. Each chunk is one
transaction over a range of membership ids: it first moves the message's cursor with a
conditional UPDATE (cursor still where this run read it, message not called off), then copies
that range of the audience with the same INSERT ... SELECT compose uses inline. The cursor and
the rows commit together, so a crash between chunks leaves the next chunk to a later run, a
retry starts after the last committed range, and two runs at once take turns on the message
row's lock: nobody gets a second delivery. Consent, suppressions and unsubscribes are checked
per delivery by the send job, as for every message, so someone who unsubscribed after compose
is skipped there.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select, update

from app.extensions import db
from app.mail.claims import call_lease
from app.mail.outbox import copy_deliveries
from app.messages.services import KIND_OF_CATEGORY, Audience, recipient_rows
from app.models import Category, MailMessage, Membership, SchoolClass
from app.models.base import rowcount, utcnow


def fan_out(message_id: int, chunk: int | None = None) -> int:
    """Write the deliveries of a message still preparing, one committed chunk at a time; how many chunks."""
    # At least one membership per chunk: a chunk of 0 would claim an empty range forever.
    chunk = max(1, chunk or current_app.config["MESSAGE_FANOUT_CHUNK"])
    chunks = 0
    while (took := next_chunk(message_id, chunk)) is not None:
        chunks += took
    return chunks


def next_chunk(message_id: int, chunk: int) -> int | None:
    """Claim and write the next range of the audience and commit: 1, 0 if another run took it
    first, None once there is nothing left to write."""
    message = db.session.execute(
        select(MailMessage).where(MailMessage.id == message_id).execution_options(populate_existing=True)
    ).scalar_one()
    after = message.fanout_after
    if after is None or message.cancelled_at is not None or message.school_id is None:
        db.session.rollback()
        return None
    upto = _chunk_end(message.school_id, after, chunk)
    if not _claim(message_id, after, upto):
        db.session.rollback()  # another run took this range first: read where it stands now
        return 0
    audience = _audience_of(message)
    if audience is not None:
        people = recipient_rows(audience, message.school_id).where(Membership.id > after)
        if upto is not None:
            people = people.where(Membership.id <= upto)
        copy_deliveries(message_id, people)
    db.session.commit()
    return 1


def _chunk_end(school_id: int, after: int, chunk: int) -> int | None:
    """The last membership id of the next ``chunk`` of the school's memberships (None: the rest)."""
    beyond = db.session.scalar(
        select(Membership.id)
        .where(Membership.school_id == school_id, Membership.id > after)
        .order_by(Membership.id)
        .offset(chunk)
        .limit(1)
    )
    return beyond - 1 if beyond is not None else None


def _claim(message_id: int, after: int, upto: int | None) -> bool:
    """Move the cursor past this range if no other run has (NULL: the last range, all written)."""
    claimed = db.session.execute(
        update(MailMessage)
        .where(
            MailMessage.id == message_id,
            MailMessage.fanout_after == after,
            MailMessage.cancelled_at.is_(None),
        )
        # A run is working on it (as a send run's lease says): the sweeper leaves it alone until
        # this lapses, rather than enqueueing another run at every sweep of a long fan-out.
        .values(fanout_after=upto, sending_until=utcnow() + call_lease())
        .execution_options(synchronize_session=False)
    )
    return rowcount(claimed) == 1


def _audience_of(message: MailMessage) -> Audience | None:
    """The audience the message was written to (None: its class has been deleted since)."""
    kind = KIND_OF_CATEGORY.get(message.category)
    if kind is None:
        return None
    if message.category != Category.CLASS_ANNOUNCEMENTS:
        return Audience(kind=kind, label="")
    school_class = db.session.get(SchoolClass, message.class_id) if message.class_id is not None else None
    if school_class is None:
        return None
    return Audience(kind=kind, label="", school_class=school_class)
