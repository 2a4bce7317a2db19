"""Dates, times and numbers as the reader's language writes them (Babel's CLDR data).

Times are stored in UTC and shown on a clock: the school's by default, UTC where a page says
so (consent and platform records). Babel is called directly, not through Flask-Babel's
helpers, because those expect pytz zones and the app's zones are ``zoneinfo`` ones.
Machine formats (datetime-local values, iCalendar, file names) do not come through here.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from babel import dates, numbers
from flask import g

from app import clock
from app.i18n import current_locale

UTC_ZONE = ZoneInfo("UTC")


def _zone(zone: ZoneInfo | str | None) -> ZoneInfo:
    if isinstance(zone, ZoneInfo):
        return zone
    if zone:
        return clock.zone_named(zone)
    return clock.school_zone() if g.get("school") is not None else ZoneInfo("UTC")


def _local(moment: datetime, zone: ZoneInfo | str | None) -> datetime:
    return moment.astimezone(_zone(zone))


def _joined(day_text: str, time_text: str, locale: str) -> str:
    # CLDR's own pattern joins a date and a time ("{1}, {0}"; "{1}، {0}" in Arabic).
    pattern = str(dates.get_datetime_format("medium", locale=locale))
    return pattern.replace("{1}", day_text).replace("{0}", time_text)


def _date_and_time(value: datetime | None, zone: ZoneInfo | str | None, skeleton: str) -> str:
    """The date (a CLDR skeleton) and the short time of a stored time, on that clock."""
    if value is None:
        return ""
    locale = current_locale()
    local = _local(value, zone)
    return _joined(
        dates.format_skeleton(skeleton, local, locale=locale),
        dates.format_time(local, "short", locale=locale),
        locale,
    )


def moment(value: datetime | None, zone: ZoneInfo | str | None = None) -> str:
    """A stored time with its weekday, on that clock: 'Mon, May 4, 2026, 9:30 AM'."""
    return _date_and_time(value, zone, "yMMMEd")


def short_moment(value: datetime | None, zone: ZoneInfo | str | None = None) -> str:
    """A stored time without its weekday, for tables: 'May 4, 2026, 9:30 AM'."""
    return _date_and_time(value, zone, "yMMMd")


def utc_moment(value: datetime | None) -> str:
    """A stored time on the UTC clock, saying so: 'May 4, 2026, 9:30 AM UTC'."""
    if value is None:
        return ""
    return f"{_date_and_time(value, UTC_ZONE, 'yMMMd')} UTC"


def _date_only(value: datetime | date | None, zone: ZoneInfo | str | None, skeleton: str) -> str:
    """A date by a CLDR skeleton; a stored time becomes its date on that clock."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = _local(value, zone).date()
    return dates.format_skeleton(skeleton, value, locale=current_locale())


def day(value: datetime | date | None, zone: ZoneInfo | str | None = None) -> str:
    """A date ('May 4, 2026'); a stored time becomes its date on that clock."""
    return _date_only(value, zone, "yMMMd")


def long_day(value: datetime | date | None, zone: ZoneInfo | str | None = None) -> str:
    """A date with its weekday ('Mon, May 4, 2026')."""
    return _date_only(value, zone, "yMMMEd")


def clock_time(value: datetime | None, zone: ZoneInfo | str | None = None) -> str:
    """Only the time of day, on that clock ('9:30 AM')."""
    if value is None:
        return ""
    return dates.format_time(_local(value, zone), "short", locale=current_locale())


def number(value: int | float | None) -> str:
    """A number with the language's grouping ('12,345'; '12.345' in Spanish)."""
    return numbers.format_decimal(value or 0, locale=current_locale())


FILTERS = {
    "moment": moment,
    "short_moment": short_moment,
    "utc_moment": utc_moment,
    "day": day,
    "long_day": long_day,
    "clock_time": clock_time,
    "number": number,
}
