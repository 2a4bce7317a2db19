"""Mail backends: where a batch of rendered email goes.

A batch is one message for up to ``max_batch`` recipients. Bodies and headers may hold
``%recipient.<name>%`` placeholders (Mailgun's recipient-variables syntax), filled per
recipient from ``Recipient.variables``: that is how each person gets their own
unsubscribe link while the provider receives one request per thousand people.

Every batch carries a ``batch_id`` that travels with the message (Mailgun: the user variable
``batch``). When a call's answer is lost, ``accepted(batch_id, since)`` asks the backend which
recipients of that batch it took, so the send job re-sends only the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import overload

from flask import Flask, current_app

from app.extensions import db
from app.models import DevMail


@dataclass
class Recipient:
    """One delivery's address and the values for its placeholders."""

    delivery_id: int
    email: str
    variables: dict[str, str] = field(default_factory=dict)


@dataclass
class Batch:
    """One message for many recipients; nobody sees another's address."""

    sender: str
    subject: str
    text: str
    html: str | None
    tag: str
    recipients: list[Recipient]
    headers: dict[str, str] = field(default_factory=dict)
    batch_id: str = ""  # unique per provider call; recorded on the deliveries before the call


@dataclass
class Envelope:
    """One personalised email, as the local backends keep it."""

    to: str
    subject: str
    text: str
    html: str | None
    sender: str
    headers: dict[str, str] = field(default_factory=dict)


class TemporaryFailure(Exception):
    """The provider could not take the batch now (429, 5xx, network); try again later."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class OutcomeUnknown(TemporaryFailure):
    """The request reached the provider but no usable answer came back (a timeout while waiting,
    a dropped connection, a 5xx, a 200 without an id): it may have taken the batch. The send job
    asks ``accepted()`` before trying those recipients again."""


class PermanentFailure(Exception):
    """The provider refused the batch for good (a 4xx other than 429)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class MailBackend:
    """Send a batch; return the provider's id per delivery, or raise one of the failures above."""

    max_batch = 1000
    timeout = 0.0  # the longest one call may take, in seconds (a claim's lease must outlast it)
    events_lag = 0.0  # how late an accepted batch may show in accepted(), in seconds

    def send_batch(self, batch: Batch) -> dict[int, str]:
        raise NotImplementedError

    def accepted(self, batch_id: str, since: datetime, *, until: datetime | None = None) -> dict[str, str]:
        """Which addresses (lower-cased) of the batch the provider accepted, with its id for each.

        ``since`` is when the batch was handed over, ``until`` the latest the provider could have
        taken it (the call's deadline). Raises TemporaryFailure when it cannot tell.
        """
        raise NotImplementedError

    def remove_suppression(self, email: str, lists: list[str]) -> None:
        """Take the address off the provider's own lists ("bounces", "complaints", "unsubscribes").

        Succeeds when it is not (or no longer) on them, or raises one of the failures above. A
        backend with no provider behind it (the development mailbox, memory) keeps no lists: it
        only records what was asked, in ``removed``.
        """
        self.removed.append((email, tuple(lists)))

    @property
    def removed(self) -> list[tuple[str, tuple[str, ...]]]:
        """Removals asked of this backend object, oldest first (local backends only)."""
        return vars(self).setdefault("_removed", [])


_PLACEHOLDER = re.compile(r"%recipient\.([A-Za-z0-9_]+)%")


@overload
def personalise(text: str, variables: dict[str, str]) -> str: ...
@overload
def personalise(text: None, variables: dict[str, str]) -> None: ...
@overload
def personalise(text: str | None, variables: dict[str, str]) -> str | None: ...


def personalise(text: str | None, variables: dict[str, str]) -> str | None:
    """Fill ``%recipient.x%`` placeholders the way Mailgun does (unknown ones stay as they are)."""
    if text is None:
        return None
    return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def envelopes(batch: Batch) -> list[Envelope]:
    """The batch as one personalised email per recipient."""
    return [
        Envelope(
            to=r.email,
            subject=personalise(batch.subject, r.variables),
            text=personalise(batch.text, r.variables),
            html=personalise(batch.html, r.variables),
            sender=batch.sender,
            headers={k: personalise(v, r.variables) for k, v in batch.headers.items()} | {"X-Tag": batch.tag},
        )
        for r in batch.recipients
    ]


class DevMailboxBackend(MailBackend):
    """Keep mail in the database so the development mailbox page can show it."""

    def send_batch(self, batch: Batch) -> dict[int, str]:
        ids = {}
        for recipient, envelope in zip(batch.recipients, envelopes(batch), strict=True):
            row = DevMail(
                to_email=envelope.to,
                subject=envelope.subject,
                text_body=envelope.text,
                html_body=envelope.html,
                # The envelope's sender and recipient too, so the mailbox shows what a provider gets.
                headers={"From": envelope.sender, "To": envelope.to} | envelope.headers,
            )
            db.session.add(row)
            db.session.flush()
            ids[recipient.delivery_id] = f"dev-{row.id}"
        return ids

    def accepted(self, batch_id: str, since: datetime, *, until: datetime | None = None) -> dict[str, str]:
        """Nothing: the mailbox rows commit with the deliveries' outcome, so a batch without a
        recorded outcome left no mail behind."""
        return {}


class MemoryBackend(MailBackend):
    """Collect mail in a list on the app, for tests that run jobs in-process."""

    def __init__(self) -> None:
        self.sent: list[Envelope] = []
        self.batches: list[Batch] = []

    def send_batch(self, batch: Batch) -> dict[int, str]:
        self.batches.append(batch)
        self.sent.extend(envelopes(batch))
        return {r.delivery_id: f"mem-{len(self.batches)}" for r in batch.recipients}

    def accepted(self, batch_id: str, since: datetime, *, until: datetime | None = None) -> dict[str, str]:
        """The addresses of every kept batch with this id (the list knows at once: no lag)."""
        found: dict[str, str] = {}
        for number, batch in enumerate(self.batches, start=1):
            if batch_id and batch.batch_id == batch_id:
                found |= {r.email.lower(): f"mem-{number}" for r in batch.recipients}
        return found


def _mailgun(app: Flask) -> MailBackend:
    from app.mail.mailgun import MailgunBackend

    return MailgunBackend.from_config(app.config)


BACKENDS = {
    "devmailbox": lambda app: DevMailboxBackend(),
    "memory": lambda app: MemoryBackend(),
    "mailgun": _mailgun,
}


def init_backend(app: Flask) -> None:
    """Build the configured backend once per app."""
    name = app.config["MAIL_BACKEND"]
    if name not in BACKENDS:
        raise RuntimeError(f"MAIL_BACKEND must be one of {', '.join(BACKENDS)}; got {name!r}")
    app.extensions["mail_backend"] = BACKENDS[name](app)


def backend() -> MailBackend:
    """The current app's mail backend."""
    return current_app.extensions["mail_backend"]
