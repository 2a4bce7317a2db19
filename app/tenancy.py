"""The current school, and the one place that scopes every query of school data to it.

Models that mix in ``SchoolScoped`` can only be read or written while a school is bound
(a request by an approved member binds theirs; jobs and commands bind one explicitly) or
inside ``unscoped()``, which platform code uses on purpose and sparingly. Reading a
scoped model with neither raises ``TenancyError`` rather than returning every school's rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from flask import g, has_app_context
from sqlalchemy import Table, event, select
from sqlalchemy.orm import ORMExecuteState, Session, joinedload, with_loader_criteria
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ClauseElement

from app.models.base import SchoolScoped

_UNSCOPED = object()


class TenancyError(RuntimeError):
    """School data was touched with no school bound."""


def current_school_id() -> int | None:
    """The school the current request or job acts for, or None."""
    if not has_app_context():
        return None
    value = g.get("_tenancy_school_id")
    return None if value is _UNSCOPED else value


def _binding():
    return g.get("_tenancy_school_id") if has_app_context() else None


@contextmanager
def _bind(value) -> Iterator[None]:
    previous = g.get("_tenancy_school_id")
    g._tenancy_school_id = value
    try:
        yield
    finally:
        g._tenancy_school_id = previous


def bound(school_id: int):
    """Act for one school inside a job or command: ``with tenancy.bound(school.id): ...``."""
    return _bind(school_id)


def unscoped():
    """Read across schools on purpose (platform code: sign-in, sweepers, the CLI)."""
    return _bind(_UNSCOPED)


def bind_request(school_id: int) -> None:
    """Bind the request's school for the rest of the request (the app context ends it)."""
    g._tenancy_school_id = school_id


@cache
def _school_tables() -> frozenset:
    from app.extensions import Model

    return frozenset(
        mapper.local_table for mapper in Model.registry.mappers if issubclass(mapper.class_, SchoolScoped)
    )


def _touches_school_data(state: ORMExecuteState) -> bool:
    """Does any part of the statement (subqueries and joins included) read a school table?"""
    statement = state.statement
    if not isinstance(statement, ClauseElement):
        # Selects, updates and deletes always are clause elements; anything else fails closed.
        raise TenancyError(f"Cannot tell which tables a {type(statement).__name__} reads.")
    tables = _school_tables()
    return any(isinstance(e, Table) and e in tables for e in visitors.iterate(statement))


def _scope_statement(state: ORMExecuteState) -> None:
    """Add ``school_id = current`` to every ORM select, update and delete of school data."""
    if not (state.is_select or state.is_update or state.is_delete) or state.is_column_load:
        return
    binding = _binding()
    if binding is _UNSCOPED or not _touches_school_data(state):
        return
    if binding is None:
        raise TenancyError("School data was queried with no school bound.")
    state.statement = state.statement.options(
        with_loader_criteria(SchoolScoped, lambda cls: cls.school_id == binding, include_aliases=True)
    )


def _stamp_new_rows(session: Session, flush_context, instances) -> None:
    """New school rows take the bound school; no row may be written into another school."""
    binding = _binding()
    for obj in list(session.new) + list(session.dirty):
        if not isinstance(obj, SchoolScoped) or binding is _UNSCOPED:
            continue
        if binding is None:
            raise TenancyError(f"{type(obj).__name__} written with no school bound.")
        if obj.school_id is None:
            obj.school_id = binding
        elif obj.school_id != binding:
            raise TenancyError(f"{type(obj).__name__} written into another school.")


def install() -> None:
    """Register the listeners once; they apply to every ORM session."""
    if not event.contains(Session, "do_orm_execute", _scope_statement):
        event.listen(Session, "do_orm_execute", _scope_statement)
        event.listen(Session, "before_flush", _stamp_new_rows)


def memberships_of(user_id: int, statuses) -> list:
    """A person's memberships in every school, for sign-in and the school switcher."""
    from app.extensions import db
    from app.models import Membership

    with unscoped():
        query = (
            select(Membership)
            .options(joinedload(Membership.school))
            .where(Membership.user_id == user_id, Membership.status.in_(statuses))
            .order_by(Membership.created_at)
        )
        return list(db.session.scalars(query))
