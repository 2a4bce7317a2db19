"""A fake Zendesk: a real HTTP server on loopback speaking the part of the Tickets API the app uses.

Not a mock object: the client under test makes real HTTP requests, with real Basic auth
(``<email>/token:<api token>``) and a real JSON body, and the fake checks them the way Zendesk
does (auth, JSON, a ticket with a comment body and a requester email) before recording them.
It honours ``Idempotency-Key`` as Zendesk does: the same key with the same body answers with
the first ticket again (``x-idempotency-lookup: hit``), with another body it is refused.
``requests`` keeps every accepted request with its raw bytes, so tests can check exactly what
left the app.

In-process::

    with FakeZendesk() as fake:
        client = ZendeskClient(fake.subdomain, fake.email, fake.api_token, base_url=fake.base_url)
        fake.queue_responses([(500, {"error": "boom"}), (429, {}, {"Retry-After": "1"})])

As a separate process (a worker test)::

    python -m tests.fakes.zendesk --port 0 --email E --token T
    # prints "listening http://127.0.0.1:N" then "ready"; GET /_fake/stats, POST /_fake/script,
    # POST /_fake/reset; it stops on SIGTERM/SIGINT or after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hmac
import itertools
import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.fakes.mailgun import BadRequest, Scripted

TICKETS_PATH = "/api/v2/tickets.json"
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


class FakeZendesk:
    """A loopback HTTP server that accepts ``POST /api/v2/tickets.json`` like Zendesk."""

    def __init__(
        self,
        email: str = "agent@support.example",
        api_token: str = "zd-fake-token-0123456789",
        subdomain: str = "joinourclass",
        port: int = 0,
    ):
        self.email = email
        self.api_token = api_token
        self.subdomain = subdomain
        self._port = port
        self._lock = threading.Lock()
        self._script: deque[Scripted] = deque()
        self._ids = itertools.count(FIRST_TICKET_ID)
        self._idempotency: dict[str, tuple[bytes, int]] = {}
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[RecordedTicket] = []
        self.attempts = 0  # every POST to the tickets URL, whatever the answer

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeZendesk:
        if self._server is not None:
            raise RuntimeError("already started")
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self))
        server.daemon_threads = True
        server.block_on_close = False
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-zendesk", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # ends any scripted delay at once
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeZendesk:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, str]:
        """ZENDESK_* settings that point the app at this fake."""
        return {
            "ZENDESK_SUBDOMAIN": self.subdomain,
            "ZENDESK_EMAIL": self.email,
            "ZENDESK_API_TOKEN": self.api_token,
            "ZENDESK_BASE_URL": self.base_url,
        }

    # -- scripting and reading --------------------------------------------------------------

    def queue_responses(self, responses: Iterable[object]) -> None:
        """Answer the next requests with these, in order; then 201 with a new ticket again."""
        parsed = [Scripted.parse(item) for item in responses]
        with self._lock:
            self._script.extend(parsed)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._idempotency.clear()
            self.requests.clear()
            self.attempts = 0

    def accepted(self) -> list[RecordedTicket]:
        """A snapshot of the accepted requests (safe while the server runs)."""
        with self._lock:
            return list(self.requests)

    def tickets(self) -> list[RecordedTicket]:
        """Accepted requests that made a new ticket (idempotent repeats left out)."""
        return [request for request in self.accepted() if not request.repeat]

    def stats(self) -> dict[str, int]:
        with self._lock:
            requests = list(self.requests)
            attempts = self.attempts
        made = sum(1 for request in requests if not request.repeat)
        return {"requests": len(requests), "tickets": made, "attempts": attempts}

    # -- what the handler calls ----------------------------------------------------------------

    def _next_script(self) -> Scripted | None:
        with self._lock:
            self.attempts += 1
            return self._script.popleft() if self._script else None

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected_user = f"{self.email}/token".encode()
        return hmac.compare_digest(user.encode(), expected_user) & hmac.compare_digest(
            password.encode(), self.api_token.encode()
        )

    def _record(self, path: str, headers: dict[str, str], body: bytes, payload: dict) -> RecordedTicket:
        """Make a ticket, or find the one an earlier request with this Idempotency-Key made."""
        key = headers.get("Idempotency-Key")
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
        return record


def _handler_for(fake: FakeZendesk) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeZendesk/1.0"
        protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers at stop()

        def log_message(self, format, *args):
            pass

        def handle(self):
            with contextlib.suppress(ConnectionError, TimeoutError):  # the client gave up (a timeout test)
                super().handle()

        def do_GET(self):  # noqa: N802 - http.server's naming
            if urlsplit(self.path).path == "/_fake/stats":
                self._json(200, fake.stats())
            else:
                self._json(404, {"error": "InvalidEndpoint", "description": "Not found"})

        def do_POST(self):  # noqa: N802 - http.server's naming
            path = urlsplit(self.path).path
            try:
                body = self._body()
                if path == "/_fake/script":
                    items = json.loads(body.decode("utf-8") or "[]")
                    if not isinstance(items, list):
                        raise BadRequest(400, "expected a JSON list")
                    fake.queue_responses(items)
                    self._json(200, {"queued": len(items)})
                elif path == "/_fake/reset":
                    fake.reset()
                    self._json(200, {"reset": True})
                else:
                    self._tickets(path, body)
            except BadRequest as error:
                if error.status == 401:  # Zendesk's own answer to bad credentials
                    self._json(401, {"error": error.message})
                else:
                    self._json(
                        error.status, {"error": _error_name(error.status), "description": error.message}
                    )
            except ValueError as error:
                self._json(400, {"error": "InvalidJSON", "description": f"bad request: {error}"})

        def _tickets(self, path: str, body: bytes) -> None:
            if path != TICKETS_PATH:
                raise BadRequest(404, "Not found")
            if not fake._authorised(self.headers.get("Authorization")):
                raise BadRequest(401, "Couldn't authenticate you")
            scripted = fake._next_script()
            if scripted is not None and scripted.delay:
                fake._stopping.wait(scripted.delay)
            if scripted is not None and scripted.status is not None:
                self._json(scripted.status, scripted.body, scripted.headers)
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
            answer = {
                "ticket": {
                    "id": record.ticket_id,
                    "url": f"{fake.base_url}/api/v2/tickets/{record.ticket_id}.json",
                    "external_id": ticket.get("external_id"),
                    "subject": ticket.get("subject"),
                    "status": "new",
                    "tags": ticket.get("tags") or [],
                }
            }
            headers = {"x-idempotency-lookup": "hit" if record.repeat else "miss"}
            headers["Location"] = answer["ticket"]["url"]
            self._json(200 if record.repeat else 201, answer, headers)

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None:
                raise BadRequest(411, "Content-Length required")
            try:
                size = int(length)
            except ValueError:
                raise BadRequest(400, "bad Content-Length") from None
            if size < 0 or size > MAX_BODY:
                raise BadRequest(413, "Request Entity Too Large")
            return self.rfile.read(size)

        def _json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _error_name(status: int) -> str:
    return {404: "InvalidEndpoint", 422: "RecordInvalid"}.get(status, "BadRequest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a fake Zendesk Tickets API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed at start)")
    parser.add_argument("--email", default="agent@support.example", help="the agent email it accepts")
    parser.add_argument("--token", default="zd-fake-token-0123456789", help="the API token it accepts")
    parser.add_argument("--lifetime", type=float, default=3600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)

    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    fake = FakeZendesk(email=args.email, api_token=args.token, port=args.port).start()
    print(f"listening {fake.base_url}", flush=True)
    print("ready", flush=True)
    deadline = time.monotonic() + args.lifetime
    try:
        while not done.wait(0.2) and time.monotonic() < deadline:
            pass
    finally:
        fake.stop()
    print(f"stopped {json.dumps(fake.stats())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
