"""A fake Mailgun: a real HTTP server on loopback speaking the part of the API the app uses.

Not a mock object: the backend under test makes real HTTP requests, with real Basic auth and a
real form body, and the fake checks them the way Mailgun does (auth, domain, required fields,
at most 1,000 recipients) before recording them. ``messages_for(email)`` then shows what that
one person would receive, placeholders filled in, so tests can check nobody sees another's
address or link.

In-process::

    with FakeMailgun() as fake:
        backend = MailgunBackend(fake.api_key, fake.domain, base_url=fake.base_url)
        fake.queue_responses([(500, {"message": "boom"}), (429, {}, {"Retry-After": "1"})])

It also serves the Events API (``GET /v3/<domain>/events``, tests/fakes/mailgun_events.py): an
``accepted`` event per recipient of every accepted request, visible ``events_delay`` seconds
later, filtered and paged as Mailgun does. A scripted answer ``{"drop": true}`` accepts the
request (and writes its events) and then closes the connection without answering: the
provider took the batch, the client never heard.

As a separate process (a worker test or a benchmark)::

    python -m tests.fakes.mailgun --port 0 --key K --domain D [--events-delay S]
    # prints "listening http://127.0.0.1:N" then "ready"; it stops on SIGTERM/SIGINT or after
    # --lifetime seconds. Control endpoints:
    #   GET  /_fake/stats          requests, recipients, unique_recipients, attempts, dropped,
    #                              events, event_requests
    #   GET  /_fake/recipients     {"counts": {address: times accepted}}
    #   POST /_fake/script         answers for the next message POSTs: [status, body, headers],
    #                              {"status", "body", "headers", "delay"} or {"drop": true, "delay"}
    #   POST /_fake/events-script  the same for the next Events API GETs
    #   POST /_fake/events-delay   {"seconds": S}: new events become visible S seconds late
    #   POST /_fake/reset          forget everything received and scripted
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import getaddresses
from urllib.parse import parse_qsl, unquote, urlsplit

from app.mail.backends import personalise
from tests.fakes.base import MAX_DELAY as MAX_DELAY  # re-exported: it used to be defined here
from tests.fakes.base import BadRequest, FakeHandler, FakeServer, basic_auth_matches, command_line, run
from tests.fakes.base import Scripted as Scripted  # re-exported: tests import it from here
from tests.fakes.mailgun_events import EventLog

MAX_RECIPIENTS = 1000
MAX_BODY = 25 * 1024 * 1024  # Mailgun's message size limit
QUEUED = "Queued. Thank you."
# Mailgun's suppression lists: the path segment and the table its 404 names.
SUPPRESSION_LISTS = {"bounces": "bounces", "complaints": "complaints", "unsubscribes": "unsubscribes"}
REMOVED = {
    "bounces": "Bounced address has been removed",
    "complaints": "Spam complaint has been removed",
    "unsubscribes": "Unsubscribe event has been removed",
}


@dataclass
class RecordedRequest:
    """A request the fake accepted (answered 200)."""

    path: str
    fields: dict[str, list[str]]
    headers: dict[str, str]
    time: float
    message_id: str
    files: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    @property
    def recipients(self) -> list[str]:
        return _addresses(self.fields.get("to", []))


@dataclass
class FakeMessage:
    """What one recipient would receive from one accepted request."""

    to: str
    sender: str
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    tags: list[str]
    message_id: str


def _addresses(values: Iterable[str]) -> list[str]:
    """Every address in the ``to`` values (Mailgun also takes comma-separated lists)."""
    return [address for _name, address in getaddresses(list(values)) if address]


def parse_form(
    content_type: str, body: bytes
) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, bytes]]]]:
    """A form body (urlencoded or multipart) as multi-value fields, plus any uploaded files."""
    fields: dict[str, list[str]] = {}
    files: dict[str, list[tuple[str, bytes]]] = {}
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=20_000)
        except (UnicodeDecodeError, ValueError) as error:
            raise BadRequest(400, f"malformed form body: {type(error).__name__}") from None
        for name, value in pairs:
            fields.setdefault(name, []).append(value)
        return fields, files
    if kind == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        if not message.is_multipart() or message.defects:
            raise BadRequest(400, "malformed multipart body")
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                continue
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            if filename is not None:
                files.setdefault(name, []).append((filename, payload))
                continue
            charset = part.get_content_charset() or "utf-8"
            try:
                fields.setdefault(name, []).append(payload.decode(charset))
            except (LookupError, UnicodeDecodeError):
                raise BadRequest(400, f"field {name!r} is not valid {charset}") from None
        return fields, files
    raise BadRequest(400, "expected application/x-www-form-urlencoded or multipart/form-data")


def validate(fields: dict[str, list[str]]) -> None:
    """What Mailgun checks before it queues a message."""
    for name in ("from", "to", "subject"):
        if not any(value.strip() for value in fields.get(name, [])):
            raise BadRequest(400, f"'{name}' parameter is missing")
    if not any(fields.get(name) for name in ("text", "html", "amp-html", "template")):
        raise BadRequest(
            400, "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified"
        )
    recipients = _addresses(fields["to"])
    if not recipients or any("@" not in address for address in recipients):
        raise BadRequest(400, "'to' parameter is not a valid address. please check documentation")
    if len(recipients) > MAX_RECIPIENTS:
        raise BadRequest(400, f"Too many recipients: at most {MAX_RECIPIENTS} are allowed per message")
    raw = fields.get("recipient-variables")
    if raw:
        try:
            variables = json.loads(raw[0])
        except ValueError:
            raise BadRequest(400, "recipient-variables parameter is not a valid JSON") from None
        if not isinstance(variables, dict) or not all(isinstance(v, dict) for v in variables.values()):
            raise BadRequest(400, "recipient-variables must be a JSON object of objects")


@dataclass
class DropScripted(Scripted):
    """A scripted answer that accepts the request, then closes the connection unanswered."""


class MailgunHandler(FakeHandler):
    server_version = "FakeMailgun/1.0"
    max_body = MAX_BODY

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        try:
            if path == "/_fake/recipients":
                self._json(200, {"counts": dict(Counter(self.fake.recipients()))})
            elif path.startswith("/_fake/"):
                super().do_GET()
            else:
                self.serve_events(path)
        except BadRequest as error:
            self._json(error.status, self.error_payload(error.status, error.message))

    def serve(self, path: str, body: bytes) -> None:
        fake: FakeMailgun = self.fake
        if path.startswith("/_fake/"):
            self.control(path, body)
            return
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "v3" or parts[2] != "messages":
            raise BadRequest(404, "Not Found")
        self._check_access(parts[1])
        if self.answer_scripted():
            return
        fields, files = parse_form(self.headers.get("Content-Type", ""), body)
        validate(fields)
        message_id = fake._new_id()
        fake._accept(
            RecordedRequest(
                path=path,
                fields=fields,
                headers=dict(self.headers.items()),
                time=time.time(),
                message_id=message_id,
                files=files,
            )
        )
        if isinstance(fake._taken.scripted, DropScripted):
            fake._count_drop()
            self._drop_connection()
            return
        self._json(200, {"id": message_id, "message": QUEUED})

    def serve_events(self, path: str) -> None:
        """``GET /v3/<domain>/events`` (a first page) or ``/v3/<domain>/events/<token>`` (paging)."""
        fake: FakeMailgun = self.fake
        parts = path.strip("/").split("/")
        if len(parts) not in (3, 4) or parts[0] != "v3" or parts[2] != "events":
            raise BadRequest(404, "Not Found")
        self._check_access(parts[1])
        scripted = fake._next_event_script()
        if scripted is not None and scripted.delay:
            fake._stopping.wait(scripted.delay)
        if scripted is not None and scripted.status is not None:
            self._json(scripted.status, scripted.body, scripted.headers)
            return
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        token = parts[3] if len(parts) == 4 else None
        self._json(200, fake.events.answer(fake.base_url, token, params))

    def control(self, path: str, body: bytes) -> None:
        """The fake's own POST endpoints beyond the shared ``/_fake/script`` and ``/_fake/reset``."""
        fake: FakeMailgun = self.fake
        payload = json.loads(body.decode("utf-8") or "null")
        if path == "/_fake/events-delay" and isinstance(payload, dict):
            fake.events.delay = float(payload.get("seconds", 0))
            self._json(200, {"events_delay": fake.events.delay})
        elif path == "/_fake/events-script" and isinstance(payload, list):
            fake.queue_event_responses(payload)
            self._json(200, {"queued": len(payload)})
        else:
            raise BadRequest(404, "Not Found")

    def _check_access(self, quoted_domain: str) -> None:
        """Mailgun's checks before anything else: the key, then the domain."""
        fake: FakeMailgun = self.fake
        if not fake._authorised(self.headers.get("Authorization")):
            raise BadRequest(401, "Forbidden")
        domain = unquote(quoted_domain)
        if domain != fake.domain:
            raise BadRequest(404, f"Domain not found: {domain}")

    def _drop_connection(self) -> None:
        """Close the socket with nothing written: the client's read ends without a response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- the suppression lists: DELETE /v3/<domain>/{bounces,complaints,unsubscribes}/<address> --

    def do_DELETE(self):  # noqa: N802 - http.server's naming
        try:
            self._body_if_any()
            self.serve_suppression_delete(urlsplit(self.path).path)
        except BadRequest as error:
            self._json(error.status, self.error_payload(error.status, error.message))

    def _body_if_any(self) -> None:
        """A DELETE usually has no body; read one if sent, so the connection stays well-formed."""
        if self.headers.get("Content-Length"):
            self._body()

    def serve_suppression_delete(self, path: str) -> None:
        fake: FakeMailgun = self.fake
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "v3" or parts[2] not in SUPPRESSION_LISTS:
            raise BadRequest(404, "Not Found")
        if not fake._authorised(self.headers.get("Authorization")):
            raise BadRequest(401, "Forbidden")
        if unquote(parts[1]) != fake.domain:
            raise BadRequest(404, f"Domain not found: {unquote(parts[1])}")
        if self.answer_scripted():
            return
        name, address = parts[2], unquote(parts[3]).strip().lower()
        if not fake._forget(name, address):
            raise BadRequest(404, f"Address not found in {SUPPRESSION_LISTS[name]} table")
        self._json(200, {"message": REMOVED[name], "address": address})


class FakeMailgun(FakeServer[RecordedRequest]):
    """A loopback HTTP server that accepts ``POST /v3/<domain>/messages`` like Mailgun.

    ``attempts`` counts every POST to a messages URL, whatever the answer.
    """

    handler = MailgunHandler
    thread_name = "fake-mailgun"

    def __init__(
        self,
        api_key: str = "key-fake-0123456789",
        domain: str = "mg.example.test",
        port: int = 0,
        events_delay: float = 0.0,
    ):
        super().__init__(port)
        self.api_key = api_key
        self.domain = domain
        self._ids = itertools.count(1)
        self.events = EventLog(domain, delay=events_delay)
        self.dropped = 0
        self.event_requests = 0
        self._event_script: deque[Scripted] = deque()
        self._taken = threading.local()  # the scripted answer the current handler thread took

    # -- scripting --------------------------------------------------------------------------

    def queue_responses(self, responses: Iterable[object]) -> None:
        """As the base, and ``{"drop": true[, "delay": s]}``: accept, then drop the connection."""
        super().queue_responses([_drop_or_plain(item) for item in responses])

    def queue_event_responses(self, responses: Iterable[object]) -> None:
        """Answer the next Events API requests with these, in order; then answer normally again."""
        parsed = [Scripted.parse(item) for item in responses]
        with self._lock:
            self._event_script.extend(parsed)

    # -- reading ----------------------------------------------------------------------------

    def recipients(self) -> list[str]:
        """Every address accepted so far, in order, once per request it was in."""
        return [address for request in self.accepted() for address in request.recipients]

    def stats(self) -> dict[str, int]:
        requests, attempts = self._snapshot()
        addresses = [address.lower() for request in requests for address in request.recipients]
        with self._lock:
            dropped, event_requests = self.dropped, self.event_requests
        return {
            "requests": len(requests),
            "recipients": len(addresses),
            "unique_recipients": len(set(addresses)),
            "attempts": attempts,
            "dropped": dropped,
            "events": self.events.count(),
            "event_requests": event_requests,
        }

    def messages_for(self, email: str) -> list[FakeMessage]:
        """What ``email`` would receive, as Mailgun would build it from each accepted request.

        With ``recipient-variables`` each recipient gets their own copy: only their address in
        To, their own values in place of ``%recipient.x%``. Without it Mailgun sends one message
        whose To lists every address in the request, and that is what this returns.
        """
        wanted = email.strip().lower()
        messages = []
        for request in self.accepted():
            addresses = request.recipients
            if wanted not in {address.lower() for address in addresses}:
                continue
            raw = request.first("recipient-variables")
            if raw:
                table = json.loads(raw)
                lowered = {key.lower(): value for key, value in table.items()}
                variables = {str(k): str(v) for k, v in lowered.get(wanted, {}).items()}
                to = email
            else:
                variables = {}
                to = ", ".join(request.fields["to"])
            headers = {
                name[2:]: personalise(values[0], variables)
                for name, values in request.fields.items()
                if name.startswith("h:") and values
            }
            messages.append(
                FakeMessage(
                    to=to,
                    sender=request.first("from") or "",
                    subject=personalise(request.first("subject") or "", variables) or "",
                    text=personalise(request.first("text"), variables),
                    html=personalise(request.first("html"), variables),
                    headers=headers,
                    tags=list(request.fields.get("o:tag", [])),
                    message_id=request.message_id,
                )
            )
        return messages

    # -- what the handler calls ----------------------------------------------------------------

    def _accept(self, record: RecordedRequest) -> None:
        super()._accept(record)
        self.events.record_accepted(record.fields, record.message_id, record.recipients)

    def _clear(self) -> None:
        super()._clear()
        self.events.clear()
        self._event_script.clear()
        self.dropped = self.event_requests = 0

    def _next_script(self) -> Scripted | None:
        scripted = super()._next_script()
        self._taken.scripted = scripted
        return scripted

    def _next_event_script(self) -> Scripted | None:
        with self._lock:
            self.event_requests += 1
            return self._event_script.popleft() if self._event_script else None

    def _count_drop(self) -> None:
        with self._lock:
            self.dropped += 1

    def event_for(self, email: str, outcome: str, *, when: float | None = None) -> dict:
        """The event Mailgun would report for the last message it accepted for ``email``.

        As at Mailgun, a hard bounce, a complaint or an unsubscribe also puts the address on the
        domain's list of that kind (from which a DELETE takes it off again).
        """
        wanted = email.strip().lower()
        for request in reversed(self.accepted()):
            if wanted in {address.lower() for address in request.recipients}:
                if outcome in LISTED_BY:
                    self.suppress(LISTED_BY[outcome], wanted)
                return event_data(outcome, wanted, request.message_id, when=when, domain=self.domain)
        raise LookupError("no accepted message was addressed to that recipient")

    def _new_id(self) -> str:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        return f"<{stamp}.{next(self._ids)}.{uuid.uuid4().hex[:12]}@{self.domain}>"

    def _authorised(self, header: str | None) -> bool:
        return basic_auth_matches(header, "api", self.api_key)

    # -- the suppression lists (Mailgun adds to them itself; tests call ``suppress``) -------------

    def suppress(self, list_name: str, address: str) -> None:
        """Put an address on one of the domain's lists, as a bounce or a complaint would at Mailgun."""
        with self._lock:
            self._lists().setdefault(list_name, set()).add(address.strip().lower())

    def suppressed(self, list_name: str) -> set[str]:
        """The addresses on one list now."""
        with self._lock:
            return set(self._lists().get(list_name, set()))

    @property
    def removals(self) -> list[tuple[str, str]]:
        """Every (list, address) a DELETE took off a list, in order."""
        with self._lock:
            return list(vars(self).setdefault("_removals", []))

    def _lists(self) -> dict[str, set[str]]:
        return vars(self).setdefault("_suppression_lists", {})

    def _forget(self, list_name: str, address: str) -> bool:
        with self._lock:
            entries = self._lists().get(list_name, set())
            if address not in entries:
                return False
            entries.discard(address)
            vars(self).setdefault("_removals", []).append((list_name, address))
            return True


