"""Keyset pages, oldest first, with a capped count: the approval queue's shape, shared.

A page is the rows after an anchor row in (created_at, id) order, one row more than the page
to know whether another follows; the count stops at a cap, so a large school's backlog is
never read whole to say how many wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, func, or_, select

from app.extensions import db

PAGE_SIZE = 50
# A count says "1,000+" past this: counting further would read the whole backlog every view.
COUNT_CAP = 1000


@dataclass
class OldestFirst:
    """One page of rows, oldest first; the (capped) number waiting; the next page's anchor id."""

    rows: list[Any]
    waiting: int
    more_waiting: bool  # ``waiting`` is the cap and more wait
    next_after: int | None


def after_anchor(query: Select, model: Any, anchor: Any | None) -> Select:
    """The rows of ``query`` after the ``anchor`` row in (created_at, id) order (all for None)."""
    if anchor is None:
        return query
    return query.where(
        or_(
            model.created_at > anchor.created_at,
            and_(model.created_at == anchor.created_at, model.id > anchor.id),
        )
    )


def capped_count(query: Select, key: Any, cap: int) -> tuple[int, bool]:
    """How many rows ``query`` finds, counting no further than ``cap`` + 1; and whether more."""
    capped = query.with_only_columns(key).limit(cap + 1).subquery()
    found = db.session.scalar(select(func.count()).select_from(capped)) or 0
    return min(found, cap), found > cap


def oldest_first(
    query: Select, counted: Select, model: Any, anchor: Any | None, size: int, cap: int
) -> OldestFirst:
    """A page of ``size`` rows of ``query`` after ``anchor``, oldest first, and ``counted``'s capped count."""
    ordered = after_anchor(query, model, anchor).order_by(model.created_at, model.id).limit(size + 1)
    rows = list(db.session.scalars(ordered))
    waiting, more_waiting = capped_count(counted, model.id, cap)
    more = len(rows) > size
    rows = rows[:size]
    return OldestFirst(rows, waiting, more_waiting, rows[-1].id if more else None)
