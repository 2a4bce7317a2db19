"""Jobs that send the outbox, and the sweeper that finds work a lost job left behind.

``send_message`` claims pending deliveries in batches as large as the backend takes,
re-checks every recipient at send time (account active? still a member of the message's
school? category turned off or gathered into a digest? address suppressed?), sends the rest
in one provider call per batch and records the outcome on each delivery. A delivery marked
sent is never sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, or_, select, update

from app import jobs, sessions, tenancy
from app.extensions import db
from app.mail.backends import Batch, PermanentFailure, Recipient, TemporaryFailure, backend
from app.mail.preferences import modes_for, suppressed
from app.models import (
    DeliveryMode,
    DeliveryStatus,
    MailDelivery,
    MailMessage,
    Membership,
    MembershipStatus,
    User,
)
from app.models.base import utcnow
from app.unsubscribe import tokens

log = logging.getLogger(__name__)

STUCK_AFTER = timedelta(minutes=15)
NOT_A_MEMBER = "no longer a member of this school"
SETTLED = (
    DeliveryStatus.SENT,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.FAILED,
    DeliveryStatus.DIGEST,
    DeliveryStatus.DIGESTED,
)


@jobs.job
def send_message(message_id: int) -> dict:
    """Send every pending delivery of one message, each at most once."""
    # The outbox holds every school's mail: find the message across schools, then act for its
    # school (or for none, for platform mail), as the request that wrote it did.
    with tenancy.unscoped():
        message = db.session.get(MailMessage, message_id)
    if message is None or message.cancelled_at is not None:
        return {"sent": 0}  # gone, or called off before its time (its deliveries were skipped)
    if message.scheduled_for is not None and message.scheduled_for > utcnow():
        return {"sent": 0}  # scheduled: the sweeper enqueues this job again once the time has passed
    with tenancy.acting_for(message.school_id):
        counts = _send_pending(message)
    from app.consent.jobs import refresh_policy_dispatches
    from app.consent.policy import CHANGE_TEMPLATE

    if message.template == CHANGE_TEMPLATE:
        # A policy change's effective date counts from the moment its email finished going
        # out: note it as soon as a send settles rather than when someone next reads a page
        # (GETs write nothing). The repeating job catches a follow-up lost with Redis.
        jobs.enqueue(refresh_policy_dispatches)
        db.session.commit()
    return counts


def _send_pending(message: MailMessage) -> dict:
    """Claim and send the message's pending deliveries batch by batch; erase a secret body after."""
    message_id = message.id
    counts = {"sent": 0, "skipped": 0, "digest": 0, "failed": 0, "retry": 0}
    # Deliveries are taken in id order and the job never looks back: a failure waits for its
    # retry time rather than being retried at once, and the cursor stays one number however
    # many batches there are (a list of tried ids grew with every recipient).
    cursor = Cursor()
    while claimed := _claim(message_id, cursor, limit=backend().max_batch):
        for outcome, number in _send_batch(message, claimed).items():
            counts[outcome] += number
        db.session.commit()
    _erase_sensitive_bodies(message)
    db.session.commit()
    log.info("message %s: %s", message_id, counts)
    return counts


@dataclass
class Cursor:
    """How far one run of the send job has got: the highest delivery id it has looked at."""

    after_id: int = 0


def _claim(message_id: int, cursor: Cursor, limit: int) -> list[MailDelivery]:
    """Mark a batch of due pending deliveries as sending, so two workers never take the same one.

    Returns [] only when nothing is left to claim: losing a whole batch to another
    worker moves on to the next one rather than ending the job.
    """
    while ids := _due_ids(message_id, cursor.after_id, limit):
        cursor.after_id = ids[-1]
        # RETURNING gives exactly the rows this worker moved; re-reading "sending" rows would
        # also pick up rows another worker claimed in between, and both would send them.
        claimed = db.session.scalars(
            update(MailDelivery)
            .where(MailDelivery.id.in_(ids), MailDelivery.status == DeliveryStatus.PENDING)
            .values(status=DeliveryStatus.SENDING, updated_at=utcnow())
            .returning(MailDelivery.id)
            .execution_options(synchronize_session=False)
        ).all()
        db.session.commit()
        if claimed:
            query = select(MailDelivery).where(MailDelivery.id.in_(claimed)).order_by(MailDelivery.id)
            return list(db.session.scalars(query))
    return []


def _due_ids(message_id: int, after_id: int, limit: int) -> list[int]:
    """The next due pending deliveries of the message after ``after_id``, in id order."""
    query = (
        select(MailDelivery.id)
        .where(
            MailDelivery.message_id == message_id,
            MailDelivery.id > after_id,
            MailDelivery.status == DeliveryStatus.PENDING,
            or_(MailDelivery.next_attempt_at.is_(None), MailDelivery.next_attempt_at <= utcnow()),
        )
        .order_by(MailDelivery.id)
        .limit(limit)
    )
    return list(db.session.scalars(query))


