"""What the provider tells us after sending (Mailgun's webhook events), read faithfully.

Mailgun reports a hard bounce as ``failed`` with ``severity: permanent``, ``reason: bounce``
(or ``generic``) and the receiving server's 5xx code; mail it refused because the address is
on one of *its own* lists as ``failed``/``permanent`` with ``reason: suppress-bounce``,
``suppress-complaint`` or ``suppress-unsubscribe`` (code 605, nothing was tried); mail it gave
up on after retrying for hours as ``reason: old``. Only the first says the address is dead.

Each event is matched to the deliveries it is about, by the provider's message id (the send
call's answer, stored on every delivery of the batch; Mailgun's webhook drops the angle
brackets) and the recipient. The message page counts what was matched; the address-level
consequences are in ``SUPPRESSING``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select

from app.extensions import db
from app.models import DeliveryEvent, MailDelivery, Suppression, SuppressionLift
from app.models.base import utcnow
from app.providers import ADDRESS

HARD_BOUNCE = "bounce"
# A suppression's reason -> (Mailgun's list it stands for, does it stop administrative mail too?).
# A dead address gets nothing; everything else stops optional mail only (P11: an active account
# still gets its account and policy notices, and Mailgun may refuse them itself).
SUPPRESSING: dict[str, tuple[str, bool]] = {
    HARD_BOUNCE: ("bounces", True),
    "complaint": ("complaints", False),
    "unsubscribed": ("unsubscribes", False),
    "suppress-bounce": ("bounces", False),
    "suppress-complaint": ("complaints", False),
    "suppress-unsubscribe": ("unsubscribes", False),
}
PROVIDER_LISTS = ("bounces", "complaints", "unsubscribes")


@dataclass(frozen=True)
class Meaning:
    """What one event says: the delivery event to record and the suppression it calls for."""

    kind: str | None = None  # bounced, complained, unsubscribed, dropped; None: nothing to keep
    suppression: str | None = None  # a reason of SUPPRESSING, or None


def meaning_of(event: dict) -> Meaning:
    """Read one Mailgun event: only a real hard bounce marks an address dead."""
    name = event.get("event")
    if name == "complained":
        return Meaning("complained", "complaint")
    if name == "unsubscribed":
        return Meaning("unsubscribed", "unsubscribed")
    if name != "failed":
        return Meaning()
    reason = str(event.get("reason") or "")
    if reason == "old":
        # Retried until Mailgun gave up (its last try may even say "temporary"): about the
        # moment, not the address.
        return Meaning("dropped")
    if event.get("severity") != "permanent":
        return Meaning()  # Mailgun retries by itself
    if reason.startswith("suppress-") and reason in SUPPRESSING:
        return Meaning("dropped", reason)
    if reason in (HARD_BOUNCE, "generic") and 500 <= _code(event) < 600:
        return Meaning("bounced", HARD_BOUNCE)
    # espblock, a refused message, a permanent failure with no 5xx: the message, not the address.
    return Meaning("dropped")


def _code(event: dict) -> int:
    status = event.get("delivery-status")
    code = status.get("code") if isinstance(status, dict) else None
    if isinstance(code, bool) or not isinstance(code, int | str):
        return 0
    try:
        return int(code)
    except ValueError:
        return 0


def _detail(event: dict) -> str | None:
    """The receiving server's code and words, without any address they quote."""
    status = event.get("delivery-status")
    if not isinstance(status, dict):
        return None
    words = status.get("description") or status.get("message") or ""
    words = " ".join(ADDRESS.sub("[address]", str(words)).split())
    code = _code(event)
    text = f"{code} {words}".strip() if code else words
    return text[:200] or None


def recipient_of(event: dict) -> str:
    """The event's recipient as we store addresses (trimmed, lower case)."""
    return str(event.get("recipient") or "").strip().lower()[:254]


def message_id_of(event: dict) -> str:
    """The provider's message id without angle brackets (the send call answers with them)."""
    message = event.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    value = headers.get("message-id") if isinstance(headers, dict) else None
    return bare_message_id(value) if isinstance(value, str) else ""


def bare_message_id(value: str) -> str:
    """``<id@domain>`` and ``id@domain`` are the same message id."""
    return value.strip().removeprefix("<").removesuffix(">").strip()[:198]


def _occurred_at(event: dict) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(event["timestamp"]), UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return None


def deliveries_of(message_id: str, recipient: str) -> list[MailDelivery]:
    """The deliveries of this provider message to this address (a batch shares one id)."""
    if not message_id or not recipient:
        return []
    query = select(MailDelivery).where(
        MailDelivery.provider_id.in_([message_id, f"<{message_id}>"]),
        func.lower(MailDelivery.to_email) == recipient,
    )
    return list(db.session.scalars(query))


