"""Column helpers and the mixin that marks a table as belonging to one school."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import CursorResult, ForeignKey, Integer, Result
from sqlalchemy.orm import Mapped, declared_attr, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (tests move it with time-machine)."""
    return datetime.now(UTC)


def rowcount(result: Result) -> int:
    """How many rows an UPDATE or DELETE run through the session matched.

    ``Session.execute`` is typed as returning a ``Result``; for these statements it is a
    ``CursorResult``, which is what carries the count.
    """
    if not isinstance(result, CursorResult):
        raise TypeError(f"{type(result).__name__} carries no row count (not an UPDATE or DELETE?)")
    return result.rowcount


class UTCDateTime(TypeDecorator):
    """Store UTC; always hand back aware datetimes, even from SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class SchoolScoped:
    """Rows of one school. ``app.tenancy`` filters every query of these to the current school."""

    @declared_attr
    def school_id(cls) -> Mapped[int]:  # noqa: N805 - SQLAlchemy passes the class
        return mapped_column(Integer, ForeignKey("school.id", ondelete="CASCADE"), index=True, nullable=False)


class SchoolOrPlatform:
    """Rows of one school, or of the platform itself (``school_id`` NULL: a policy notice, an
    account email, a message from the public contact form). ``app.tenancy`` shows code bound to
    a school that school's rows and the platform's, code bound to none the platform's only, and
    every school's only inside ``unscoped()``. Each model declares its own nullable column.
    """

    if TYPE_CHECKING:  # for the type checker only: a class annotation here would map a column
        school_id: int | None
