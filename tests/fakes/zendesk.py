"""A fake Zendesk: a real HTTP server on loopback speaking the part of the Tickets API the app uses.

Not a mock object: the client under test makes real HTTP requests, with real Basic auth
(``<email>/token:<api token>``) and a real JSON body, and the fake checks them the way Zendesk
does (auth, JSON, a ticket with a comment body and a requester email) before recording them.
It honours ``Idempotency-Key`` as Zendesk does: the same key with the same body answers with
the first ticket again (``x-idempotency-lookup: hit``), with another body it is refused.
``requests`` keeps every accepted request with its raw bytes, so tests can check exactly what
left the app.

It also lists tickets by external id as Zendesk's List Tickets does
(``GET /api/v2/tickets.json?external_id=X`` -> ``{"tickets": [...], "count", "next_page",
"previous_page"}``; ``lookups`` counts them, scripts never answer them), and it can misbehave
the way a retry must survive: ``drop_after_create(n)`` makes the next n tickets and then closes
the connection without an answer, ``honour_idempotency = False`` forgets every
Idempotency-Key (each POST makes a new ticket).

In-process::

    with FakeZendesk() as fake:
        client = ZendeskClient(fake.subdomain, fake.email, fake.api_token, base_url=fake.base_url)
        fake.queue_responses([(500, {"error": "boom"}), (429, {}, {"Retry-After": "1"})])

As a separate process (a worker test)::

    python -m tests.fakes.zendesk --port 0 --email E --token T
    # prints "listening http://127.0.0.1:N" then "ready"; GET /_fake/stats, POST /_fake/script,
    # POST /_fake/reset, POST /_fake/faults {"drop_after_create": n, "honour_idempotency": false};
    # it stops on SIGTERM/SIGINT or after --lifetime seconds.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from tests.fakes.base import BadRequest, FakeHandler, FakeServer, basic_auth_matches, command_line, run
from tests.fakes.base import Scripted as Scripted  # re-exported: it was importable from here

TICKETS_PATH = "/api/v2/tickets.json"
FAULTS_PATH = "/_fake/faults"
MAX_BODY = 1024 * 1024
FIRST_TICKET_ID = 1001


@dataclass
class RecordedTicket:
    """A ticket request the fake accepted (answered 201, or 200 for an idempotent repeat)."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: dict
    ticket_id: int
    time: float
    repeat: bool = False

    @property
    def ticket(self) -> dict:
        return self.json["ticket"]


