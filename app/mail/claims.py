"""A send run's hold on deliveries: claimed under a lease, handed over under a batch id, settled.

The rules that let a delivery go out once even when a worker dies in the middle of a call:

* **Claims carry a lease.** A claimed row ("sending") names its run in ``claimed_by`` and is
  held until ``lease_until``: MAIL_LEASE_SECONDS from the claim, renewed before each provider
  call to the call's timeout plus MAIL_LEASE_SECONDS. A lease therefore runs out only once the
  holder cannot still be waiting for the provider (it died, or it lost its database), and the
  sweeper then hands the row on to any worker. Every write a run makes after its claim is
  guarded by its name, so a run that lost its rows writes nothing over the next holder's.
* **The batch id is committed before the call.** ``batch_id`` and ``batch_at`` name the call
  the row was last handed to. A row that comes back to a run still carrying a batch id has no
  recorded answer (its holder died, or the answer was lost): the provider is asked which
  recipients of that batch it accepted (``backend.accepted``), those are marked sent, and the
  rest are sent again under a new id, but only once the batch is older than the provider's
  event lag (``backend.events_lag``), since an accepted batch may show a few seconds late.
* **Outages delay, never drop.** A temporary failure puts the rows back as pending with a
  backoff; only MAIL_GIVE_UP_AFTER (72 h) after a row's first attempt is it failed.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, or_, select, update

from app.extensions import db
from app.mail.backends import Batch, PermanentFailure, TemporaryFailure, backend
from app.models import DeliveryStatus, MailDelivery, MailMessage
from app.models.base import rowcount, utcnow


@dataclass
class Run:
    """One run of the send job: the name its claims carry, and the highest delivery id it has seen."""

    holder: str
    after_id: int = 0


def new_run() -> Run:
    """A run named for where it works (host, RQ job or process) plus a token of its own."""
    from rq import get_current_job

    job = get_current_job()
    where = f"job {job.id}" if job is not None else f"pid {os.getpid()}"
    return Run(holder=f"{socket.gethostname()[:30]} {where} {uuid.uuid4().hex[:8]}"[:100])


def lease_seconds() -> float:
    """How long a claim lasts between renewals (MAIL_LEASE_SECONDS)."""
    return float(current_app.config["MAIL_LEASE_SECONDS"])


def call_lease() -> timedelta:
    """A lease that outlasts one provider call (the backend's timeout) by MAIL_LEASE_SECONDS."""
    return timedelta(seconds=backend().timeout + lease_seconds())


def settle_seconds() -> float:
    """How long after a call's start its batch's events can be trusted to be complete."""
    return call_lease().total_seconds() + backend().events_lag


def claim(message_id: int, run: Run, limit: int) -> list[MailDelivery]:
    """Mark a batch of due pending deliveries as this run's, so two workers never take the same one.

    Returns [] only when nothing is left to claim: losing a whole batch to another worker moves
    on to the next one rather than ending the job.
    """
    while ids := _due_ids(message_id, run.after_id, limit):
        run.after_id = ids[-1]
        now = utcnow()
        # RETURNING gives exactly the rows this run moved; re-reading "sending" rows would also
        # pick up rows another worker claimed in between, and both would send them.
        claimed = db.session.scalars(
            update(MailDelivery)
            .where(MailDelivery.id.in_(ids), MailDelivery.status == DeliveryStatus.PENDING)
            .values(
                status=DeliveryStatus.SENDING,
                claimed_by=run.holder,
                lease_until=now + timedelta(seconds=lease_seconds()),
                updated_at=now,
            )
            .returning(MailDelivery.id)
            .execution_options(synchronize_session=False)
        ).all()
        if claimed:
            _hold_message(message_id, now)
        db.session.commit()
        if claimed:
            return rows(claimed)
    return []


def _hold_message(message_id: int, now: datetime) -> None:
    """The message has a live run for as long as this batch can take (see ``lapsed_runs``)."""
    db.session.execute(
        update(MailMessage)
        .where(MailMessage.id == message_id)
        .values(sending_until=now + call_lease())
        .execution_options(synchronize_session=False)
    )


def release_message(message_id: int) -> None:
    """The run is done with the message: nothing of it is waiting on a run any more."""
    db.session.execute(
        update(MailMessage)
        .where(MailMessage.id == message_id)
        .values(sending_until=None)
        .execution_options(synchronize_session=False)
    )


def lapsed_runs(now: datetime):
    """Messages whose run ended without saying so (a killed worker between two batches)."""
    return select(MailMessage.id).where(MailMessage.sending_until < now)


def live_runs(now: datetime):
    """Messages a run is working on now: their pending rows are not lost, just not reached yet."""
    return select(MailMessage.id).where(MailMessage.sending_until >= now)


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


def rows(ids: Iterable[int]) -> list[MailDelivery]:
    """These deliveries, freshly read, in id order (one query)."""
    query = select(MailDelivery).where(MailDelivery.id.in_(list(ids))).order_by(MailDelivery.id)
    return list(db.session.scalars(query))


def _held(ids: Iterable[int], run: Run):
    """The rows among ``ids`` that this run still holds."""
    return and_(
        MailDelivery.id.in_(list(ids)),
        MailDelivery.claimed_by == run.holder,
        MailDelivery.status == DeliveryStatus.SENDING,
    )


def renew(ids: Iterable[int], run: Run, lease: timedelta) -> list[int]:
    """Extend the lease on the rows this run still holds (committed); returns their ids."""
    now = utcnow()
    held = db.session.scalars(
        update(MailDelivery)
        .where(_held(ids, run))
        .values(lease_until=now + lease, updated_at=now)
        .returning(MailDelivery.id)
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    return sorted(held)


# A row in "sending" without a lease was claimed by code from before leases (a rolling deploy
# runs old and new workers side by side). Its holder may still be in a call that can last the
# old timeout; reclaiming it sooner than that would send it twice.
UNLEASED_STUCK_AFTER = timedelta(minutes=15)


def expired(now: datetime):
    """Claims whose lease has run out (rows claimed without a lease: after UNLEASED_STUCK_AFTER)."""
    unleased = and_(
        MailDelivery.lease_until.is_(None),
        MailDelivery.updated_at < now - UNLEASED_STUCK_AFTER,
    )
    return and_(
        MailDelivery.status == DeliveryStatus.SENDING,
        or_(MailDelivery.lease_until < now, unleased),
    )


# -- asking the provider about a batch whose answer was lost -------------------------------------------


@dataclass
class Recovery:
    """What asking the provider decided for rows that carried an earlier batch id."""

    to_send: list[MailDelivery]  # not accepted: send under a new batch id (with the rows that had none)
    recovered: int = 0  # accepted back then: now marked sent
    waiting: list[MailDelivery] = field(default_factory=list)  # too recent to tell: ask again at wake_at
    wake_at: datetime | None = None
    unreadable: list[MailDelivery] = field(default_factory=list)  # the provider could not say: retry
    reason: str = ""


def recover(claimed: list[MailDelivery], run: Run) -> Recovery:
    """Settle rows that were handed to the provider before and came back without an answer."""
    batches: dict[str, list[MailDelivery]] = defaultdict(list)
    for delivery in claimed:
        if delivery.batch_id:
            batches[delivery.batch_id].append(delivery)
    if not batches:
        return Recovery(to_send=claimed)
    # Asking takes a call or a few (a page per 300 recipients); real pages come back in well under
    # a second. Should the lease run out meanwhile, another run may ask too: harmless, as only
    # the run that still holds the rows at hand-over sends them.
    claimed = rows(renew([d.id for d in claimed], run, call_lease()))
    result = Recovery(to_send=[d for d in claimed if not d.batch_id])
    by_batch: dict[str, list[MailDelivery]] = defaultdict(list)
    for delivery in claimed:
        if delivery.batch_id:
            by_batch[delivery.batch_id].append(delivery)
    for batch_id, group in by_batch.items():
        _ask(batch_id, group, result, run)
    return result


def _ask(batch_id: str, group: list[MailDelivery], result: Recovery, run: Run) -> None:
    """Sort one earlier batch's rows into accepted (marked sent), to send, waiting and unreadable."""
    handed_at = min(d.batch_at or d.updated_at for d in group)
    # The provider may take the batch until the call's deadline; its event may then show up to
    # the event lag later. Only after both can "not among the accepted" mean "never taken".
    settled_at = handed_at + timedelta(seconds=settle_seconds())
    # What was asked is what was shown when the asking began: a page read after settled_at
    # of a query begun before it may still lack an event that showed in between.
    asked_at = utcnow()
    try:
        accepted = backend().accepted(batch_id, handed_at, until=handed_at + call_lease())
    except (TemporaryFailure, PermanentFailure) as failure:
        result.unreadable.extend(group)
        result.reason = f"could not ask the provider whether an earlier try went through: {failure.reason}"
        return
    now = utcnow()
    sent: dict[str, list[int]] = defaultdict(list)
    for delivery in group:
        provider_id = accepted.get(delivery.to_email.lower())
        if provider_id is not None:
            sent[provider_id].append(delivery.id)
        elif asked_at >= settled_at:
            result.to_send.append(delivery)  # the provider never took it: it goes again
        else:
            result.waiting.append(delivery)
            result.wake_at = max(result.wake_at or settled_at, settled_at)
    for provider_id, ids in sent.items():
        result.recovered += _mark_sent(ids, provider_id, run, now)


def _mark_sent(ids: list[int], provider_id: str, run: Run, now: datetime) -> int:
    """The provider had accepted them: sent, with the id it gave them (rows this run still holds)."""
    sent = {"status": DeliveryStatus.SENT, "provider_id": provider_id, "sent_at": now}
    return _settle(ids, run, **sent, last_error=None, next_attempt_at=None)


def wait_for_events(deliveries: list[MailDelivery], wake_at: datetime, run: Run) -> int:
    """Too soon to tell whether the earlier batch was accepted: pending again until ``wake_at``."""
    ids = [d.id for d in deliveries]
    return _settle(ids, run, status=DeliveryStatus.PENDING, next_attempt_at=wake_at)


def set_aside(ids: list[int], run: Run, status: DeliveryStatus, reason: str | None) -> int:
    """Not sent now, for a reason of the recipient's (skipped, or kept for the digest)."""
    return _settle(ids, run, status=status, last_error=reason)


# -- the call and what came of it -----------------------------------------------------------------------


def hand_over(batch: Batch, deliveries: list[MailDelivery], run: Run) -> list[int]:
    """Give the batch a new id and record it, with a lease for the call, before the call (committed).

    Returns the ids still held (normally all); ``batch`` keeps only their recipients.
    """
    batch.batch_id = uuid.uuid4().hex
    now = utcnow()
    held = set(
        db.session.scalars(
            update(MailDelivery)
            .where(_held([d.id for d in deliveries], run))
            .values(batch_id=batch.batch_id, batch_at=now, lease_until=now + call_lease(), updated_at=now)
            .returning(MailDelivery.id)
            .execution_options(synchronize_session=False)
        ).all()
    )
    db.session.commit()
    batch.recipients = [r for r in batch.recipients if r.delivery_id in held]
    return sorted(held)


def record_sent(ids: list[int], provider_ids: dict[int, str], run: Run) -> int:
    """The provider took the batch: sent, each with its provider id (one UPDATE per distinct id)."""
    now = utcnow()
    by_provider_id: dict[str | None, list[int]] = defaultdict(list)
    for delivery_id in ids:
        by_provider_id[provider_ids.get(delivery_id)].append(delivery_id)
    sent = 0
    for provider_id, group in by_provider_id.items():
        sent += _settle(
            group,
            run,
            status=DeliveryStatus.SENT,
            provider_id=provider_id,
            sent_at=now,
            last_error=None,
            next_attempt_at=None,
        )
    return sent


def record_failed(ids: list[int], run: Run, reason: str) -> int:
    """Refused for good: failed, with the reason (no batch left to ask about)."""
    failed = {"status": DeliveryStatus.FAILED, "last_error": reason[:500]}
    return _settle(ids, run, **failed, batch_id=None, batch_at=None)


def put_back(ids: list[int], run: Run, reason: str, delay: float, *, keep_batch: bool) -> dict[str, int]:
    """Pending again after ``delay`` seconds; failed once MAIL_GIVE_UP_AFTER has passed since the
    first attempt. ``keep_batch``: the provider may have taken it, so it is asked before a resend."""
    now = utcnow()
    forget = {} if keep_batch else {"batch_id": None, "batch_at": None}
    too_old = MailDelivery.first_attempt_at <= now - current_app.config["MAIL_GIVE_UP_AFTER"]
    hours = current_app.config["MAIL_GIVE_UP_AFTER"].total_seconds() / 3600
    failed = _settle(
        ids,
        run,
        too_old,
        status=DeliveryStatus.FAILED,
        last_error=f"gave up after {hours:g} hours: {reason}"[:500],
        **forget,
    )
    retry = _settle(
        ids,
        run,
        status=DeliveryStatus.PENDING,
        last_error=reason[:500],
        next_attempt_at=now + timedelta(seconds=delay),
        **forget,
    )
    return {"retry": retry, "failed": failed}


def _settle(ids: list[int], run: Run, *criteria, **values) -> int:
    """Write an outcome on the rows among ``ids`` this run still holds; how many."""
    if not ids:
        return 0
    statement = (
        update(MailDelivery)
        .where(_held(ids, run), *criteria)
        .values(lease_until=None, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return rowcount(db.session.execute(statement))