def _send_batch(message: MailMessage, claimed: list[MailDelivery]) -> dict[str, int]:
    """Sort a claimed batch into skipped, digest and to-send; send the last in one call."""
    users = _users_of(claimed)
    for delivery in claimed:
        user = _user_of(delivery, users)
        if user is not None and not delivery.address_fixed:
            delivery.to_email = user.email  # the address now, not when the message was written
    modes = modes_for(users, message.category)
    blocked = suppressed(d.to_email for d in claimed)
    members = _members_now(message, users)
    counts = {"skipped": 0, "digest": 0}
    sendable = []
    for delivery in claimed:
        delivery.attempts += 1
        delivery.updated_at = utcnow()
        reason = _skip_reason(message, delivery, users, modes, blocked, members)
        if reason == "digest":
            delivery.status = DeliveryStatus.DIGEST
            counts["digest"] += 1
        elif reason:
            delivery.status, delivery.last_error = DeliveryStatus.SKIPPED, reason
            counts["skipped"] += 1
        else:
            sendable.append(delivery)
    if sendable:
        counts.update(_send(message, sendable, users))
    return counts


def _users_of(deliveries: list[MailDelivery]) -> dict[int, User]:
    """The accounts of a batch's recipients, by id, in one query."""
    ids = {d.user_id for d in deliveries if d.user_id is not None}
    if not ids:
        return {}
    return {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(ids)))}


def _user_of(delivery: MailDelivery, users: dict[int, User]) -> User | None:
    """The delivery's account among ``users``; None when it has none (deleted) or it is not there."""
    return users.get(delivery.user_id) if delivery.user_id is not None else None


def _members_now(message: MailMessage, users: dict[int, User]) -> set[int] | None:
    """Which of these people hold an approved membership of the message's school now (one query).

    Recipients were chosen when the message was written, but a scheduled announcement waits
    up to 90 days: someone deactivated or rejected since must not get it. None means "do not
    ask": mail of no school, and administrative mail, which is about the membership itself
    ("your request was declined") and reaches every active account (P11).
    """
    if message.school_id is None or not message.category.optional:
        return None
    return {user_id for _, user_id in approved_memberships({message.school_id}, users)}


def approved_memberships(school_ids: Iterable[int], user_ids: Iterable[int]) -> set[tuple[int, int]]:
    """(school id, user id) of each approved membership among these schools and people, in one query."""
    school_ids, user_ids = list(school_ids), list(user_ids)
    if not school_ids or not user_ids:
        return set()
    query = select(Membership.school_id, Membership.user_id).where(
        Membership.school_id.in_(school_ids),
        Membership.user_id.in_(user_ids),
        Membership.status == MembershipStatus.APPROVED,
    )
    # Jobs have no school bound; the schools are named in the query itself.
    with tenancy.unscoped():
        return {(school_id, user_id) for school_id, user_id in db.session.execute(query)}


def _skip_reason(message, delivery, users, modes, blocked, members) -> str | None:
    """Why this delivery must not go now (P10, P11), or None to send it."""
    suppression = blocked.get(delivery.to_email.lower())
    if suppression is not None and (message.category.optional or suppression.blocks_administrative):
        return f"address suppressed ({suppression.reason})"
    if delivery.user_id is None:
        # No account (it was deleted) is no membership either; other mail goes to the address.
        return NOT_A_MEMBER if members is not None else None
    user = users.get(delivery.user_id)
    if user is None or not user.active:
        return "account deactivated"
    if members is not None and user.id not in members:
        return NOT_A_MEMBER
    mode = modes.get(user.id, DeliveryMode.IMMEDIATE)
    if mode is DeliveryMode.OFF:
        return "unsubscribed from this category"
    if mode is DeliveryMode.DIGEST and message.category.can_digest and message.template != "digest":
        return "digest"
    return None


def _send(message: MailMessage, deliveries: list[MailDelivery], users: dict[int, User]) -> dict[str, int]:
    """One provider call for the batch; every delivery records what came of it."""
    batch = _batch(message, deliveries, users)
    try:
        provider_ids = backend().send_batch(batch)
    except TemporaryFailure as failure:
        return _retry_later(message, deliveries, failure)
    except PermanentFailure as failure:
        for delivery in deliveries:
            delivery.status, delivery.last_error = DeliveryStatus.FAILED, failure.reason[:500]
        return {"failed": len(deliveries)}
    now = utcnow()
    for delivery in deliveries:
        delivery.status = DeliveryStatus.SENT
        delivery.provider_id = provider_ids.get(delivery.id)
        delivery.sent_at = now
        delivery.last_error = None
    return {"sent": len(deliveries)}


