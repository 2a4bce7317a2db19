"""Lookups for views: whatever a route looks up, nothing found is a 404, said in one place."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import abort
from sqlalchemy import select

from app.extensions import db

T = TypeVar("T")


def or_404(found: T | None) -> T:
    """What a lookup found, or a 404 when it found nothing (another school's id finds nothing)."""
    if found is None:
        abort(404)
    return found


def school_row_or_404(model: type[T], row_id: int) -> T:
    """One row of the bound school by id, or 404.

    A SELECT rather than ``session.get``: ``get`` can hand back an object already in the
    session's identity map without asking the database, and so without the tenancy scope.
    """
    column: Any = model.id  # type: ignore[attr-defined]  # every school model has an integer id
    return or_404(db.session.scalar(select(model).where(column == row_id)))
