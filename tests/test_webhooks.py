"""Mailgun webhooks: signed, fresh, never replayed; failures become our own suppressions."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Suppression

KEY = "webhook-signing-key-for-tests"


@pytest.fixture
def hook(app, build_app):
    return build_app(MAILGUN_WEBHOOK_SIGNING_KEY=KEY).test_client(use_cookies=False)


def _signed(event: dict, *, timestamp=None, token="token-1", key=KEY) -> dict:
    timestamp = str(int(timestamp if timestamp is not None else time.time()))
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": event,
    }


def _suppressions():
    db.session.expire_all()
    return {s.email: (s.reason, s.blocks_administrative) for s in db.session.scalars(select(Suppression))}


def test_permanent_failure_complaint_and_unsubscribe_become_suppressions(hook):
    events = [
        {"event": "failed", "severity": "permanent", "recipient": "Dead@Example.org"},
        {"event": "failed", "severity": "temporary", "recipient": "busy@example.org"},
        {"event": "complained", "recipient": "angry@example.org"},
        {"event": "unsubscribed", "recipient": "done@example.org"},
        {"event": "delivered", "recipient": "fine@example.org"},
    ]
    for n, event in enumerate(events):
        assert hook.post("/webhooks/mailgun", json=_signed(event, token=f"t{n}")).status_code == 200
    assert _suppressions() == {
        "dead@example.org": ("bounce", True),
        "angry@example.org": ("complaint", False),
        "done@example.org": ("unsubscribed", False),
    }


def test_bad_signature_stale_timestamp_replay_and_malformed_json_change_nothing(hook):
    event = {"event": "complained", "recipient": "x@example.org"}
    forged = _signed(event, key="not-the-key")
    assert hook.post("/webhooks/mailgun", json=forged).status_code == 406
    stale = _signed(event, timestamp=time.time() - 16 * 60, token="old")
    assert hook.post("/webhooks/mailgun", json=stale).status_code == 406
    assert (
        hook.post("/webhooks/mailgun", data="{not json", content_type="application/json").status_code == 400
    )
    assert hook.post("/webhooks/mailgun", json={"signature": "x"}).status_code == 400
    assert hook.post("/webhooks/mailgun", json=[1, 2]).status_code == 400
    assert _suppressions() == {}

    genuine = _signed({"event": "complained", "recipient": "y@example.org"}, token="once")
    assert hook.post("/webhooks/mailgun", json=genuine).status_code == 200
    replay = _signed({"event": "failed", "severity": "permanent", "recipient": "z@example.org"}, token="once")
    assert hook.post("/webhooks/mailgun", json=replay).status_code == 406
    assert _suppressions() == {"y@example.org": ("complaint", False)}


def test_a_later_bounce_hardens_a_complaint(hook):
    hook.post(
        "/webhooks/mailgun", json=_signed({"event": "complained", "recipient": "a@example.org"}, token="1")
    )
    bounce = {"event": "failed", "severity": "permanent", "recipient": "a@example.org"}
    hook.post("/webhooks/mailgun", json=_signed(bounce, token="2"))
    assert _suppressions() == {"a@example.org": ("bounce", True)}
    assert db.session.scalar(select(func.count(Suppression.id))) == 1


def test_webhook_is_off_without_a_signing_key(client):
    assert client.post("/webhooks/mailgun", json=_signed({"event": "complained"})).status_code == 404
