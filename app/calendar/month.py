"""The month view's grid: weeks of a month on the school's clock, starting on the reader's first weekday.

The first weekday is CLDR's for the language's most likely country (Babel ``Locale.first_week_day``
of "en" -> en_US: Sunday; "es" -> es_ES: Monday; "ar" -> ar_EG: Saturday): a bare language has no
country, and CLDR's world default (Monday) would put an American week on Monday.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError, dates
from babel.core import get_global

from app import clock
from app.models.calendar import Event

# The years the month view walks: the event form's range (forms.EARLIEST..LATEST), so a
# typed ?month=9999-12 is refused rather than overflowing datetime at the grid's last day.
FIRST_YEAR, LAST_YEAR = 1900, 2200
MAX_PARAM = 20  # characters of ?month= read at all


def parse_month(value: str | None, today: date) -> date | None:
    """The first day of ``?month=YYYY-MM`` (today's month when absent), or None when it is not one."""
    if value is None or value == "":
        return today.replace(day=1)
    if len(value) > MAX_PARAM or not value.isascii():
        return None
    year_text, sep, month_text = value.partition("-")
    if not sep or not (year_text.isdigit() and month_text.isdigit()) or len(year_text) != 4:
        return None
    year, month = int(year_text), int(month_text)
    if not (FIRST_YEAR <= year <= LAST_YEAR and 1 <= month <= 12):
        return None
    return date(year, month, 1)


def month_param(first: date) -> str:
    """The ``?month=`` value of a month (the format of an ``<input type=month>``)."""
    return f"{first.year:04d}-{first.month:02d}"


def shift_month(first: date, by: int) -> date | None:
    """The first day of the month ``by`` months away, or None outside the years the view walks."""
    index = first.year * 12 + first.month - 1 + by
    year, month = divmod(index, 12)
    if not FIRST_YEAR <= year <= LAST_YEAR:
        return None
    return date(year, month + 1, 1)


def likely_locale(code: str) -> Locale:
    """The language with its most likely country (CLDR likely subtags): en -> en_US."""
    likely = get_global("likely_subtags").get(code)
    try:
        return Locale.parse(likely or code)
    except (UnknownLocaleError, ValueError):
        return Locale.parse(code)


def first_weekday(code: str) -> int:
    """The reader's first day of the week, 0 = Monday ... 6 = Sunday."""
    return likely_locale(code).first_week_day


def weekdays(code: str) -> list[tuple[int, str, str]]:
    """The week's days in the reader's order: (weekday, abbreviated name, full name)."""
    locale = Locale.parse(code)
    start = first_weekday(code)
    names = locale.days["stand-alone"]
    return [
        (day, names["abbreviated"][day], names["wide"][day]) for day in ((start + i) % 7 for i in range(7))
    ]


def next_first(first: date) -> date:
    """The first day of the following month."""
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1)


def weeks(first: date, start_weekday: int) -> list[list[date]]:
    """The whole weeks shown for the month of ``first``: from the 1st's week to the last day's."""
    begin = first - timedelta(days=(first.weekday() - start_weekday) % 7)
    last = next_first(first) - timedelta(days=1)
    end = last + timedelta(days=(start_weekday - 1 - last.weekday()) % 7)
    count = (end - begin).days + 1
    days = [begin + timedelta(days=i) for i in range(count)]
    return [days[i : i + 7] for i in range(0, count, 7)]


def caption(first: date, code: str) -> str:
    """The month and year as the reader's language writes them ('March 2026', 'marzo de 2026')."""
    return dates.format_skeleton("yMMMM", first, locale=code)


def day_number(day: date, code: str) -> str:
    """The day of the month in the reader's digits."""
    return dates.format_skeleton("d", day, locale=code)


def span_utc(grid: list[list[date]], zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC moments the grid's first day begins and the day after its last begins, on that clock."""
    return (
        clock.start_of_day(grid[0][0], zone),
        clock.start_of_day(grid[-1][-1] + timedelta(days=1), zone),
    )


@dataclass
class Placed:
    """An event in a day cell: its local start and end, and whether it began on an earlier day."""

    event: Event
    starts: datetime
    ends: datetime
    continued: bool = False


def place(events: list[Event], grid: list[list[date]], zone: ZoneInfo) -> dict[date, list[Placed]]:
    """Each event on every day of the grid it touches, on the school's clock.

    An event that ends exactly at midnight does not touch the day that midnight starts.
    """
    shown = {day for week in grid for day in week}
    first, last = grid[0][0], grid[-1][-1]
    by_day: dict[date, list[Placed]] = defaultdict(list)
    for event in events:
        starts, ends = event.starts_at.astimezone(zone), event.ends_at.astimezone(zone)
        begin = starts.date()
        finish = ends.date()
        if ends > starts and ends.time() == datetime.min.time():
            finish -= timedelta(days=1)
        day = max(begin, first)
        while day <= min(finish, last):
            if day in shown:
                by_day[day].append(Placed(event, starts, ends, continued=day != begin))
            day += timedelta(days=1)
    return dict(by_day)