def validate(payload: object) -> dict:
    """What Zendesk checks before it makes a ticket (422 RecordInvalid otherwise)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("ticket"), dict):
        raise BadRequest(400, "expected a JSON object with a 'ticket' object")
    ticket = payload["ticket"]
    comment = ticket.get("comment")
    if not isinstance(comment, dict) or not str(comment.get("body") or "").strip():
        raise BadRequest(422, "Record validation errors: Description: cannot be blank")
    requester = ticket.get("requester")
    if requester is not None:
        email = requester.get("email") if isinstance(requester, dict) else None
        if not isinstance(email, str) or "@" not in email:
            raise BadRequest(422, "Record validation errors: Requester: Email is invalid")
    return ticket


def _error_name(status: int) -> str:
    return {404: "InvalidEndpoint", 422: "RecordInvalid"}.get(status, "BadRequest")


class ZendeskHandler(FakeHandler):
    server_version = "FakeZendesk/1.0"
    max_body = MAX_BODY
    json_content_type = "application/json; charset=utf-8"
    not_found = "Not found"

    def error_payload(self, status: int, message: str) -> object:
        if status == 401:  # Zendesk's own answer to bad credentials
            return {"error": message}
        return {"error": _error_name(status), "description": message}

    def invalid_payload(self, error: ValueError) -> object:
        return {"error": "InvalidJSON", "description": f"bad request: {error}"}

    def do_GET(self):  # noqa: N802 - http.server's naming
        """List Tickets filtered by external_id; anything else as the base serves it."""
        url = urlsplit(self.path)
        if url.path != TICKETS_PATH:
            super().do_GET()
            return
        fake: FakeZendesk = self.fake
        if not fake._authorised(self.headers.get("Authorization")):
            self._json(401, self.error_payload(401, "Couldn't authenticate you"))
            return
        external_id = (parse_qs(url.query).get("external_id") or [None])[0]
        tickets = fake._lookup(external_id)
        self._json(200, {"tickets": tickets, "next_page": None, "previous_page": None, "count": len(tickets)})

    def serve(self, path: str, body: bytes) -> None:
        fake: FakeZendesk = self.fake
        if path == FAULTS_PATH:
            self._json(200, fake._set_faults(json.loads(body.decode("utf-8") or "{}")))
            return
        if path != TICKETS_PATH:
            raise BadRequest(404, "Not found")
        if not fake._authorised(self.headers.get("Authorization")):
            raise BadRequest(401, "Couldn't authenticate you")
        if self.answer_scripted():
            return
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            raise BadRequest(415, "expected application/json")
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(400, "the body is not valid JSON") from None
        ticket = validate(payload)
        record = fake._record(path, dict(self.headers.items()), body, payload)
        answer = {"ticket": fake._ticket_json(record.ticket_id, ticket)}
        if fake._take_drop():
            self.close_connection = True  # made, but the answer never leaves: the client sees a reset
            return
        headers = {"x-idempotency-lookup": "hit" if record.repeat else "miss"}
        headers["Location"] = answer["ticket"]["url"]
        self._json(200 if record.repeat else 201, answer, headers)


class FakeZendesk(FakeServer[RecordedTicket]):
    """A loopback HTTP server that accepts ``POST /api/v2/tickets.json`` like Zendesk.

    ``attempts`` counts every POST to the tickets URL, whatever the answer.
    """

    handler = ZendeskHandler
    thread_name = "fake-zendesk"

    def __init__(
        self,
        email: str = "agent@support.example",
        api_token: str = "zd-fake-token-0123456789",
        subdomain: str = "joinourclass",
        port: int = 0,
    ):
        super().__init__(port)
        self.email = email
        self.api_token = api_token
        self.subdomain = subdomain
        self._ids = itertools.count(FIRST_TICKET_ID)
        self._idempotency: dict[str, tuple[bytes, int]] = {}
        self._made: dict[int, dict] = {}  # ticket id -> the ticket as Zendesk shows it
        self._drops = 0
        self.honour_idempotency = True
        self.lookups = 0

    # -- faults -------------------------------------------------------------------------------

    def drop_after_create(self, count: int = 1) -> None:
        """Make the next ``count`` tickets, then close each connection without answering."""
        with self._lock:
            self._drops = count

    def _set_faults(self, faults: object) -> dict:
        """POST /_fake/faults: {"drop_after_create": n, "honour_idempotency": bool} (both optional)."""
        if not isinstance(faults, dict):
            raise BadRequest(400, "expected a JSON object")
        with self._lock:
            if "drop_after_create" in faults:
                self._drops = int(faults["drop_after_create"])
            if "honour_idempotency" in faults:
                self.honour_idempotency = bool(faults["honour_idempotency"])
            return {"drop_after_create": self._drops, "honour_idempotency": self.honour_idempotency}

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drops <= 0:
                return False
            self._drops -= 1
            return True

    def config(self) -> dict[str, str]:
        """ZENDESK_* settings that point the app at this fake."""
        return {
            "ZENDESK_SUBDOMAIN": self.subdomain,
            "ZENDESK_EMAIL": self.email,
            "ZENDESK_API_TOKEN": self.api_token,
            "ZENDESK_BASE_URL": self.base_url,
        }

    # -- reading ----------------------------------------------------------------------------

    def tickets(self) -> list[RecordedTicket]:
        """Accepted requests that made a new ticket (idempotent repeats left out)."""
        return [request for request in self.accepted() if not request.repeat]

    def stats(self) -> dict[str, int]:
        requests, attempts = self._snapshot()
        made = sum(1 for request in requests if not request.repeat)
        return {"requests": len(requests), "tickets": made, "attempts": attempts, "lookups": self.lookups}

    def tickets_for(self, external_id: str) -> list[int]:
        """Ids of the tickets made with this external_id (more than one is a duplicate)."""
        return [ticket["id"] for ticket in self._lookup(external_id, count=False)]

    # -- what the handler calls ----------------------------------------------------------------

    def _clear(self) -> None:
        super()._clear()
        self._idempotency.clear()
        self._made.clear()
        self._drops = 0
        self.lookups = 0  # honour_idempotency is a setting (--ignore-idempotency), kept by a reset

    def _ticket_json(self, ticket_id: int, ticket: dict) -> dict:
        """A ticket as Zendesk shows it (the fields the app and the tests read)."""
        return {
            "id": ticket_id,
            "url": f"{self.base_url}/api/v2/tickets/{ticket_id}.json",
            "external_id": ticket.get("external_id"),
            "subject": ticket.get("subject"),
            "status": "new",
            "tags": ticket.get("tags") or [],
        }

    def _lookup(self, external_id: str | None, *, count: bool = True) -> list[dict]:
        """The tickets with this external_id, oldest first (List Tickets' order)."""
        with self._lock:
            if count:
                self.lookups += 1
            made = [ticket for _, ticket in sorted(self._made.items())]
        return [ticket for ticket in made if external_id and ticket["external_id"] == external_id]

    def _authorised(self, header: str | None) -> bool:
        return basic_auth_matches(header, f"{self.email}/token", self.api_token)

    def _record(self, path: str, headers: dict[str, str], body: bytes, payload: dict) -> RecordedTicket:
        """Make a ticket, or find the one an earlier request with this Idempotency-Key made."""
        key = headers.get("Idempotency-Key") if self.honour_idempotency else None
        with self._lock:
            known = self._idempotency.get(key) if key else None
            if known is not None and known[0] != body:
                raise BadRequest(400, "IdempotentRequestError: the key was used with another request")
            repeat = known is not None
            ticket_id = known[1] if known is not None else next(self._ids)
            if key and not repeat:
                self._idempotency[key] = (body, ticket_id)
            record = RecordedTicket(path, headers, body, payload, ticket_id, time.time(), repeat)
            self.requests.append(record)
            if not repeat:
                self._made[ticket_id] = self._ticket_json(ticket_id, payload["ticket"])
        return record


def main(argv: list[str] | None = None) -> int:
    parser = command_line("Run a fake Zendesk Tickets API on 127.0.0.1.")
    parser.add_argument("--email", default="agent@support.example", help="the agent email it accepts")
    parser.add_argument("--token", default="zd-fake-token-0123456789", help="the API token it accepts")
    parser.add_argument("--ignore-idempotency", action="store_true", help="forget every Idempotency-Key")
    return run(parser, argv, lambda args: _from_args(args))


def _from_args(args) -> FakeZendesk:
    fake = FakeZendesk(email=args.email, api_token=args.token, port=args.port)
    fake.honour_idempotency = not args.ignore_idempotency
    return fake


if __name__ == "__main__":
    sys.exit(main())
