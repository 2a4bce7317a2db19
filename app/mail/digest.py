"""The daily digest: announcements and newsletters held for people who asked for one email a day.

Held items are checked again when the digest is made, as the send job checks every email:
an item of a school the person has left since (deactivated, rejected) is dropped. Each digest
is in its reader's language, its items too (their rendering in that language).
"""

from __future__ import annotations

import logging
from itertools import groupby

from flask_babel import force_locale
from sqlalchemy import Row, select

from app import i18n, jobs, tenancy
from app.extensions import db
from app.mail.jobs import NOT_A_MEMBER, approved_memberships
from app.mail.outbox import queue_email
from app.mail.rendering import rendering_or_fallback
from app.models import DeliveryStatus, MailDelivery, MailMessage, School, User
from app.models.base import utcnow

# One held delivery with its message, as the digest query returns them.
Held = Row[MailDelivery, MailMessage]

log = logging.getLogger(__name__)

DIGEST_TEMPLATE = "digest"


@jobs.job
@jobs.repeating
def send_digests() -> dict:
    """Gather every held delivery into one email per person and category, and queue it."""
    with tenancy.unscoped():  # held items of every school; each digest itself is platform mail
        return _gather_digests()


def _gather_digests() -> dict:
    """One digest per person and category from the held deliveries; settle what went in.

    Every item is rendered in its reader's language first, with nothing written yet: a rendering
    may wait on the translation service, and no write may stay open meanwhile. The writes then
    go in one transaction, over the items read again (only those rendered, still held).
    """
    held = _held()
    planned = {delivery.id for delivery, _ in held}
    locales, renderings = _render_items(held)
    held = [row for row in _held() if row[0].id in planned]  # fresh rows, none added meanwhile
    # The query keeps only deliveries with an account; the test says so to the type checker too.
    users = _users({delivery.user_id for delivery, _ in held if delivery.user_id is not None})
    members = _members(held)
    digests = 0
    for (user_id, category), group in groupby(held, key=lambda row: (row[0].user_id, row[1].category)):
        items = list(group)
        user = users.get(user_id)
        if user is None or not user.active:
            _settle(items, DeliveryStatus.SKIPPED, "account deactivated")
            continue
        items = _drop_left_schools(items, members)
        if not items:
            continue
        locale = locales.get((user_id, category))
        if locale is None:
            continue  # reactivated meanwhile: not rendered for, left for the next run
        # Only what was rendered for this language goes in, and only that is settled; the
        # rest stays held for the next run.
        items = [row for row in items if (row[1].id, locale) in renderings]
        if not items:
            continue
        with force_locale(locale):
            label = str(category.label)
        digest = queue_email(
            DIGEST_TEMPLATE,
            [user],
            category=category,
            language=locale,
            name=user.name,
            category_label=label,
            items=[renderings[(m.id, locale)] for _, m in items],
        )
        _settle(items, DeliveryStatus.DIGESTED, f"in digest {digest.id}")
        digests += 1
    db.session.commit()
    log.info("digests queued: %d (from %d held deliveries)", digests, len(held))
    return {"digests": digests, "items": len(held)}


def _held() -> list[Held]:
    """Every held delivery with an account, with its message, by person, category and age."""
    query = (
        select(MailDelivery, MailMessage)
        .join(MailMessage, MailMessage.id == MailDelivery.message_id)
        .where(MailDelivery.status == DeliveryStatus.DIGEST, MailDelivery.user_id.is_not(None))
        .order_by(MailDelivery.user_id, MailMessage.category, MailMessage.created_at)
    )
    return list(db.session.execute(query).all())


def _render_items(held: list[Held]) -> tuple[dict[tuple, str], dict[tuple[int, str], dict[str, str]]]:
    """Each digest's language (by person and category), and each item as the digest quotes it in
    that language (by message id and language), rendered (and committed) once each."""
    users = _users({delivery.user_id for delivery, _ in held if delivery.user_id is not None})
    school_languages = _school_languages(held)
    locales: dict[tuple, str] = {}
    needed: dict[tuple[int, str], MailMessage] = {}
    for key, group in groupby(held, key=lambda row: (row[0].user_id, row[1].category)):
        items = list(group)
        user = users.get(key[0])
        if user is None or not user.active:
            continue  # skipped below, in whatever language
        # Platform mail: the reader's language, else their (first held item's) school's default.
        locale = locales[key] = i18n.mail_locale(user.language, school_languages.get(items[0][1].school_id))
        for _delivery, message in items:
            needed.setdefault((message.id, locale), message)
    renderings: dict[tuple[int, str], dict[str, str]] = {}
    for (message_id, locale), message in needed.items():
        rendered = rendering_or_fallback(message, locale)
        renderings[(message_id, locale)] = {"subject": rendered.subject, "text": rendered.text_body or ""}
    return locales, renderings


def _members(held) -> set[tuple[int, int]]:
    """(school id, user id) of the approved memberships behind the held items, in one query."""
    schools = {message.school_id for _, message in held if message.school_id is not None}
    return approved_memberships(schools, {d.user_id for d, _ in held if d.user_id is not None})


def _drop_left_schools(items: list[Held], members: set[tuple[int, int]]) -> list[Held]:
    """Skip the items of a school the person no longer belongs to; the rest still go."""
    kept: list[Held] = []
    left: list[Held] = []
    for item in items:
        delivery, message = item
        belongs = message.school_id is None or (message.school_id, delivery.user_id) in members
        (kept if belongs else left).append(item)
    _settle(left, DeliveryStatus.SKIPPED, NOT_A_MEMBER)
    return kept


def _school_languages(held) -> dict[int | None, str]:
    """The default language of each school behind the held items, in one query."""
    ids = {message.school_id for _, message in held if message.school_id is not None}
    if not ids:
        return {}
    query = select(School.id, School.default_language).where(School.id.in_(ids))
    return {row.id: row.default_language for row in db.session.execute(query)}


def _users(ids: set[int]) -> dict[int, User]:
    """The accounts of the people with held items, by id, in one query."""
    if not ids:
        return {}
    return {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(ids)))}


def _settle(items, status: DeliveryStatus, note: str) -> None:
    """Record what became of held items (digested, or skipped and why)."""
    now = utcnow()
    for delivery, _message in items:
        delivery.status, delivery.last_error, delivery.updated_at = status, note, now
