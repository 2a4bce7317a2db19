"""The current school, and the one place that scopes every query of school data to it.

Models that mix in ``SchoolScoped`` can only be read or written while a school is bound
(a request by an approved member binds theirs; jobs and commands bind one explicitly) or
inside ``unscoped()``, which platform code uses on purpose and sparingly. Reading a
scoped model with neither raises ``TenancyError`` rather than returning every school's rows.

Models that mix in ``SchoolOrPlatform`` (mail, support requests) also hold rows of no school:
bound to a school, code sees that school's rows and the platform's; bound to none, the
platform's only; every school's only inside ``unscoped()`` (the outbox worker, the support
console). A row is never written into a school other than the bound one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from flask import g, has_app_context
from sqlalchemy import Table, event, or_, select
from sqlalchemy.orm import ORMExecuteState, Session, joinedload, with_loader_criteria
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ClauseElement

from app.models.base import SchoolOrPlatform, SchoolScoped

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


def acting_for(school_id: int | None):
    """Act for the school of a row found across schools, or for none (a platform row)."""
    return _bind(school_id)


def bind_request(school_id: int) -> None:
    """Bind the request's school for the rest of the request (the app context ends it)."""
    g._tenancy_school_id = school_id


def _tables_of(mixin) -> frozenset:
    from app.extensions import Model

    return frozenset(
        mapper.local_table for mapper in Model.registry.mappers if issubclass(mapper.class_, mixin)
    )


@cache
def _school_tables() -> frozenset:
    return _tables_of(SchoolScoped)


@cache
def _school_or_platform_tables() -> frozenset:
    return _tables_of(SchoolOrPlatform)


@cache
def _school_or_platform_models() -> tuple:
    from app.extensions import Model

    return tuple(m.class_ for m in Model.registry.mappers if issubclass(m.class_, SchoolOrPlatform))


def scoped_tables() -> frozenset[str]:
    """The names of every table this module scopes (tests check each school_id table is one)."""
    return frozenset(t.name for t in _school_tables() | _school_or_platform_tables())


def _touches(state: ORMExecuteState, tables: frozenset) -> bool:
    """Does any part of the statement (subqueries and joins included) read one of these tables?"""
    statement = state.statement
    if not isinstance(statement, ClauseElement):
        # Selects, updates and deletes always are clause elements; anything else fails closed.
        raise TenancyError(f"Cannot tell which tables a {type(statement).__name__} reads.")
    return any(isinstance(e, Table) and e in tables for e in visitors.iterate(statement))


def _scope_statement(state: ORMExecuteState) -> None:
    """Add ``school_id = current`` to every ORM select, update and delete of school data."""
    if not (state.is_select or state.is_update or state.is_delete) or state.is_column_load:
        return
    binding = _binding()
    if binding is _UNSCOPED:
        return
    if _touches(state, _school_tables()):
        if binding is None:
            raise TenancyError("School data was queried with no school bound.")
        state.statement = state.statement.options(
            with_loader_criteria(SchoolScoped, lambda cls: cls.school_id == binding, include_aliases=True)
        )
    if _touches(state, _school_or_platform_tables()):
        # One option per model (the mixin declares no column); two lambdas, not one with a
        # branch, because SQLAlchemy caches each lambda's SQL by its code.
        for model in _school_or_platform_models():
            if binding is None:
                criteria = with_loader_criteria(model, lambda cls: cls.school_id.is_(None))
            else:
                criteria = with_loader_criteria(
                    model, lambda cls: or_(cls.school_id == binding, cls.school_id.is_(None))
                )
            state.statement = state.statement.options(criteria)


def _stamp_new_rows(session: Session, flush_context, instances) -> None:
    """New school rows take the bound school; no row may be written into another school."""
    binding = _binding()
    if binding is _UNSCOPED:
        return
    for obj in list(session.new) + list(session.dirty):
        if isinstance(obj, SchoolOrPlatform):
            # Platform rows may be written from anywhere; a school's only while it is bound.
            if obj.school_id is not None and obj.school_id != binding:
                raise TenancyError(f"{type(obj).__name__} written into a school that is not bound.")
            continue
        if not isinstance(obj, SchoolScoped):
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
