"""Mail backends: where a rendered email goes. Mailgun joins these in the email issue."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Flask, current_app

from app.extensions import db
from app.models import DevMail


@dataclass
class Envelope:
    """One rendered email for one recipient."""

    to: str
    subject: str
    text: str
    html: str | None
    sender: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SendResult:
    """What the backend said about one envelope."""

    ok: bool
    provider_id: str | None = None
    error: str | None = None


class MailBackend:
    """The interface: send a batch of envelopes, get one result each."""

    def send(self, envelopes: list[Envelope]) -> list[SendResult]:
        raise NotImplementedError


class DevMailboxBackend(MailBackend):
    """Keep mail in the database so the development mailbox page can show it."""

    def send(self, envelopes: list[Envelope]) -> list[SendResult]:
        results = []
        for envelope in envelopes:
            row = DevMail(
                to_email=envelope.to,
                subject=envelope.subject,
                text_body=envelope.text,
                html_body=envelope.html,
                headers=envelope.headers,
            )
            db.session.add(row)
            db.session.flush()
            results.append(SendResult(ok=True, provider_id=f"dev-{row.id}"))
        return results


class MemoryBackend(MailBackend):
    """Collect mail in a list on the app, for tests that run jobs in-process."""

    def __init__(self) -> None:
        self.sent: list[Envelope] = []

    def send(self, envelopes: list[Envelope]) -> list[SendResult]:
        self.sent.extend(envelopes)
        return [SendResult(ok=True, provider_id=f"mem-{len(self.sent)}") for _ in envelopes]


BACKENDS = {"devmailbox": DevMailboxBackend, "memory": MemoryBackend}


def init_backend(app: Flask) -> None:
    """Build the configured backend once per app."""
    name = app.config["MAIL_BACKEND"]
    if name not in BACKENDS:
        raise RuntimeError(f"MAIL_BACKEND must be one of {', '.join(BACKENDS)}; got {name!r}")
    app.extensions["mail_backend"] = BACKENDS[name]()


def backend() -> MailBackend:
    """The current app's mail backend."""
    return current_app.extensions["mail_backend"]