def _batch(message: MailMessage, deliveries: list[MailDelivery], users: dict[int, User]) -> Batch:
    """The message with each recipient's own unsubscribe link as a recipient variable."""
    headers = {"X-Category": message.category.value}
    if message.category.optional:
        mailto = current_app.config.get("MAIL_UNSUBSCRIBE_MAILTO")
        target = "<%recipient.unsubscribe_url%>" + (f", <mailto:{mailto}>" if mailto else "")
        headers |= {"List-Unsubscribe": target, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    link = _unsubscribe_link_maker(message)
    return Batch(
        sender=current_app.config["MAIL_FROM"],
        subject=message.subject,
        text=message.text_body or "",
        html=message.html_body,
        tag=message.category.value,
        headers=headers,
        recipients=[
            Recipient(d.id, d.to_email, link(_user_of(d, users)) if link else {}) for d in deliveries
        ],
    )


def _unsubscribe_link_maker(message: MailMessage):
    """Build links from one URL template per batch (20,000 url_for calls would dominate a send)."""
    if not message.category.optional:
        return None
    placeholder = "UNSUBSCRIBE-TOKEN"
    template = tokens.link_template(placeholder)

    def variables(user: User | None) -> dict[str, str]:
        """One recipient's unsubscribe link as a recipient variable (none without an account)."""
        if user is None:
            return {}
        return {"unsubscribe_url": template.replace(placeholder, tokens.make(user, message.category))}

    return variables


def _retry_later(message: MailMessage, deliveries: list[MailDelivery], failure: TemporaryFailure) -> dict:
    """Put the batch back with a backoff (or the provider's Retry-After) and schedule the retry."""
    config = current_app.config
    attempts = max(d.attempts for d in deliveries)
    if attempts >= config["MAIL_MAX_ATTEMPTS"]:
        for delivery in deliveries:
            delivery.status, delivery.last_error = DeliveryStatus.FAILED, failure.reason[:500]
        return {"failed": len(deliveries)}
    backoff = min(config["MAIL_RETRY_BASE_SECONDS"] * 2 ** (attempts - 1), config["MAIL_RETRY_MAX_SECONDS"])
    delay = max(failure.retry_after or 0, backoff)
    for delivery in deliveries:
        delivery.status = DeliveryStatus.PENDING
        delivery.last_error = failure.reason[:500]
        delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
    jobs.enqueue_in(delay, send_message, message.id, queue="mail")
    log.warning(
        "message %s: %d deliveries retry in %.1fs (%s)", message.id, len(deliveries), delay, failure.reason
    )
    return {"retry": len(deliveries)}


def _erase_sensitive_bodies(message: MailMessage) -> None:
    """A reset link in a stored body is a key under the mat: drop it once all are settled."""
    if not message.sensitive or message.text_body is None:
        return
    unsettled = db.session.scalar(
        select(MailDelivery.id)
        .where(MailDelivery.message_id == message.id, MailDelivery.status.not_in(SETTLED))
        .limit(1)
    )
    if unsettled is None:
        message.text_body = message.html_body = None


@jobs.job
@jobs.repeating
def sweep() -> dict:
    """Re-enqueue messages whose deliveries sat pending (or stuck sending) too long."""
    with tenancy.unscoped():  # every school's outbox, on purpose
        found = _lost_messages()
    # The session store has its own connection: prune after our transaction is closed.
    pruned = sessions.prune_expired()
    return {"messages": found, "sessions_pruned": pruned}


def _lost_messages() -> int:
    """Reset stuck deliveries and enqueue each message with lost or due ones; how many."""
    now = utcnow()
    waiting_too_long = and_(
        MailDelivery.next_attempt_at.is_(None),
        MailDelivery.updated_at < now - current_app.config["SWEEP_PENDING_AFTER"],
    )
    lost = and_(
        MailDelivery.status == DeliveryStatus.PENDING,
        or_(waiting_too_long, MailDelivery.next_attempt_at <= now),
    )
    # A worker killed mid-send leaves rows in "sending"; after a while they are sent again.
    stuck = and_(MailDelivery.status == DeliveryStatus.SENDING, MailDelivery.updated_at < now - STUCK_AFTER)
    # A scheduled message is due once its time has passed; until then its pending rows are not lost.
    scheduled = select(MailMessage.id).where(MailMessage.scheduled_for.is_not(None))
    due = and_(
        MailDelivery.status == DeliveryStatus.PENDING,
        MailDelivery.next_attempt_at.is_(None),
        MailDelivery.message_id.in_(scheduled.where(MailMessage.scheduled_for <= now)),
    )
    not_yet = MailDelivery.message_id.not_in(scheduled.where(MailMessage.scheduled_for > now))
    message_ids = list(
        db.session.scalars(select(MailDelivery.message_id).where(or_(lost, stuck, due), not_yet).distinct())
    )
    db.session.execute(
        update(MailDelivery)
        .where(stuck)
        .values(status=DeliveryStatus.PENDING, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    for message_id in message_ids:
        jobs.enqueue(send_message, message_id, queue="mail")
    db.session.commit()
    return len(message_ids)
