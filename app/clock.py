"""The school's wall clock: its time zone, and days on that clock in Python and in SQL.

Times are stored in UTC; people read them, and count them per day, on their school's clock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import g
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import Date, String


def zone_named(name: str | None) -> ZoneInfo:
    """The time zone of that name (UTC if the name is empty or one we do not know)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def school_zone() -> ZoneInfo:
    """The current school's time zone."""
    return zone_named(g.school.timezone)


def start_of_day(day: date, zone: ZoneInfo) -> datetime:
    """The UTC moment a day begins on that zone's clock (the first valid time after a DST gap)."""
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


class _LocalDate(FunctionElement):
    """SQL: the calendar day of a stored UTC timestamp on a zone's clock."""

    type = Date()
    inherit_cache = True
    # The zone is part of the statement's cache key, or one school's SQL would serve another's.
    _traverse_internals = [*FunctionElement._traverse_internals, ("zone_name", InternalTraversal.dp_string)]

    def __init__(self, column, zone: ZoneInfo):
        super().__init__(column)
        # Inline, not a bound parameter: GROUP BY must repeat the SELECT's expression exactly,
        # and PostgreSQL sees two parameters as two different expressions.
        self.zone_name = zone.key


def local_date(column, zone: ZoneInfo) -> _LocalDate:
    """The day ``column`` (a UTC timestamp) falls on in ``zone``, computed by the database."""
    return _LocalDate(column, zone)


def _zone_literal(element, compiler) -> str:
    return compiler.render_literal_value(element.zone_name, String())


@compiles(_LocalDate, "postgresql")
def _local_date_postgresql(element, compiler, **kw):
    (column,) = list(element.clauses)
    return f"date(timezone({_zone_literal(element, compiler)}, {compiler.process(column, **kw)}))"


@compiles(_LocalDate, "sqlite")
def _local_date_sqlite(element, compiler, **kw):
    (column,) = list(element.clauses)
    return f"local_date({compiler.process(column, **kw)}, {_zone_literal(element, compiler)})"


def sqlite_local_date(stored: str | None, zone: str | None) -> str | None:
    """SQLite has no time zone rules: this is ``local_date`` registered on its connections."""
    if stored is None:
        return None
    moment = datetime.fromisoformat(stored)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone_named(zone)).date().isoformat()
