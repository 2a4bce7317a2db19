"""The fake Mailgun's event log, served as Mailgun's Events API (``GET /v3/<domain>/events``).

As the real one behaves, for the parts the app reads:

* every accepted message request writes one ``accepted`` event per recipient, carrying the
  request's user variables (``v:<name>`` fields) as ``user-variables``, its tags, and the
  Message-Id without angle brackets in ``message.headers.message-id``;
* an event becomes visible only ``delay`` seconds after it happened (Mailgun's log is
  eventually consistent: a poll right after a send may not show it yet);
* a query filters on ``event``, ``recipient``, ``user-variables`` (a JSON object that each
  event's variables must contain) and a time range (``begin`` epoch seconds, ``ascending``
  yes/no); ``limit`` is 100 by default and at most 300;
* answers are pages ``{"items": [...], "paging": {"first", "last", "next", "previous"}}``.
  ``next`` and ``previous`` are always given; past the end they answer an empty page, and
  asking ``next`` again later shows events written (or become visible) since.

Time is ``time.time()``, so in-process tests on the ``clock`` fixture move it with the clock.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tests.fakes.base import BadRequest

DEFAULT_LIMIT = 100
MAX_LIMIT = 300


@dataclass
class Event:
    """One event of the log, and when a query may first see it."""

    seq: int
    data: dict
    visible_at: float


@dataclass(frozen=True)
class Query:
    """What a first request asked for; paging URLs carry it on."""

    event: str | None = None
    recipient: str | None = None
    variables: tuple[tuple[str, str], ...] = ()
    begin: float | None = None
    end: float | None = None
    ascending: bool = False
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Query:
        """The query a request's parameters make; BadRequest for what Mailgun would refuse."""
        try:
            limit = int(params.get("limit", DEFAULT_LIMIT))
        except ValueError:
            raise BadRequest(400, "'limit' parameter is not a number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(400, f"'limit' parameter must be between 1 and {MAX_LIMIT}")
        ascending = params.get("ascending", "no").lower()
        if ascending not in ("yes", "no"):
            raise BadRequest(400, "'ascending' parameter must be yes or no")
        return cls(
            event=params.get("event") or None,
            recipient=(params.get("recipient") or "").lower() or None,
            variables=_variables(params.get("user-variables")),
            begin=_epoch(params.get("begin"), "begin"),
            end=_epoch(params.get("end"), "end"),
            ascending=ascending == "yes",
            limit=limit,
        )

    def matches(self, event: Event) -> bool:
        """Whether the event is one this query selects (visibility aside)."""
        data = event.data
        if self.event is not None and data["event"] != self.event:
            return False
        if self.recipient is not None and data["recipient"].lower() != self.recipient:
            return False
        variables = data.get("user-variables", {})
        if any(variables.get(name) != value for name, value in self.variables):
            return False
        # begin and end bound the range whichever way it is read (end is the far side of begin).
        low, high = (self.begin, self.end) if self.ascending else (self.end, self.begin)
        if low is not None and data["timestamp"] < low:
            return False
        return high is None or data["timestamp"] <= high


def _variables(raw: str | None) -> tuple[tuple[str, str], ...]:
    if not raw:
        return ()
    try:
        wanted = json.loads(raw)
    except ValueError:
        raise BadRequest(400, "'user-variables' parameter is not valid JSON") from None
    if not isinstance(wanted, dict):
        raise BadRequest(400, "'user-variables' parameter must be a JSON object")
    return tuple(sorted((str(name), str(value)) for name, value in wanted.items()))


def _epoch(raw: str | None, name: str) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise BadRequest(400, f"'{name}' parameter must be epoch seconds") from None


class EventLog:
    """Every event the fake has written, shown to queries once visible."""

    def __init__(self, domain: str, delay: float = 0.0) -> None:
        self.domain = domain
        self.delay = delay
        self._events: list[Event] = []
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def record_accepted(
        self, fields: Mapping[str, list[str]], message_id: str, recipients: Iterable[str]
    ) -> None:
        """One ``accepted`` event per distinct recipient of an accepted message request."""
        now = time.time()
        variables = {name[2:]: vs[0] for name, vs in fields.items() if name.startswith("v:") and vs}
        sender = (fields.get("from") or [""])[0]
        subject = (fields.get("subject") or [""])[0]
        seen: set[str] = set()
        with self._lock:
            for address in recipients:
                if address.lower() in seen:
                    continue
                seen.add(address.lower())
                data = {
                    "id": uuid.uuid4().hex[:22],
                    "event": "accepted",
                    "timestamp": now,
                    "log-level": "info",
                    "method": "http",
                    "recipient": address,
                    "recipient-domain": address.rpartition("@")[2],
                    "tags": list(fields.get("o:tag", [])),
                    "user-variables": dict(variables),
                    "flags": {"is-authenticated": True, "is-test-mode": False},
                    "envelope": {"sender": sender, "transport": "", "targets": address},
                    "message": {
                        "headers": {
                            "to": address,
                            "message-id": message_id.strip("<>"),
                            "from": sender,
                            "subject": subject,
                        },
                        "attachments": [],
                        "size": sum(len(v) for values in fields.values() for v in values),
                    },
                }
                self._events.append(Event(next(self._seq), data, now + self.delay))

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def count(self) -> int:
        with self._lock:
            return len(self._events)

    def accepted_for(self, name: str, value: str) -> list[dict]:
        """Every accepted event whose user variable ``name`` is ``value``, visible or not (for tests)."""
        with self._lock:
            return [
                e.data
                for e in self._events
                if e.data["event"] == "accepted" and e.data["user-variables"].get(name) == value
            ]

    # -- the API ---------------------------------------------------------------------------------

    def answer(self, base_url: str, token: str | None, params: Mapping[str, str]) -> dict:
        """The page for a first request (``token`` None) or for a paging URL's token."""
        if token is None:
            query, cursor, forward = Query.parse(params), None, True
        else:
            query, cursor, forward = _read_token(token)
        now = time.time()
        with self._lock:
            selected = [e for e in self._events if e.visible_at <= now and query.matches(e)]
        if not query.ascending:
            selected.reverse()
        items = _window(selected, query, cursor, forward)
        first_seq = items[0].seq if items else cursor
        last_seq = items[-1].seq if items else cursor
        url = f"{base_url}/v3/{self.domain}/events"
        return {
            "items": [e.data for e in items],
            "paging": {
                "first": f"{url}/{_token(query, None, True)}",
                "last": f"{url}/{_token(query, None, False)}",
                "next": f"{url}/{_token(query, last_seq, True)}",
                "previous": f"{url}/{_token(query, first_seq, False)}",
            },
        }


def _window(selected: list[Event], query: Query, cursor: int | None, forward: bool) -> list[Event]:
    """The page's events: after the cursor going forward, before it going back (in traversal order)."""
    position = {event.seq: index for index, event in enumerate(selected)}
    if forward:
        start = 0 if cursor is None else _after(selected, cursor, query.ascending, position)
        return selected[start : start + query.limit]
    end = len(selected) if cursor is None else _before(selected, cursor, query.ascending, position)
    return selected[max(0, end - query.limit) : end]


def _after(selected: list[Event], cursor: int, ascending: bool, position: dict[int, int]) -> int:
    if cursor in position:
        return position[cursor] + 1
    later = [i for i, e in enumerate(selected) if (e.seq > cursor if ascending else e.seq < cursor)]
    return later[0] if later else len(selected)


def _before(selected: list[Event], cursor: int, ascending: bool, position: dict[int, int]) -> int:
    if cursor in position:
        return position[cursor]
    earlier = [i for i, e in enumerate(selected) if (e.seq < cursor if ascending else e.seq > cursor)]
    return earlier[-1] + 1 if earlier else 0


def _token(query: Query, cursor: int | None, forward: bool) -> str:
    raw = query.__dict__ | {"variables": [list(v) for v in query.variables]}
    state = {"q": raw, "c": cursor, "f": forward}
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=")


def _read_token(token: str) -> tuple[Query, int | None, bool]:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        raw = state["q"]
        query = Query(**(raw | {"variables": tuple(tuple(v) for v in raw["variables"])}))
        return query, state["c"], bool(state["f"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise BadRequest(404, "Not Found") from None
