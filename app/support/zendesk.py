"""Zendesk's Tickets API: one POST per support request, made by the worker.

``POST https://<subdomain>.zendesk.com/api/v2/tickets.json`` with API-token Basic auth
(``<agent email>/token:<api token>``) creates a ticket on behalf of a requester given by
name and email; Zendesk finds or creates that end user. (The Requests API would make the
authenticated agent the requester, so it cannot be used to file on someone's behalf.)

What Zendesk receives is exactly the ticket built by ``payload()``: the requester's name
and email (the only personal data, P6), the subject, the message, our reference as
``external_id`` and two tags. Our reference also goes as the ``Idempotency-Key`` header, so
a retry after a timeout (the ticket may have been made) returns the first ticket rather
than making a second one.

Only the standard library is used (``urllib.request``). Neither the API token nor the
requester's email is ever logged or put into an exception message: failures end up in the
request's ``last_error`` column and in logs that many people can read.

A retry does not trust the Idempotency-Key alone (Zendesk keeps keys for a limited time, and
a ticket whose creation timed out or lost its answer may exist): ``find_ticket`` first lists
the tickets whose ``external_id`` is our reference (``GET /api/v2/tickets.json?external_id=``,
Zendesk's List Tickets filter; external ids need not be unique, so the lowest id is "the" one).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from app.providers import ADDRESS, checked_base_url, network_reason, opener_for, retry_after_seconds

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
MAX_REASON = 300
MAX_RESPONSE_BYTES = 64 * 1024  # a ticket is a few kilobytes; never read an unbounded body
TICKETS_PATH = "/api/v2/tickets.json"
TAG = "joinourclass"
# Zendesk asks clients to retry these (409: the same ticket or key is being written right now).
TEMPORARY_STATUSES = {408, 409, 429}

_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)


class ZendeskFailure(Exception):
    """Zendesk did not make a ticket; ``reason`` holds no token and no address."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TemporaryFailure(ZendeskFailure):
    """Zendesk could not take the request now (429, 5xx, network): try again later."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentFailure(ZendeskFailure):
    """Zendesk refused the request; sending it again would fail the same way."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.status = status

    @property
    def credentials_refused(self) -> bool:
        """401/403: our token is wrong or lacks rights; the request itself is fine."""
        return self.status in (401, 403)


@dataclass(frozen=True)
class TicketRequest:
    """Everything that may go to Zendesk for one support request, and nothing more."""

    reference: str
    kind: str
    name: str
    email: str
    subject: str
    message: str

    def __repr__(self) -> str:  # the address stays out of tracebacks and debuggers' displays
        return f"TicketRequest(reference={self.reference!r}, kind={self.kind!r})"