# -- webhooks: what Mailgun POSTs to the app after sending ---------------------------------------
# The shape of Mailgun's webhook payloads: a signature block (HMAC-SHA256 of timestamp + token
# with the webhook signing key) and the event as its Events API shows it. The message id comes
# without the angle brackets that the send call's answer has.

# What each outcome looks like in event-data: (event, severity, reason, code, description).
OUTCOMES: dict[str, tuple[str, str | None, str | None, int | None, str]] = {
    "delivered": ("delivered", None, None, 250, "OK"),
    "bounce": (
        "failed",
        "permanent",
        "bounce",
        550,
        "5.1.1 The email account that you tried to reach does not exist. Please try double-checking "
        "the recipient's email address for typos or unnecessary spaces.",
    ),
    "generic-5xx": ("failed", "permanent", "generic", 554, "5.7.1 Delivery not authorized, message refused"),
    "espblock": ("failed", "permanent", "espblock", 550, "5.7.1 Message rejected as spam by the ESP"),
    "suppress-bounce": (
        "failed",
        "permanent",
        "suppress-bounce",
        605,
        "Not delivering to previously bounced address",
    ),
    "suppress-complaint": (
        "failed",
        "permanent",
        "suppress-complaint",
        607,
        "Not delivering to a user who marked your messages as spam",
    ),
    "suppress-unsubscribe": (
        "failed",
        "permanent",
        "suppress-unsubscribe",
        606,
        "Not delivering to unsubscribed address",
    ),
    "old": ("failed", "permanent", "old", 498, "Too old: Mailgun gave up retrying"),
    "temporary": ("failed", "temporary", "generic", 452, "4.2.2 The email account is over quota"),
    "complaint": ("complained", None, None, None, ""),
    "unsubscribe": ("unsubscribed", None, None, None, ""),
}


