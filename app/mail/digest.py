"""The daily digest: announcements and newsletters held for people who asked for one email a day."""

from __future__ import annotations

import logging
from itertools import groupby

from sqlalchemy import select

from app import jobs
from app.extensions import db
from app.mail.outbox import queue_email
from app.models import DeliveryStatus, MailDelivery, MailMessage, User
from app.models.base import utcnow

log = logging.getLogger(__name__)

DIGEST_TEMPLATE = "digest"


@jobs.job
@jobs.repeating
def send_digests() -> dict:
    """Gather every held delivery into one email per person and category, and queue it."""
    held = db.session.execute(
        select(MailDelivery, MailMessage)
        .join(MailMessage, MailMessage.id == MailDelivery.message_id)
        .where(MailDelivery.status == DeliveryStatus.DIGEST, MailDelivery.user_id.is_not(None))
        .order_by(MailDelivery.user_id, MailMessage.category, MailMessage.created_at)
    ).all()
    users = _users({delivery.user_id for delivery, _ in held})
    digests = 0
    for (user_id, category), group in groupby(held, key=lambda row: (row[0].user_id, row[1].category)):
        items = list(group)
        user = users.get(user_id)
        if user is None or not user.active:
            _settle(items, DeliveryStatus.SKIPPED, "account deactivated")
            continue
        digest = queue_email(
            DIGEST_TEMPLATE,
            [user],
            category=category,
            name=user.name,
            category_label=category.label,
            items=[{"subject": m.subject, "text": m.text_body or ""} for _, m in items],
        )
        _settle(items, DeliveryStatus.DIGESTED, f"in digest {digest.id}")
        digests += 1
    db.session.commit()
    log.info("digests queued: %d (from %d held deliveries)", digests, len(held))
    return {"digests": digests, "items": len(held)}


def _users(ids: set[int]) -> dict[int, User]:
    if not ids:
        return {}
    return {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(ids)))}


def _settle(items, status: DeliveryStatus, note: str) -> None:
    now = utcnow()
    for delivery, _message in items:
        delivery.status, delivery.last_error, delivery.updated_at = status, note, now
