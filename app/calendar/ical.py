"""iCalendar (RFC 5545) written by hand: escaped text, lines folded at 75 octets, CRLF endings."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

CRLF = "\r\n"
MAX_OCTETS = 75
# TEXT may hold no control characters but HTAB (RFC 5545 3.3.11); line breaks become "\n".
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def escape_text(value: str) -> str:
    """A TEXT value: backslash, semicolon and comma escaped, line breaks as \\n, controls dropped."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = _CONTROLS.sub("", value)
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return value.replace("\n", "\\n")


def fold(line: str) -> str:
    """Fold a content line so no physical line exceeds 75 octets, never inside a UTF-8 character."""
    encoded = line.encode("utf-8")
    if len(encoded) <= MAX_OCTETS:
        return line
    parts: list[str] = []
    start, limit = 0, MAX_OCTETS
    while start < len(encoded):
        end = min(start + limit, len(encoded))
        while end < len(encoded) and (encoded[end] & 0xC0) == 0x80:
            end -= 1  # back off to the start of a multi-byte character
        parts.append(encoded[start:end].decode("utf-8"))
        start, limit = end, MAX_OCTETS - 1  # continuation lines start with one space
    return (CRLF + " ").join(parts)


def utc_stamp(moment: datetime) -> str:
    """A DATE-TIME in UTC form: 20261130T140000Z."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def calendar(name: str, events: Iterable[dict]) -> str:
    """A VCALENDAR of VEVENTs; each event is a dict of uid, start, end, stamp, summary and optional text."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Join Our Class//Calendar//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{escape_text(name)}",
    ]
    for event in events:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{event['uid']}",
            f"DTSTAMP:{utc_stamp(event['stamp'])}",
            f"LAST-MODIFIED:{utc_stamp(event['stamp'])}",
            f"DTSTART:{utc_stamp(event['start'])}",
            f"DTEND:{utc_stamp(event['end'])}",
            f"SUMMARY:{escape_text(event['summary'])}",
        ]
        for key in ("location", "description"):
            if event.get(key):
                lines.append(f"{key.upper()}:{escape_text(event[key])}")
        lines.append("END:VEVENT")
    lines.append("END:VCALENDAR")
    return "".join(fold(line) + CRLF for line in lines)