def record(event: dict) -> str:
    """Keep what an event says; "recorded", "ignored" (nothing to keep) or "unknown" (no match).

    "unknown" is an event about mail we have no record of sending (yet: a webhook can outrun
    the send's commit); the webhook answers so that Mailgun tries again later.
    """
    meaning = meaning_of(event)
    if meaning.kind is None:
        return "ignored"
    recipient, message_id = recipient_of(event), message_id_of(event)
    if not recipient or not message_id:
        return "ignored"  # nothing to match it with, now or on a retry
    deliveries = deliveries_of(message_id, recipient)
    if not deliveries:
        return "unknown"
    for delivery in deliveries:
        _add_once(delivery, meaning.kind, str(event.get("reason") or "")[:40] or None, _occurred_at(event))
    if meaning.suppression and not _refused_before_a_lift(recipient, meaning.suppression, deliveries):
        suppress(recipient, meaning.suppression, _detail(event))
    return "recorded"


def suppress_unmatched(event: dict) -> bool:
    """An event about mail we cannot match (yet) still says the address is dead, complained or
    left: keep that now, whatever comes of the match (the webhook asks to be told again for it,
    and Mailgun stops asking after a few hours). The provider's own refusals wait for a match."""
    meaning = meaning_of(event)
    recipient = recipient_of(event)
    if meaning.suppression not in (HARD_BOUNCE, "complaint", "unsubscribed") or not recipient:
        return False
    suppress(recipient, meaning.suppression, _detail(event))
    return True


def _add_once(delivery: MailDelivery, kind: str, reason: str | None, occurred_at: datetime | None) -> None:
    """One event of a kind per delivery, however often (and by however many calls) it is told."""
    exists = select(DeliveryEvent.id).where(
        DeliveryEvent.delivery_id == delivery.id, DeliveryEvent.kind == kind
    )
    if db.session.scalar(exists) is not None:
        return
    # A concurrent call telling the same event fails its commit on the unique constraint; the
    # webhook then answers so that Mailgun tells it again, and that time it is found here.
    db.session.add(
        DeliveryEvent(
            delivery_id=delivery.id,
            message_id=delivery.message_id,
            kind=kind,
            reason=reason,
            occurred_at=occurred_at,
        )
    )


def _refused_before_a_lift(recipient: str, reason: str, deliveries: Iterable[MailDelivery]) -> bool:
    """Is this a refusal by the provider's list that a lift here is removing (or removed after)?

    Mail sent before the provider forgot the address is refused on its stale list; that is no
    new reason to suppress it again (a real bounce or complaint is, and is not asked here).
    """
    if not reason.startswith("suppress-"):
        return False
    provider_list = SUPPRESSING[reason][0]
    lifts = db.session.scalars(
        select(SuppressionLift).where(SuppressionLift.email == recipient).order_by(SuppressionLift.id.desc())
    )
    lift = next((each for each in lifts if provider_list in lists_of(each.provider_lists)), None)
    if lift is None:
        return False
    if lift.done_at is None:
        return True
    sent = [d.sent_at for d in deliveries if d.sent_at is not None]
    return not sent or max(sent) <= lift.done_at


def lists_of(value: str | None) -> list[str]:
    """A stored "bounces,complaints" as a list, in Mailgun's order."""
    named = set((value or "").split(","))
    return [name for name in PROVIDER_LISTS if name in named]


def suppress(email: str, reason: str, detail: str | None = None) -> Suppression:
    """Add (or strengthen) the address's suppression; applying the same reason twice changes nothing."""
    provider_list, blocks_administrative = SUPPRESSING[reason]
    existing = db.session.scalar(select(Suppression).where(Suppression.email == email))
    if existing is None:
        created = Suppression(
            email=email,
            reason=reason,
            blocks_administrative=blocks_administrative,
            provider_lists=provider_list,
            detail=detail,
            created_at=utcnow(),
        )
        db.session.add(created)  # a concurrent first event for the address fails at commit (see above)
        return created
    lists = lists_of(f"{existing.provider_lists},{provider_list}")
    if lists != lists_of(existing.provider_lists):
        existing.provider_lists = ",".join(lists)
    if blocks_administrative and not existing.blocks_administrative:
        # A dead address outranks a complaint or the provider's list: nothing reaches it now.
        existing.reason, existing.blocks_administrative, existing.detail = reason, True, detail
    return existing


@dataclass
class Feedback:
    """What the provider reported about one message's deliveries after they were sent."""

    bounced: int = 0
    complained: int = 0
    unsubscribed: int = 0
    dropped: int = 0  # refused by the provider's own lists, or given up on


def feedback_for(message_id: int) -> Feedback:
    """Deliveries of the message per kind of provider event, in one grouped query."""
    rows = db.session.execute(
        select(DeliveryEvent.kind, func.count(func.distinct(DeliveryEvent.delivery_id)))
        .where(DeliveryEvent.message_id == message_id)
        .group_by(DeliveryEvent.kind)
    )
    feedback = Feedback()
    for kind, number in rows:
        if hasattr(feedback, kind):
            setattr(feedback, kind, number)
    return feedback
