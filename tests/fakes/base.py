"""What the fake services share: a real HTTP server on loopback that records and scripts answers.

A fake is a :class:`FakeServer` subclass (the service's state: what it accepted, how it checks
credentials) paired with a :class:`FakeHandler` subclass (the service's one real endpoint, and
how it words its errors). The base gives every fake the same life cycle (``start``/``stop`` or
``with``, a thread serving ``127.0.0.1`` on port 0 by default, ``.base_url``), the same scripted
answers (``queue_responses``, each with an optional delay that ``stop()`` cuts short), the same
control endpoints (``GET /_fake/stats``, ``POST /_fake/script``, ``POST /_fake/reset``) and the
same command line (``--port``, ``--lifetime``; prints "listening <url>" then "ready").
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hmac
import json
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar, Generic, Self, TypeVar
from urllib.parse import urlsplit

MAX_DELAY = 30.0  # a scripted delay never holds a thread longer than this

RecordT = TypeVar("RecordT")


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


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def basic_auth_matches(header: str | None, user: str, password: str) -> bool:
    """Whether an ``Authorization`` header is HTTP Basic with exactly this user and password."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        given_user, _, given_password = (
            base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given_user.encode(), user.encode()) & hmac.compare_digest(
        given_password.encode(), password.encode()
    )


class FakeHandler(BaseHTTPRequestHandler):
    """Serves one :class:`FakeServer`: the ``/_fake/*`` control endpoints, then :meth:`serve`.

    Subclasses set ``server_version``, ``max_body``, ``json_content_type`` and ``not_found``,
    implement :meth:`serve` and word errors their service's way in :meth:`error_payload` and
    :meth:`invalid_payload`. ``fake`` is filled in by :meth:`FakeServer.start`.
    """

    fake: ClassVar[FakeServer]
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers at stop()
    max_body: ClassVar[int] = 1024 * 1024
    json_content_type: ClassVar[str] = "application/json"
    not_found: ClassVar[str] = "Not Found"

    def log_message(self, format, *args):
        pass

    def handle(self):
        with contextlib.suppress(ConnectionError, TimeoutError):  # the client gave up (a timeout test)
            super().handle()

    def do_GET(self):  # noqa: N802 - http.server's naming
        if urlsplit(self.path).path == "/_fake/stats":
            self._json(200, self.fake.stats())
        else:
            self._json(404, self.error_payload(404, self.not_found))

    def do_POST(self):  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        try:
            body = self._body()
            if path == "/_fake/script":
                items = json.loads(body.decode("utf-8") or "[]")
                if not isinstance(items, list):
                    raise BadRequest(400, "expected a JSON list")
                self.fake.queue_responses(items)
                self._json(200, {"queued": len(items)})
            elif path == "/_fake/reset":
                self.fake.reset()
                self._json(200, {"reset": True})
            else:
                self.serve(path, body)
        except BadRequest as error:
            self._json(error.status, self.error_payload(error.status, error.message))
        except ValueError as error:
            self._json(400, self.invalid_payload(error))

    # -- what a fake service fills in ------------------------------------------------------------

    def serve(self, path: str, body: bytes) -> None:
        """Answer a POST to any path but ``/_fake/*`` (raise :class:`BadRequest` to refuse it)."""
        raise BadRequest(404, self.not_found)

    def error_payload(self, status: int, message: str) -> object:
        """The JSON body of an error answer."""
        return {"message": message}

    def invalid_payload(self, error: ValueError) -> object:
        """The JSON body answering a request that could not be parsed."""
        return self.error_payload(400, f"bad request: {error}")

    # -- helpers for serve() -------------------------------------------------------------------

    def answer_scripted(self) -> bool:
        """Take the next scripted answer: wait its delay, then send it if it has a status.

        Counts the attempt. Returns True when a scripted answer was sent (nothing left to do).
        """
        scripted = self.fake._next_script()
        if scripted is not None and scripted.delay:
            self.fake._stopping.wait(scripted.delay)
        if scripted is not None and scripted.status is not None:
            self._json(scripted.status, scripted.body, scripted.headers)
            return True
        return False

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest(411, "Content-Length required")
        try:
            size = int(length)
        except ValueError:
            raise BadRequest(400, "bad Content-Length") from None
        if size < 0 or size > self.max_body:
            raise BadRequest(413, "Request Entity Too Large")
        return self.rfile.read(size)

    def _json(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", self.json_content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class FakeServer(Generic[RecordT]):
    """A loopback HTTP server that records accepted requests in ``requests``.

    ``attempts`` counts every request to the service's endpoint that got as far as the script
    (whatever the answer); ``requests`` holds only the accepted ones. Subclasses set ``handler``
    and ``thread_name`` and implement :meth:`stats`.
    """

    handler: ClassVar[type[FakeHandler]] = FakeHandler
    thread_name: ClassVar[str] = "fake-server"

    def __init__(self, port: int = 0):
        self._port = port
        self._lock = threading.Lock()
        self._script: deque[Scripted] = deque()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[RecordT] = []
        self.attempts = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("already started")
        handler = type(self.handler.__name__, (self.handler,), {"fake": self})
        server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
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

    def __enter__(self) -> Self:
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
        """Answer the next requests with these, in order; then answer normally again."""
        parsed = [Scripted.parse(item) for item in responses]
        with self._lock:
            self._script.extend(parsed)

    def reset(self) -> None:
        with self._lock:
            self._clear()

    def accepted(self) -> list[RecordT]:
        """A snapshot of the accepted requests (safe while the server runs)."""
        with self._lock:
            return list(self.requests)

    def stats(self) -> dict[str, int]:
        raise NotImplementedError

    # -- what the handler and subclasses call -------------------------------------------------

    def _clear(self) -> None:
        """Forget the script and everything received (called with the lock held)."""
        self._script.clear()
        self.requests.clear()
        self.attempts = 0

    def _snapshot(self) -> tuple[list[RecordT], int]:
        """The accepted requests and the attempt count, read together."""
        with self._lock:
            return list(self.requests), self.attempts

    def _next_script(self) -> Scripted | None:
        with self._lock:
            self.attempts += 1
            return self._script.popleft() if self._script else None

    def _accept(self, record: RecordT) -> None:
        with self._lock:
            self.requests.append(record)


def command_line(description: str) -> argparse.ArgumentParser:
    """The fake's command line: ``--port``; add the service's options, then call :func:`run`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed at start)")
    return parser


def run(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    make: Callable[[argparse.Namespace], FakeServer],
) -> int:
    """Serve ``make(args)`` until SIGTERM/SIGINT or ``--lifetime`` seconds, printing its progress."""
    parser.add_argument("--lifetime", type=float, default=3600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)

    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    fake = make(args).start()
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