# The outcomes after which Mailgun lists the address (and refuses it from then on).
LISTED_BY = {
    "bounce": "bounces",
    "generic-5xx": "bounces",
    "complaint": "complaints",
    "unsubscribe": "unsubscribes",
}


def event_data(
    outcome: str,
    recipient: str,
    message_id: str,
    *,
    when: float | None = None,
    domain: str = "mg.example.test",
) -> dict:
    """One event as Mailgun reports it (``outcome`` is a key of OUTCOMES)."""
    name, severity, reason, code, description = OUTCOMES[outcome]
    data: dict = {
        "id": uuid.uuid4().hex[:22],
        "timestamp": when if when is not None else time.time(),
        "log-level": "info" if name == "delivered" else "warn" if name != "failed" else "error",
        "event": name,
        "recipient": recipient,
        "recipient-domain": recipient.rpartition("@")[2],
        "envelope": {"sender": f"no-reply@{domain}", "targets": recipient, "transport": "smtp"},
        "flags": {"is-authenticated": True, "is-test-mode": False},
        "message": {
            "headers": {"message-id": message_id.strip("<>"), "to": recipient, "from": f"no-reply@{domain}"},
            "size": 1024,
        },
        "tags": [],
        "user-variables": {},
    }
    if severity is not None:
        data["severity"], data["reason"] = severity, reason
    if code is not None:
        data["delivery-status"] = {
            "attempt-no": 1,
            "code": code,
            "message": description if code < 600 else "",
            "description": description,
        }
    return data


