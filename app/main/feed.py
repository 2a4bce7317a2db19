"""A member's home feed: the announcements addressed to them, newest first, with unread marks.

Which announcements? The audience rule of app/messages, read back: a school announcement or
newsletter is for everyone in the school, a class announcement for the families and helpers of
its class (``Audience.memberships``), and "their classes" is THE rule of app/classes
(``class_ids_of_member``), the one the calendar and directory use too. The feed is not read from
the deliveries, for three reasons: deliveries are the outbox's record of email (a large audience's
are written by the worker minutes later, a scheduled message's exist before it is due), they carry
no school and no index a page could walk in a district, and the senders' own archive
(``messages.services._visible``) already decides who may follow a message by its category and
class, not by its deliveries. So a family that joins a class mid-year reads what the class was
told before, as on a class notice board, and a family that leaves a class no longer reads it.

Every query names the current school (messages are not school-scoped rows: the outbox carries
platform mail too) and is served by ``ix_mail_message_school_class_created``; the read marks by
their (school_id, membership_id, message_id) key. A page is one statement whatever the school's
size: the marks are an outer join, the sender's name another.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flask import g
from sqlalchemy import ColumnElement, Select, and_, literal, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app import paging
from app.extensions import db
from app.messages.services import TEMPLATE
from app.models import Category, MailMessage, User
from app.models.base import utcnow
from app.models.reading import MessageRead

FEED_PAGE = 20
UNREAD_CAP = 99  # "99+ unread": the count stops there
QUERY_MAX = 100
EVERYONE = (Category.SCHOOL_ANNOUNCEMENTS, Category.NEWSLETTERS)


@dataclass(frozen=True)
class Reader:
    """Whose feed: the member (by membership id) and the classes they belong to."""

    membership_id: int
    class_ids: frozenset[int]


def addressed_to(reader: Reader) -> Select:
    """The announcements of the current school this reader is (or was) an addressee of, gone out.

    Gone out: not called off, and not waiting for a scheduled time still to come.
    """
    for_them: ColumnElement[bool] = MailMessage.category.in_(EVERYONE)
    if reader.class_ids:
        for_them = or_(
            for_them,
            and_(
                MailMessage.category == Category.CLASS_ANNOUNCEMENTS,
                MailMessage.class_id.in_(sorted(reader.class_ids)),
            ),
        )
    return select(MailMessage).where(
        MailMessage.school_id == g.school.id,
        MailMessage.template == TEMPLATE,
        MailMessage.cancelled_at.is_(None),
        or_(MailMessage.scheduled_for.is_(None), MailMessage.scheduled_for <= utcnow()),
        for_them,
    )


def _searched(query: Select, words: str) -> Select:
    """Only messages whose subject or text holds ``words`` (case-insensitive, as typed)."""
    if not words:
        return query
    like = f"%{_escape_like(words)}%"
    return query.where(
        or_(
            MailMessage.subject.ilike(like, escape="\\"),
            MailMessage.source_markdown.ilike(like, escape="\\"),
        )
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _read_mark(reader: Reader):
    """The outer join condition to this reader's mark of a message."""
    return and_(
        MessageRead.school_id == g.school.id,
        MessageRead.membership_id == reader.membership_id,
        MessageRead.message_id == MailMessage.id,
    )


@dataclass(frozen=True)
class Item:
    """One announcement of the feed, its sender's name and whether this reader has opened it."""

    message: MailMessage
    sender_name: str | None
    read: bool


@dataclass(frozen=True)
class FeedPage:
    """A page of the feed, newest first; the next (older) page's anchor id, if there is one."""

    items: list[Item]
    next_before: int | None
    query: str
    later_page: bool  # not the first page


def clean_query(raw: str | None) -> str:
    """What was typed in the search box, trimmed and cut to a sane length."""
    return " ".join((raw or "").split())[:QUERY_MAX]


def page(reader: Reader, *, words: str = "", before: int | None = None, size: int = FEED_PAGE) -> FeedPage:
    """A page of the feed older than the message ``before`` (the first page for None), in one query.

    Keyset paging on (created_at, id) newest first; the anchor's time is read inside the same
    statement, so an unknown or foreign ``before`` finds no anchor and an empty page.
    """
    query = _searched(addressed_to(reader), words)
    if before is not None:
        anchor = (
            select(MailMessage.created_at)
            .where(MailMessage.id == before, MailMessage.school_id == g.school.id)
            .scalar_subquery()
        )
        query = query.where(
            or_(
                MailMessage.created_at < anchor,
                and_(MailMessage.created_at == anchor, MailMessage.id < before),
            )
        )
    query = (
        query.add_columns(User.name, MessageRead.id.is_not(None))
        .outerjoin(User, User.id == MailMessage.created_by_id)
        .outerjoin(MessageRead, _read_mark(reader))
        .order_by(MailMessage.created_at.desc(), MailMessage.id.desc())
        .limit(size + 1)
    )
    rows = [Item(message, name, bool(read)) for message, name, read in db.session.execute(query)]
    more = len(rows) > size
    rows = rows[:size]
    return FeedPage(rows, rows[-1].message.id if more else None, words, before is not None)


def unread_count(reader: Reader) -> tuple[int, bool]:
    """How many of the feed's announcements this reader has not opened, up to ``UNREAD_CAP``."""
    unread = addressed_to(reader).where(~select(MessageRead.id).where(_read_mark(reader)).exists())
    return paging.capped_count(unread, MailMessage.id, UNREAD_CAP)


def get(reader: Reader, message_id: int) -> Item | None:
    """One announcement of the feed by id (None for anything this reader was not sent)."""
    query = (
        addressed_to(reader)
        .add_columns(User.name, MessageRead.id.is_not(None))
        .outerjoin(User, User.id == MailMessage.created_by_id)
        .outerjoin(MessageRead, _read_mark(reader))
        .where(MailMessage.id == message_id)
    )
    row = db.session.execute(query).first()
    return Item(row[0], row[1], bool(row[2])) if row is not None else None


def _insert_ignoring_repeats():
    dialect = db.session.get_bind().dialect.name
    return postgresql_insert if dialect == "postgresql" else sqlite_insert


def mark_read(reader: Reader, message_ids: Iterable[int]) -> None:
    """Mark these messages read for the reader (a mark already there stays as it was)."""
    now = utcnow()
    rows = [
        {"school_id": g.school.id, "membership_id": reader.membership_id, "message_id": m, "read_at": now}
        for m in message_ids
    ]
    if rows:
        insert_ = _insert_ignoring_repeats()
        db.session.execute(insert_(MessageRead).values(rows).on_conflict_do_nothing())


def mark_all_read(reader: Reader) -> int:
    """Mark every unread announcement of the feed read, in one INSERT ... SELECT. Returns how many.

    An INSERT ... SELECT is not scoped by tenancy, so the statement names the school itself
    (``addressed_to`` does); a mark written meanwhile by a second click is left as it was.
    """
    unread = (
        addressed_to(reader)
        .where(~select(MessageRead.id).where(_read_mark(reader)).exists())
        .with_only_columns(
            literal(g.school.id),
            literal(reader.membership_id),
            MailMessage.id,
            literal(utcnow(), MessageRead.read_at.type),
        )
    )
    insert_ = _insert_ignoring_repeats()
    statement = (
        insert_(MessageRead)
        .from_select(["school_id", "membership_id", "message_id", "read_at"], unread)
        .on_conflict_do_nothing()
    )
    # RETURNING counts what was written (psycopg reports no row count for this statement).
    return len(db.session.scalars(statement.returning(MessageRead.message_id)).all())