class ZendeskClient:
    """Create tickets through Zendesk's Tickets API."""

    def __init__(
        self,
        subdomain: str,
        email: str,
        api_token: str,
        *,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not subdomain or not email or not api_token:
            raise RuntimeError("Zendesk needs ZENDESK_SUBDOMAIN, ZENDESK_EMAIL and ZENDESK_API_TOKEN.")
        if not _SUBDOMAIN.match(subdomain):
            raise RuntimeError("ZENDESK_SUBDOMAIN must be the name before .zendesk.com, e.g. 'myschools'.")
        base_url = checked_base_url(
            base_url or f"https://{subdomain.lower()}.zendesk.com",
            timeout,
            setting="ZENDESK",
            example="https://x.zendesk.com",
        )
        self.subdomain = subdomain
        self.base_url = base_url
        self.timeout = timeout
        self.url = base_url + TICKETS_PATH
        self._api_token = api_token
        credentials = base64.b64encode(f"{email}/token:{api_token}".encode()).decode("ascii")
        self._authorization = f"Basic {credentials}"
        self._opener = opener_for(base_url)

    def __repr__(self) -> str:  # the token stays out of reprs, tracebacks and debuggers' displays
        return f"ZendeskClient(subdomain={self.subdomain!r}, base_url={self.base_url!r})"

    @classmethod
    def from_config(cls, config: Mapping) -> ZendeskClient | None:
        """Build from ZENDESK_* settings; None when none is set (requests wait, nothing is lost)."""
        names = ("ZENDESK_SUBDOMAIN", "ZENDESK_EMAIL", "ZENDESK_API_TOKEN")
        values = {name: str(config.get(name) or "").strip() for name in names}
        if not any(values.values()):
            return None
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise RuntimeError(f"Zendesk is half configured: set {' and '.join(missing)} too.")
        raw_timeout = config.get("ZENDESK_TIMEOUT")
        try:
            timeout = float(raw_timeout) if raw_timeout not in (None, "") else DEFAULT_TIMEOUT
        except (TypeError, ValueError):
            raise RuntimeError("ZENDESK_TIMEOUT must be a number of seconds.") from None
        return cls(
            values["ZENDESK_SUBDOMAIN"],
            values["ZENDESK_EMAIL"],
            values["ZENDESK_API_TOKEN"],
            base_url=str(config.get("ZENDESK_BASE_URL") or "") or None,
            timeout=timeout,
        )

    # -- building the request -------------------------------------------------------------

    @staticmethod
    def payload(ticket: TicketRequest) -> dict:
        """The JSON body: requester name + email, subject, message, our reference, tags. Nothing else."""
        for label, value in (
            ("reference", ticket.reference),
            ("name", ticket.name),
            ("email", ticket.email),
            ("subject", ticket.subject),
            ("message", ticket.message),
        ):
            if not value or not value.strip():
                raise ValueError(f"request {ticket.reference or '?'} has no {label}")
        return {
            "ticket": {
                "subject": ticket.subject,
                "comment": {"body": ticket.message},
                "requester": {"name": ticket.name, "email": ticket.email},
                "external_id": ticket.reference,
                "tags": [TAG, ticket.kind],
            }
        }

    # -- sending ----------------------------------------------------------------------------

    def create_ticket(self, ticket: TicketRequest) -> int:
        """Make a ticket and return its id; TemporaryFailure or PermanentFailure otherwise."""
        try:
            body = json.dumps(self.payload(ticket), ensure_ascii=False).encode("utf-8")
        except ValueError as error:
            # Bad data, not a bad moment: retrying would fail the same way.
            raise PermanentFailure(f"not sent: {error}") from None
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url,
            data=body,
            method="POST",
            headers={
                "Authorization": self._authorization,
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json",
                "User-Agent": "join-our-class-support",
                "Idempotency-Key": ticket.reference,
            },
        )
        reference = ticket.reference
        status, payload = self._call(request, f"zendesk ticket for {reference}")
        ticket_id = _ticket_id(payload)
        if not 200 <= status < 300 or ticket_id is None:
            # A ticket may well have been made (or the answer was cut short): the retry looks
            # it up by its external_id before making one, so trying again files nothing twice.
            failure = TemporaryFailure(
                f"Zendesk answered {status} without a ticket id; a ticket may or may not have been made"
            )
            log.error("zendesk ticket for %s: %s", reference, failure.reason)
            raise failure
        log.info("zendesk ticket for %s created as #%s", reference, ticket_id)
        return ticket_id

    def find_ticket(self, reference: str) -> int | None:
        """The ticket Zendesk already has for our reference (its external_id), or None."""
        query = urllib.parse.urlencode({"external_id": reference})
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            f"{self.url}?{query}",
            method="GET",
            headers={
                "Authorization": self._authorization,
                "Accept": "application/json",
                "User-Agent": "join-our-class-support",
            },
        )
        try:
            _, payload = self._call(request, f"zendesk lookup of {reference}")
        except PermanentFailure as refused:
            if refused.credentials_refused:
                raise
            # A refused lookup says nothing about the ticket: never give the request up for it.
            raise TemporaryFailure(f"Zendesk's ticket lookup failed: {refused.reason}") from None
        ids = _matching_ticket_ids(payload, reference)
        if ids is None:
            failure = TemporaryFailure("Zendesk's ticket lookup answered without a ticket list")
            log.warning("zendesk lookup of %s failed: %s", reference, failure.reason)
            raise failure
        if ids:
            log.info("zendesk already has ticket #%s for %s", min(ids), reference)
        return min(ids) if ids else None

    def _call(self, request: urllib.request.Request, what: str) -> tuple[int, bytes]:
        """Send the request: (status, body) of a 2xx; ZendeskFailure (logged) otherwise."""
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, self._read(response)
        except urllib.error.HTTPError as error:
            with error:
                failure = self._failure(error.code, self._read(error), error.headers)
            log.warning("%s failed: %s", what, failure.reason)
            raise failure from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            failure = TemporaryFailure(f"Zendesk could not be reached: {network_reason(error)}")
            log.warning("%s failed: %s", what, failure.reason)
            raise failure from None

    def _read(self, response) -> bytes:
        try:
            return response.read(MAX_RESPONSE_BYTES) or b""
        except (OSError, http.client.HTTPException):
            return b""

    def _failure(self, status: int, payload: bytes, headers) -> ZendeskFailure:
        retry_after = retry_after_seconds(headers.get("Retry-After") if headers is not None else None)
        if status == 429:
            return TemporaryFailure("Zendesk rate limit reached (429)", retry_after)
        if status >= 500:
            return TemporaryFailure(f"Zendesk server error ({status})", retry_after)
        if status in TEMPORARY_STATUSES:
            return TemporaryFailure(f"Zendesk asked us to try again ({status})", retry_after)
        if 300 <= status < 400:
            return PermanentFailure(
                f"Zendesk answered with a redirect ({status}); check ZENDESK_SUBDOMAIN", status
            )
        message = self._scrub(_error_message(payload))
        hint = " (check ZENDESK_EMAIL and ZENDESK_API_TOKEN)" if status in (401, 403) else ""
        reason = f"Zendesk refused the ticket ({status}){hint}"
        if message:
            reason = f"{reason}: {message}"
        return PermanentFailure(reason[:MAX_REASON], status)

    def _scrub(self, text: str) -> str:
        """Zendesk's own message may quote the requester's address (or, in theory, the token)."""
        text = text.replace(self._api_token, "[token]")
        return ADDRESS.sub("[address]", text)