def webhook_body(
    event: dict, signing_key: str, *, token: str | None = None, timestamp: float | None = None
) -> dict:
    """The JSON body Mailgun POSTs: ``signature`` (timestamp, token, HMAC) and ``event-data``."""
    stamp = str(int(timestamp if timestamp is not None else time.time()))
    token = token or uuid.uuid4().hex + uuid.uuid4().hex[:18]  # Mailgun's tokens are 50 characters
    signature = hmac.new(signing_key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event}


def _drop_or_plain(item: object) -> object:
    """``{"drop": true, ...}`` as a DropScripted (it must not also give a status); others as they are."""
    if not isinstance(item, Mapping) or not item.get("drop"):
        return item
    if item.get("status") is not None:
        raise ValueError("a dropped connection has no status to answer with")
    plain = Scripted.parse({key: value for key, value in item.items() if key != "drop"})
    return DropScripted(delay=plain.delay)


def main(argv: list[str] | None = None) -> int:
    parser = command_line("Run a fake Mailgun API on 127.0.0.1.")
    parser.add_argument("--key", default="key-fake-0123456789", help="the API key it accepts")
    parser.add_argument("--domain", default="mg.example.test", help="the sending domain it accepts")
    parser.add_argument("--events-delay", type=float, default=0.0, help="seconds before an event shows")
    return run(
        parser,
        argv,
        lambda args: FakeMailgun(
            api_key=args.key, domain=args.domain, port=args.port, events_delay=args.events_delay
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
