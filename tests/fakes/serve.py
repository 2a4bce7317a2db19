"""Run a stand-in as its own process: ``python -m tests.fakes.serve mailgun|zendesk|libretranslate``.

``mailgun`` is tests/fakes/mailgun.py's command line as it is (messages, Events API, scripted
faults, ``GET /_fake/recipients``). ``zendesk`` is the fake Zendesk of tests/fakes/zendesk.py
with what the fault matrix (tests/integration/faults_harness.py) also needs:

- ``GET /_fake/tickets``: ``{"counts": {external_id: tickets made}}``, idempotent repeats left
  out, so a caller can tell that each support request became exactly one ticket;
- ``POST /_fake/faults`` ``{"no_answer": K, "hold": S, "forget_keys": bool}``: the next K
  tickets are made and then left unanswered (the connection is held ``hold`` seconds, longer
  than the client waits, and closed without a response); with ``forget_keys`` Zendesk no
  longer remembers Idempotency-Keys (it keeps them for two hours only), so a retry with the
  same key makes a second ticket unless the client looks the first one up.

``libretranslate`` is tests/fakes/libretranslate.py's command line as it is (``--api-key``).

Each prints "listening <url>" then "ready", and stop on SIGTERM/SIGINT or after --lifetime.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections import Counter
from urllib.parse import urlsplit

from tests.fakes import libretranslate, mailgun
from tests.fakes.base import BadRequest, command_line, run
from tests.fakes.zendesk import TICKETS_PATH, FakeZendesk, RecordedTicket, ZendeskHandler


class FaultyZendeskHandler(ZendeskHandler):
    """The fake Zendesk's handler, plus the matrix's control endpoints and "made, no answer"."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        if urlsplit(self.path).path == "/_fake/tickets":
            self._json(200, {"counts": self.fake.ticket_counts()})
        else:
            super().do_GET()

    def serve(self, path: str, body: bytes) -> None:
        """``/_fake/faults`` here; the tickets endpoint as the fake Zendesk answers it."""
        if path == "/_fake/faults":
            payload = json.loads(body.decode("utf-8") or "{}")
            if not isinstance(payload, dict):
                raise BadRequest(400, "expected a JSON object")
            self._json(200, self.fake.set_faults(payload))
            return
        super().serve(path, body)

    def _json(self, status, payload, headers=None) -> None:
        """A ticket just made (201) goes unanswered while ``no_answer`` lasts."""
        fake: FaultyZendesk = self.fake
        if status == 201 and urlsplit(self.path).path == TICKETS_PATH and fake.take_no_answer():
            fake._stopping.wait(fake.hold)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        super()._json(status, payload, headers)


class FaultyZendesk(FakeZendesk):
    """FakeZendesk that can make a ticket and not answer, and can forget Idempotency-Keys."""

    handler = FaultyZendeskHandler

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.no_answer = 0
        self.hold = 0.0
        self.forget_keys = False
        self.unanswered = 0
        self._fault_lock = threading.Lock()

    def set_faults(self, faults: dict) -> dict:
        """Set the faults to come; returns them as now set."""
        with self._fault_lock:
            self.no_answer = int(faults.get("no_answer", self.no_answer))
            self.hold = min(float(faults.get("hold", self.hold)), 30.0)
            self.forget_keys = bool(faults.get("forget_keys", self.forget_keys))
            return {"no_answer": self.no_answer, "hold": self.hold, "forget_keys": self.forget_keys}

    def take_no_answer(self) -> bool:
        """Whether this ticket's answer is to be withheld (one of the ``no_answer`` still to come)."""
        with self._fault_lock:
            if self.no_answer <= 0:
                return False
            self.no_answer -= 1
            self.unanswered += 1
            return True

    def ticket_counts(self) -> dict[str, int]:
        """Tickets made per external_id (our reference)."""
        return dict(Counter(str(t.ticket.get("external_id")) for t in self.tickets()))

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "unanswered": self.unanswered}

    def _record(self, path: str, headers: dict[str, str], body: bytes, payload: dict) -> RecordedTicket:
        if self.forget_keys:
            with self._lock:
                self._idempotency.clear()
        return super()._record(path, headers, body, payload)


def zendesk_main(argv: list[str]) -> int:
    """The fault-capable fake Zendesk on 127.0.0.1."""
    parser = command_line("Run a fake Zendesk Tickets API (with the fault matrix's faults) on 127.0.0.1.")
    parser.add_argument("--email", default="agent@support.example", help="the agent email it accepts")
    parser.add_argument("--token", default="zd-fake-token-0123456789", help="the API token it accepts")
    return run(
        parser, argv, lambda args: FaultyZendesk(email=args.email, api_token=args.token, port=args.port)
    )


def main(argv: list[str] | None = None) -> int:
    """Dispatch on the first argument: ``mailgun``, ``zendesk`` or ``libretranslate``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    mains = {"mailgun": mailgun.main, "zendesk": zendesk_main, "libretranslate": libretranslate.main}
    if not argv or argv[0] not in mains:
        usage = "usage: python -m tests.fakes.serve mailgun|zendesk|libretranslate [--port N] [options]"
        print(usage, file=sys.stderr)
        return 2
    return mains[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
