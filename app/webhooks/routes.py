"""Webhooks blueprint: Mailgun tells us of bounces, complaints and unsubscribes."""

from __future__ import annotations

import hashlib
import hmac
import time

from flask import Blueprint, abort, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Suppression, WebhookToken
from app.models.base import utcnow
from app.permissions import public

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

# What each Mailgun event means for the address: (reason, also blocks administrative mail?)
SUPPRESSING_EVENTS = {
    "complained": ("complaint", False),
    "unsubscribed": ("unsubscribed", False),
}


# Takes no CSRF token: listed, with the reason, in app.security.CSRF_EXEMPT.
@bp.route("/mailgun", methods=["POST"])
@public
def mailgun():
    """Verify Mailgun's signature, refuse stale and replayed calls, record suppressions."""
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
    if not _first_time(str(signature.get("token"))):
        return jsonify(error="replayed token"), 406
    event = payload.get("event-data")
    if isinstance(event, dict):
        _record(event)
    db.session.commit()
    return jsonify(status="ok")


def _genuine(key: str, signature: dict) -> bool:
    """HMAC-SHA256 of timestamp + token with the webhook signing key, compared in constant time."""
    timestamp, token, given = (str(signature.get(k, "")) for k in ("timestamp", "token", "signature"))
    if not (timestamp and token and given):
        return False
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), given.encode())


def _fresh(timestamp) -> bool:
    try:
        age = abs(time.time() - float(timestamp))
    except (TypeError, ValueError):
        return False
    return age <= current_app.config["WEBHOOK_MAX_AGE_SECONDS"]


def _first_time(token: str) -> bool:
    """Remember the token; a token seen before is a replay."""
    try:
        with db.session.begin_nested():
            db.session.add(WebhookToken(token=token[:100], seen_at=utcnow()))
    except IntegrityError:
        return False
    return True


def _record(event: dict) -> None:
    """Turn a permanent failure, a complaint or an unsubscribe into a suppression we keep."""
    name = event.get("event")
    recipient = str(event.get("recipient", "")).strip().lower()[:254]
    if not recipient:
        return
    if name == "failed" and event.get("severity") == "permanent":
        reason, blocks_administrative = "bounce", True
    elif name in SUPPRESSING_EVENTS:
        reason, blocks_administrative = SUPPRESSING_EVENTS[name]
    else:
        return
    existing = db.session.scalar(select(Suppression).where(Suppression.email == recipient))
    if existing is None:
        db.session.add(
            Suppression(email=recipient, reason=reason, blocks_administrative=blocks_administrative)
        )
    elif blocks_administrative and not existing.blocks_administrative:
        existing.reason, existing.blocks_administrative = reason, True
