"""The worker's half of a password reset, and its sweeper.

The web request only stores the address asked for (``PasswordResetRequest``) and enqueues
``handle_reset_request``, the same for every address; here the address is looked up and, for
an active account, the reset link is queued through the outbox. Taking the row is a
``DELETE ... RETURNING``, so two workers (or a job and the sweeper's copy of it) never send
two links for one request. ``sweep_reset_requests`` (every SWEEP_EVERY_SECONDS in the worker,
or ``flask jobs sweep-resets``) re-enqueues the requests a Redis outage or a lost job left
behind, and drops those older than RESET_REQUEST_GIVE_UP: a request its job keeps failing on
would otherwise be retried for ever, and a link asked for that long ago is no longer awaited.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, select

from app import jobs
from app.auth import services
from app.extensions import db
from app.models import PasswordResetRequest
from app.models.base import rowcount, utcnow

QUEUE = "mail"
RESET_REQUEST_GIVE_UP = timedelta(hours=1)
log = logging.getLogger(__name__)


@jobs.job
def handle_reset_request(request_id: int) -> str:
    """Take one stored request: email a reset link if its address has an active account."""
    email = db.session.scalar(
        delete(PasswordResetRequest)
        .where(PasswordResetRequest.id == request_id)
        .returning(PasswordResetRequest.email)
        .execution_options(synchronize_session=False)
    )
    if email is None:
        return "skipped"  # handled already: the sweeper's second copy, or another worker's
    services.send_password_reset(email)  # the token and the outbox rows, in this transaction
    db.session.commit()  # the row goes with the mail it caused, or neither does
    return "handled"


@jobs.job
@jobs.repeating
def sweep_reset_requests() -> dict:
    """Drop reset requests too old to matter; re-enqueue those that waited too long (their job
    was lost with Redis)."""
    now = utcnow()
    dropped = rowcount(
        db.session.execute(
            delete(PasswordResetRequest)
            .where(PasswordResetRequest.created_at < now - RESET_REQUEST_GIVE_UP)
            .execution_options(synchronize_session=False)
        )
    )
    if dropped:
        log.warning("dropped %d password reset requests not handled within an hour", dropped)
    waited = now - current_app.config["SWEEP_PENDING_AFTER"]
    ids = list(
        db.session.scalars(
            select(PasswordResetRequest.id)
            .where(PasswordResetRequest.created_at < waited)
            .order_by(PasswordResetRequest.id)
        )
    )
    for request_id in ids:
        jobs.enqueue(handle_reset_request, request_id, queue=QUEUE)
    db.session.commit()  # the jobs go to Redis after the commit
    return {"requests": len(ids), "dropped": dropped}
