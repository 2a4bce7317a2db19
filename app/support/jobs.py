"""The job that forwards a stored support request to Zendesk, and its sweeper.

``forward_request`` claims the request atomically (``UPDATE ... WHERE status='received'
RETURNING``), so two workers never file the same request, and a forwarded request is never
sent again. A temporary failure (429, 5xx, network) puts it back with a backoff or Zendesk's
``Retry-After`` and schedules the retry, for SUPPORT_GIVE_UP_AFTER (72 h, as mail); only then
is it failed. Every attempt after the first asks Zendesk for a ticket with our reference as
``external_id`` before creating one: an earlier attempt that timed out, lost its connection
or got a 5xx may have made the ticket, and the Idempotency-Key alone is not trusted to catch
it. While Zendesk is not configured the request simply waits. ``sweep_support`` (every
SWEEP_EVERY_SECONDS in the worker, or ``flask jobs sweep-support``) re-enqueues what a lost
job, a Redis outage, a dead worker or a missing configuration left behind, so nothing is
lost (P6, P16).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import and_, func, or_, select, update

from app import jobs, tenancy
from app.extensions import db
from app.models import SupportRequest, SupportStatus
from app.models.base import utcnow
from app.support.zendesk import PermanentFailure, TemporaryFailure, TicketRequest, ZendeskClient

log = logging.getLogger(__name__)

QUEUE = "default"
STUCK_AFTER = timedelta(minutes=15)  # a worker killed mid-call leaves the request "forwarding"
MAX_RETRY_SECONDS = 3600  # backoff doubles per attempt up to this, until SUPPORT_GIVE_UP_AFTER
NOT_CONFIGURED = "Zendesk is not configured yet; the request waits until it is."


def zendesk_client() -> ZendeskClient | None:
    """The client for the current config, or None (not configured, or configured wrongly)."""
    try:
        return ZendeskClient.from_config(current_app.config)
    except RuntimeError as error:  # the message names settings, never their values
        log.error("support requests wait: %s", error)
        return None


@jobs.job
def forward_request(request_id: int) -> str:
    """Send one stored request to Zendesk, at most once; say what came of it."""
    with tenancy.unscoped():  # the support queue is every school's (and the contact form's)
        return _forward(request_id)


def _forward(request_id: int) -> str:
    """Claim the request, file the ticket, record the outcome."""
    client = zendesk_client()
    if client is None:
        _wait_for_configuration(request_id)
        return "waiting"
    support_request = _claim(request_id)
    if support_request is None:
        return "skipped"  # forwarded or failed already, another worker has it, or not due yet
    try:
        ticket_id = _existing_ticket(client, support_request)
        if ticket_id is None:
            ticket_id = client.create_ticket(_ticket_of(support_request))
    except TemporaryFailure as failure:
        if _past_give_up(support_request):
            _fail(support_request, f"gave up after {_give_up_hours()} hours: {failure.reason}")
            return "failed"
        _retry_later(support_request, failure.reason, failure.retry_after)
        db.session.commit()
        return "retry"
    except PermanentFailure as failure:
        if failure.credentials_refused:
            # Our token is wrong, not the request: keep it until the operator fixes the settings.
            _retry_later(support_request, failure.reason, MAX_RETRY_SECONDS)
            db.session.commit()
            return "retry"
        _fail(support_request, failure.reason)
        return "failed"
    now = utcnow()
    support_request.status = SupportStatus.FORWARDED
    support_request.zendesk_ticket_id = ticket_id
    support_request.forwarded_at = support_request.updated_at = now
    support_request.last_error = support_request.next_attempt_at = None
    db.session.commit()
    return "forwarded"


def _existing_ticket(client: ZendeskClient, support_request: SupportRequest) -> int | None:
    """The ticket an earlier attempt may have made; the first attempt cannot have one."""
    if support_request.attempts <= 1:
        return None
    return client.find_ticket(support_request.reference)


def _past_give_up(support_request: SupportRequest) -> bool:
    """Whether the request has waited for Zendesk as long as we keep trying."""
    return utcnow() - support_request.created_at >= current_app.config["SUPPORT_GIVE_UP_AFTER"]


def _give_up_hours() -> int:
    return round(current_app.config["SUPPORT_GIVE_UP_AFTER"].total_seconds() / 3600)


def _fail(support_request: SupportRequest, reason: str) -> None:
    """Failed for good: kept, with the reason, for the support console and the requester."""
    support_request.status = SupportStatus.FAILED
    support_request.last_error = reason[:500]
    support_request.next_attempt_at = None
    support_request.updated_at = utcnow()
    db.session.commit()
    log.error("support request %s failed for good: %s", support_request.reference, reason)


def _claim(request_id: int) -> SupportRequest | None:
    """Move a due request from received to forwarding; None if this worker did not get it."""
    now = utcnow()
    claimed = db.session.scalars(
        update(SupportRequest)
        .where(
            SupportRequest.id == request_id,
            SupportRequest.status == SupportStatus.RECEIVED,
            or_(SupportRequest.next_attempt_at.is_(None), SupportRequest.next_attempt_at <= now),
        )
        .values(status=SupportStatus.FORWARDING, attempts=SupportRequest.attempts + 1, updated_at=now)
        .returning(SupportRequest.id)
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    if not claimed:
        return None
    query = select(SupportRequest).where(SupportRequest.id == request_id)
    return db.session.scalars(query.execution_options(populate_existing=True)).one()


def _ticket_of(support_request: SupportRequest) -> TicketRequest:
    """The only fields that leave for Zendesk."""
    return TicketRequest(
        reference=support_request.reference,
        kind=support_request.kind.value,
        name=support_request.name,
        email=support_request.email,
        subject=support_request.subject,
        message=support_request.message,
    )


def _retry_later(support_request: SupportRequest, reason: str, retry_after: float | None) -> None:
    """Back to received with a backoff (or Zendesk's Retry-After), and schedule the retry."""
    base = float(current_app.config["SUPPORT_RETRY_BASE_SECONDS"])
    exponent = min(max(support_request.attempts - 1, 0), 20)
    delay = max(retry_after or 0.0, min(base * 2**exponent, MAX_RETRY_SECONDS))
    now = utcnow()
    support_request.status = SupportStatus.RECEIVED
    support_request.last_error = reason[:500]
    support_request.next_attempt_at = now + timedelta(seconds=delay)
    support_request.updated_at = now
    jobs.enqueue_in(delay, forward_request, support_request.id, queue=QUEUE)
    log.warning("support request %s retries in %.1fs (%s)", support_request.reference, delay, reason)


def _wait_for_configuration(request_id: int) -> None:
    """Leave the request received and due: the sweeper sends it once Zendesk is configured."""
    now = utcnow()
    db.session.execute(
        update(SupportRequest)
        .where(SupportRequest.id == request_id, SupportRequest.status == SupportStatus.RECEIVED)
        .values(last_error=NOT_CONFIGURED, next_attempt_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    log.info("support request #%s waits for Zendesk to be configured", request_id)


@jobs.job
@jobs.repeating
def sweep_support() -> dict:
    """Re-enqueue requests left received too long (or due for their retry), or stuck forwarding."""
    with tenancy.unscoped():  # every school's requests, on purpose
        return _sweep_requests()


def _sweep_requests() -> dict:
    """Reset stuck requests and enqueue the lost or due ones."""
    now = utcnow()
    stuck = and_(
        SupportRequest.status == SupportStatus.FORWARDING, SupportRequest.updated_at < now - STUCK_AFTER
    )
    db.session.execute(
        update(SupportRequest)
        .where(stuck)
        .values(status=SupportStatus.RECEIVED, next_attempt_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if zendesk_client() is None:
        waiting = db.session.scalar(
            select(func.count(SupportRequest.id)).where(SupportRequest.status == SupportStatus.RECEIVED)
        )
        db.session.commit()
        return {"requests": 0, "waiting": waiting, "configured": False}
    waiting_too_long = and_(
        SupportRequest.next_attempt_at.is_(None),
        SupportRequest.updated_at < now - current_app.config["SWEEP_PENDING_AFTER"],
    )
    lost = and_(
        SupportRequest.status == SupportStatus.RECEIVED,
        or_(waiting_too_long, SupportRequest.next_attempt_at <= now),
    )
    ids = list(db.session.scalars(select(SupportRequest.id).where(lost).order_by(SupportRequest.id)))
    for request_id in ids:
        jobs.enqueue(forward_request, request_id, queue=QUEUE)
    db.session.commit()
    return {"requests": len(ids), "configured": True}
