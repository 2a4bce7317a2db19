"""'Add to my calendar' for one event: Google and Outlook links, the .ics download, and webcal: feeds.

The links leave this site (the calendar service keeps them, browsers keep them in history):
they carry only what is not personal, the title, the times and the place. Never the
description, the class, or anyone's name. Times go in UTC; an event that runs from midnight
to midnight on the school's clock is an all-day event, given as dates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from urllib.parse import urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from flask import url_for

from app.models.calendar import Event

GOOGLE = "https://calendar.google.com/calendar/render"
OUTLOOK = "https://outlook.live.com/calendar/0/deeplink/compose"


def all_day(event: Event, zone: ZoneInfo) -> bool:
    """Does the event run whole days on the school's clock (midnight to a later midnight)?"""
    starts, ends = event.starts_at.astimezone(zone), event.ends_at.astimezone(zone)
    return ends > starts and starts.time() == time.min and ends.time() == time.min


def _utc(moment: datetime, pattern: str) -> str:
    return moment.astimezone(UTC).strftime(pattern)  # a machine format, not a reader's


def google(event: Event, zone: ZoneInfo, details: str) -> str:
    """Google Calendar's 'create event' template: UTC times (or dates, end exclusive) and the place."""
    if all_day(event, zone):
        dates = "/".join(m.astimezone(zone).strftime("%Y%m%d") for m in (event.starts_at, event.ends_at))
    else:
        dates = "/".join(_utc(m, "%Y%m%dT%H%M%SZ") for m in (event.starts_at, event.ends_at))
    query = {"action": "TEMPLATE", "text": event.title, "dates": dates, "details": details}
    if event.location:
        query["location"] = event.location
    return f"{GOOGLE}?{urlencode(query)}"


def outlook(event: Event, zone: ZoneInfo, details: str) -> str:
    """Outlook on the web's compose deep link: ISO 8601 times in UTC (or dates for a whole day)."""
    query = {"path": "/calendar/action/compose", "rru": "addevent", "subject": event.title}
    if all_day(event, zone):
        query["startdt"] = event.starts_at.astimezone(zone).date().isoformat()
        query["enddt"] = event.ends_at.astimezone(zone).date().isoformat()
        query["allday"] = "true"
    else:
        query["startdt"] = _utc(event.starts_at, "%Y-%m-%dT%H:%M:%SZ")
        query["enddt"] = _utc(event.ends_at, "%Y-%m-%dT%H:%M:%SZ")
    query["body"] = details
    if event.location:
        query["location"] = event.location
    return f"{OUTLOOK}?{urlencode(query)}"


@dataclass(frozen=True)
class AddLinks:
    """Where one event can be added: Google, Outlook, and the .ics (Apple Calendar and others)."""

    google: str
    outlook: str
    ics: str


def add_links(event: Event, zone: ZoneInfo) -> AddLinks:
    """The three ways to add ``event``; the details say only where it came from (this calendar)."""
    month = event.starts_at.astimezone(zone)
    details = url_for("calendar.month", month=f"{month.year:04d}-{month.month:02d}", _external=True)
    return AddLinks(
        google=google(event, zone, details),
        outlook=outlook(event, zone, details),
        ics=url_for("calendar.event_ics", event_id=event.id),
    )


def ics_event(event: Event) -> dict:
    """One event as ical.calendar() takes it (the same fields as the personal feed)."""
    return {
        "uid": f"event-{event.id}@joinourclass",
        "stamp": event.updated_at,
        "start": event.starts_at,
        "end": event.ends_at,
        "summary": event.title,
        "location": event.location,
        "description": event.description,
    }


def webcal(url: str) -> str:
    """The same address with the webcal: scheme, which calendar apps open as a subscription."""
    parts = urlsplit(url)
    return urlunsplit(("webcal", *parts[1:]))
