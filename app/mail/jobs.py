"""Jobs that send the outbox, and the sweeper that finds work a lost job left behind."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, or_, select, update

from app import jobs, sessions
from app.extensions import db
from app.mail.backends import Envelope, backend
from app.models import DeliveryStatus, MailDelivery, MailMessage, User
from app.models.base import utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BATCH = 100
STUCK_AFTER = timedelta(minutes=15)
SETTLED = (DeliveryStatus.SENT, DeliveryStatus.SKIPPED, DeliveryStatus.FAILED)


@jobs.job
def send_message(message_id: int) -> dict:
    """Send every pending delivery of one message, each at most once."""
    message = db.session.get(MailMessage, message_id)
    if message is None:
        return {"sent": 0}
    counts = {"sent": 0, "skipped": 0, "failed": 0}
    tried: set[int] = set()  # a failure waits for the sweeper rather than being retried at once
    while claimed := _claim(message_id, exclude=tried):
        for delivery in claimed:
            tried.add(delivery.id)
            counts[_deliver(message, delivery)] += 1
        db.session.commit()
    _erase_sensitive_bodies(message)
    db.session.commit()
    log.info("message %s: %s", message_id, counts)
    return counts


def _claim(message_id: int, exclude: set[int]) -> list[MailDelivery]:
    """Mark a batch of pending deliveries as sending, so two workers never take the same one.

    Returns [] only when nothing is left to claim: losing a whole batch to another
    worker moves on to the next one rather than ending the job.
    """
    while ids := _pending_ids(message_id, exclude):
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
            return list(db.session.scalars(select(MailDelivery).where(MailDelivery.id.in_(claimed))))
        exclude.update(ids)
    return []


def _pending_ids(message_id: int, exclude: set[int]) -> list[int]:
    query = (
        select(MailDelivery.id)
        .where(
            MailDelivery.message_id == message_id,
            MailDelivery.status == DeliveryStatus.PENDING,
            MailDelivery.id.not_in(exclude),
        )
        .order_by(MailDelivery.id)
        .limit(BATCH)
    )
    return list(db.session.scalars(query))


def _deliver(message: MailMessage, delivery: MailDelivery) -> str:
    """Re-check the recipient at send time, then send; record the outcome on the row."""
    delivery.attempts += 1
    delivery.updated_at = utcnow()
    reason = _skip_reason(delivery)
    if reason:
        delivery.status, delivery.last_error = DeliveryStatus.SKIPPED, reason
        return "skipped"
    envelope = Envelope(
        to=delivery.to_email,
        subject=message.subject,
        text=message.text_body or "",
        html=message.html_body,
        sender=current_app.config["MAIL_FROM"],
        headers={"X-Category": message.category.value},
    )
    result = backend().send([envelope])[0]
    if result.ok:
        delivery.status, delivery.provider_id, delivery.sent_at = (
            DeliveryStatus.SENT,
            result.provider_id,
            utcnow(),
        )
        return "sent"
    delivery.last_error = (result.error or "unknown error")[:500]
    delivery.status = DeliveryStatus.FAILED if delivery.attempts >= MAX_ATTEMPTS else DeliveryStatus.PENDING
    return "failed"


def _skip_reason(delivery: MailDelivery) -> str | None:
    """Deactivated accounts get nothing, administrative mail included (P11)."""
    if delivery.user_id is None:
        return None
    user = db.session.get(User, delivery.user_id)
    if user is None or not user.active:
        return "account deactivated"
    return None


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
def sweep() -> dict:
    """Re-enqueue messages whose deliveries sat pending (or stuck sending) too long."""
    now = utcnow()
    lost = and_(
        MailDelivery.status == DeliveryStatus.PENDING,
        or_(
            MailDelivery.updated_at < now - current_app.config["SWEEP_PENDING_AFTER"],
            MailDelivery.attempts > 0,
        ),
    )
    # A worker killed mid-send leaves rows in "sending"; after a while they are sent again.
    stuck = and_(MailDelivery.status == DeliveryStatus.SENDING, MailDelivery.updated_at < now - STUCK_AFTER)
    message_ids = list(db.session.scalars(select(MailDelivery.message_id).where(or_(lost, stuck)).distinct()))
    db.session.execute(
        update(MailDelivery)
        .where(stuck)
        .values(status=DeliveryStatus.PENDING, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    for message_id in message_ids:
        jobs.enqueue(send_message, message_id, queue="mail")
    db.session.commit()
    # The session store has its own connection: prune after our transaction is closed.
    pruned = sessions.prune_expired()
    return {"messages": len(message_ids), "sessions_pruned": pruned}
