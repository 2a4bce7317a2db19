"""Shared by the webhook and suppression tests (no tests here): an app that sends through the
fake Mailgun and takes its signed webhooks, and posting one as Mailgun would."""

from __future__ import annotations

from flask import Flask

from app.mail.mailgun import MailgunBackend
from tests.fakes.mailgun import FakeMailgun, webhook_body

SIGNING_KEY = "webhook-signing-key-for-tests"
API_KEY = "key-test-suppressions-0123"
DOMAIN = "mg.school.example"
WEBHOOK = "/webhooks/mailgun"


def send_through(app: Flask, fake: FakeMailgun) -> None:
    """Make ``app`` send through ``fake`` and take webhooks signed with SIGNING_KEY."""
    app.config["MAILGUN_WEBHOOK_SIGNING_KEY"] = SIGNING_KEY
    app.extensions["mail_backend"] = MailgunBackend(API_KEY, DOMAIN, base_url=fake.base_url, timeout=5)


def post_event(client, event: dict, **signing):
    """POST one event to the webhook, signed (``token``, ``timestamp`` as webhook_body takes them)."""
    return client.post(WEBHOOK, json=webhook_body(event, SIGNING_KEY, **signing))