def _error_message(payload: bytes) -> str:
    """Zendesk's error in words: ``error``, ``description`` and the details' descriptions."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ""
    if not isinstance(data, dict):
        return ""
    words: list[str] = []
    error = data.get("error")
    if isinstance(error, dict):  # {"error": {"title": ..., "message": ...}} on some endpoints
        words += [v for k, v in error.items() if k in ("title", "message") and isinstance(v, str)]
    elif isinstance(error, str):
        words.append(error)
    if isinstance(data.get("description"), str):
        words.append(data["description"])
    details = data.get("details")
    if isinstance(details, dict):
        for entries in details.values():
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and isinstance(entry.get("description"), str):
                    words.append(entry["description"])
    return " ".join(" ".join(words).split())


def _ticket_id(payload: bytes) -> int | None:
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    ticket = data.get("ticket") if isinstance(data, dict) else None
    value = ticket.get("id") if isinstance(ticket, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _matching_ticket_ids(payload: bytes, reference: str) -> list[int] | None:
    """Ids of the listed tickets whose external_id is ``reference``; None if not a ticket list."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    tickets = data.get("tickets") if isinstance(data, dict) else None
    if not isinstance(tickets, list):
        return None
    ids = []
    for ticket in tickets:
        if not isinstance(ticket, dict) or ticket.get("external_id") != reference:
            continue  # Zendesk filters by external_id already; a stray entry is not ours
        value = ticket.get("id")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            ids.append(value)
    return ids
