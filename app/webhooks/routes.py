"""Webhooks blueprint: Mailgun tells us of bounces, complaints and unsubscribes.

Mailgun signs each call (HMAC of timestamp + token) and retries one it got no 200 for, for
about 8 hours, with the same timestamp, token and signature. So: a forged signature or a
timestamp outside the window is refused for good (406: Mailgun does not retry); a token seen
before is a retry of a call already taken and is answered 200 with nothing done again; an
event about mail we have no record of (yet) is answered 503, to be told again later.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from flask import Blueprint, abort, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.mail import provider_events
from app.mail.suppressions import prune_webhook_tokens
from app.models import WebhookToken
from app.models.base import utcnow
from app.permissions import public

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
log = logging.getLogger(__name__)

# How long Mailgun should wait before telling us again of what we could not take now.
UNKNOWN_RETRY_AFTER = "300"


# Takes no CSRF token: listed, with the reason, in app.security.CSRF_EXEMPT.
@bp.route("/mailgun", methods=["POST"])
@public
def mailgun():
    """Verify Mailgun's signature and freshness, take each call once, keep what the event says."""
    key = current_app.config.get("MAILGUN_WEBHOOK_SIGNING_KEY")
    if not key:
        abort(404)
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict) or not isinstance(payload.get("signature"), dict):
        return jsonify(error="malformed payload"), 400
    signature = payload["signature"]
    if not _genuine(key, signature):
        return jsonify(error="bad signature"), 406
    if not _fresh(signature.get("timestamp")):
        return jsonify(error="stale timestamp"), 406
    token = str(signature.get("token"))[:100]
    if _taken(token):
        return _already_taken()
    event = payload.get("event-data")
    try:
        db.session.add(WebhookToken(token=token, seen_at=utcnow()))
        db.session.flush()  # a concurrent call with this token fails here, once the first commits
        outcome = provider_events.record(event) if isinstance(event, dict) else "ignored"
        if outcome == "unknown":
            db.session.rollback()  # the token too: the retry must be taken, not answered as a repeat
            log.warning("mailgun webhook about mail we have no record of (%s)", event.get("event"))
            _keep_the_address_signal(event)
            return _tell_us_again("unknown message")
        prune_webhook_tokens()
        db.session.commit()
    except IntegrityError:
        # Another call got there first: the same call retried (its token), or another event
        # about the same delivery or address (told again later, it finds what that one wrote).
        db.session.rollback()
        return _already_taken() if _taken(token) else _tell_us_again("told at the same time as another")
    return jsonify(status=outcome)


def _keep_the_address_signal(event: dict) -> None:
    """A bounce, complaint or unsubscribe about mail not matched yet still suppresses the address."""
    try:
        if provider_events.suppress_unmatched(event):
            db.session.commit()
    except IntegrityError:
        db.session.rollback()  # a concurrent event for the address stored it first


def _taken(token: str) -> bool:
    """Was a call with this token taken before? (Its changes committed with it.)"""
    return db.session.scalar(select(WebhookToken.token).where(WebhookToken.token == token)) is not None


def _already_taken():
    """A retry of a call already taken: answered, so Mailgun stops; nothing is done again."""
    return jsonify(status="already taken")


def _tell_us_again(why: str):
    """Not taken now: any answer but 200 or 406 makes Mailgun retry the call later."""
    response = jsonify(error=f"{why}; tell us again later")
    response.status_code, response.headers["Retry-After"] = 503, UNKNOWN_RETRY_AFTER
    return response


def _genuine(key: str, signature: dict) -> bool:
    """HMAC-SHA256 of timestamp + token with the webhook signing key, compared in constant time."""
    timestamp, token, given = (str(signature.get(k, "")) for k in ("timestamp", "token", "signature"))
    if not (timestamp and token and given):
        return False
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), given.encode())


def _fresh(timestamp) -> bool:
    """Within Mailgun's retry window behind our clock, and no more than clock skew ahead of it."""
    try:
        age = utcnow().timestamp() - float(timestamp)
    except (TypeError, ValueError, OverflowError):
        return False
    config = current_app.config
    return -config["WEBHOOK_MAX_AHEAD_SECONDS"] <= age <= config["WEBHOOK_MAX_AGE_SECONDS"]
