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

As a separate process (a worker test or a benchmark)::

    python -m tests.fakes.mailgun --port 0 --key K --domain D
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
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from app.mail.backends import personalise

MAX_RECIPIENTS = 1000
MAX_BODY = 25 * 1024 * 1024  # Mailgun's message size limit
MAX_DELAY = 30.0  # a scripted delay never holds a thread longer than this
QUEUED = "Queued. Thank you."


@dataclass
class Scripted:
    """One scripted answer: ``status=None`` means "answer normally" (after ``delay``)."""

    status: int | None = None
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def parse(cls, item: object) -> Scripted:
        """Accept ``(status, body[, headers])`` or ``{"status", "body", "headers", "delay"}``."""
        if isinstance(item, Scripted):
            return item
        if isinstance(item, Mapping):
            status, body = item.get("status"), item.get("body")
            headers, delay = item.get("headers") or {}, item.get("delay") or 0.0
        elif isinstance(item, list | tuple) and 1 <= len(item) <= 3:
            status, body, headers, delay = item[0], item[1] if len(item) > 1 else None, {}, 0.0
            if len(item) == 3:
                headers = item[2] or {}
        else:
            raise ValueError(f"cannot script a response from {item!r}")
        if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
            raise ValueError(f"bad scripted status {status!r}")
        delay = float(delay)
        if not 0 <= delay <= MAX_DELAY:
            raise ValueError(f"scripted delay must be between 0 and {MAX_DELAY} seconds")
        return cls(status, body, {str(k): str(v) for k, v in dict(headers).items()}, delay)


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


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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


class FakeMailgun:
    """A loopback HTTP server that accepts ``POST /v3/<domain>/messages`` like Mailgun."""

    def __init__(self, api_key: str = "key-fake-0123456789", domain: str = "mg.example.test", port: int = 0):
        self.api_key = api_key
        self.domain = domain
        self._port = port
        self._lock = threading.Lock()
        self._script: deque[Scripted] = deque()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[RecordedRequest] = []
        self.attempts = 0  # every POST to a messages URL, whatever the answer

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeMailgun:
        if self._server is not None:
            raise RuntimeError("already started")
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self))
        server.daemon_threads = True
        server.block_on_close = False
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-mailgun", daemon=True
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

    def __enter__(self) -> FakeMailgun:
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

    # -- scripting and reading --------------------------------------------------------------

    def queue_responses(self, responses: Iterable[object]) -> None:
        """Answer the next requests with these, in order; then 200 "Queued" again."""
        parsed = [Scripted.parse(item) for item in responses]
        with self._lock:
            self._script.extend(parsed)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.attempts = 0

    def accepted(self) -> list[RecordedRequest]:
        """A snapshot of the accepted requests (safe while the server runs)."""
        with self._lock:
            return list(self.requests)

    def recipients(self) -> list[str]:
        """Every address accepted so far, in order, once per request it was in."""
        return [address for request in self.accepted() for address in request.recipients]

    def stats(self) -> dict[str, int]:
        with self._lock:
            requests = list(self.requests)
            attempts = self.attempts
        recipients = sum(len(request.recipients) for request in requests)
        return {"requests": len(requests), "recipients": recipients, "attempts": attempts}

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

    def _next_script(self) -> Scripted | None:
        with self._lock:
            self.attempts += 1
            return self._script.popleft() if self._script else None

    def _new_id(self) -> str:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        return f"<{stamp}.{next(self._ids)}.{uuid.uuid4().hex[:12]}@{self.domain}>"

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), b"api") & hmac.compare_digest(
            password.encode(), self.api_key.encode()
        )


def _handler_for(fake: FakeMailgun) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeMailgun/1.0"
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
                self._json(404, {"message": "Not Found"})

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
                    self._messages(path, body)
            except BadRequest as error:
                self._json(error.status, {"message": error.message})
            except ValueError as error:
                self._json(400, {"message": f"bad request: {error}"})

        def _messages(self, path: str, body: bytes) -> None:
            parts = path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "v3" or parts[2] != "messages":
                raise BadRequest(404, "Not Found")
            if not fake._authorised(self.headers.get("Authorization")):
                raise BadRequest(401, "Forbidden")
            domain = unquote(parts[1])
            if domain != fake.domain:
                raise BadRequest(404, f"Domain not found: {domain}")
            scripted = fake._next_script()
            if scripted is not None and scripted.delay:
                fake._stopping.wait(scripted.delay)
            if scripted is not None and scripted.status is not None:
                self._json(scripted.status, scripted.body, scripted.headers)
                return
            fields, files = parse_form(self.headers.get("Content-Type", ""), body)
            validate(fields)
            message_id = fake._new_id()
            record = RecordedRequest(
                path=path,
                fields=fields,
                headers=dict(self.headers.items()),
                time=time.time(),
                message_id=message_id,
                files=files,
            )
            with fake._lock:
                fake.requests.append(record)
            self._json(200, {"id": message_id, "message": QUEUED})

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
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a fake Mailgun API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed at start)")
    parser.add_argument("--key", default="key-fake-0123456789", help="the API key it accepts")
    parser.add_argument("--domain", default="mg.example.test", help="the sending domain it accepts")
    parser.add_argument("--lifetime", type=float, default=3600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)

    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    fake = FakeMailgun(api_key=args.key, domain=args.domain, port=args.port).start()
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
