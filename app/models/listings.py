"""Listed-ness and search text kept on Family and Membership, so search pages walk an index.

``Family.listed`` (someone listed: an approved membership of an open account, exactly
``listed_membership()``) and ``Family.search_text`` (the family's name, its LISTED guardians'
names and its children's names, lowercased), ``Membership.search_text`` (name and email,
lowercased) and ``Membership.sort_name`` are recomputed here by SQL for the rows a write
touches. Every ORM flush does it through ``after_flush``; bulk statements, which no flush
sees, call ``refresh_listings`` / ``refresh_members`` themselves. tests/conftest.py checks
after every test that nothing is stale (``stale_rows``).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, bindparam, event, inspect, select, text
from sqlalchemy.orm import Session

from app.extensions import db
from app.models.directory import Family, Guardian, Student
from app.models.people import Membership, User

# Between the parts of a search text: a query cannot match across two names through it
# ("an smith" finds nobody called "Jordan" in the Smith family, as before).
SEPARATOR = "\n"
_CHUNK = 500

_GUARDIANS = (
    "FROM guardian g JOIN membership m ON m.id = g.membership_id "
    'JOIN "user" u ON u.id = m.user_id '
    # m.school_id = g.school_id: a guardian row can only list a member of the family's own school.
    "WHERE m.status = 'approved' AND u.active = :yes AND m.school_id = g.school_id"
)
_TEXT = "lower(f.name) || :sep || coalesce(gn.names, '') || :sep || coalesce(sn.names, '')"


def _computed(connection: Connection, where: str) -> str:
    """SQL of rows (id, listed, search_text) as they should be, for the families ``f`` picked by
    ``where``. Every piece of SQL here is a constant of this module: nothing comes from outside."""
    if connection.dialect.name == "postgresql":
        return _computed_by_joins(where)
    return _computed_by_lookups(where)


def _computed_by_joins(where: str) -> str:
    """PostgreSQL: one aggregate per table, joined, rather than subqueries run per family, which
    PostgreSQL ran as a scan of every guardian per family on tables not yet analysed."""
    restrict, own = where.replace("f.id", "g.family_id"), where.replace("f.id", "s.family_id")
    guardians = (
        f"SELECT g.family_id AS fid, string_agg(lower(u.name), :sep ORDER BY g.id) AS names "  # noqa: S608
        f"{_GUARDIANS} AND {restrict} GROUP BY g.family_id"
    )
    children = (
        "SELECT s.family_id AS fid, string_agg(lower(s.first_name) || :sep || lower(s.last_name), :sep "  # noqa: S608
        f"ORDER BY s.id) AS names FROM student s WHERE {own} GROUP BY s.family_id"
    )
    return (
        f"SELECT f.id AS id, gn.fid IS NOT NULL AS listed, {_TEXT} AS search_text "  # noqa: S608
        f"FROM family f LEFT JOIN ({guardians}) gn ON gn.fid = f.id "
        f"LEFT JOIN ({children}) sn ON sn.fid = f.id WHERE {where}"
    )


def _computed_by_lookups(where: str) -> str:
    """SQLite: subqueries per family (each an index lookup), over ordered derived tables since
    SQLite before 3.44 has no ORDER BY in an aggregate: the same rows always give the same text."""
    mine = " AND g.family_id = f.id"
    guardians = (
        f"SELECT group_concat(n, :sep) AS names FROM (SELECT lower(u.name) AS n {_GUARDIANS}{mine} "  # noqa: S608
        "ORDER BY g.id) x"
    )
    children = (
        "SELECT group_concat(n, :sep) AS names FROM (SELECT lower(s.first_name) || :sep || "  # noqa: S608
        "lower(s.last_name) AS n FROM student s WHERE s.family_id = f.id ORDER BY s.id) y"
    )
    return (
        f"SELECT f.id AS id, EXISTS (SELECT 1 {_GUARDIANS}{mine}) AS listed, "  # noqa: S608
        f"lower(f.name) || :sep || coalesce(({guardians}), '') || :sep || coalesce(({children}), '') "
        f"AS search_text FROM family f WHERE {where}"
    )


_MEMBER_VALUES = "lower(u.name) || :sep || lower(u.email)"


def _params() -> dict:
    """The bound values every statement here uses."""
    return {"sep": SEPARATOR, "yes": True}


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    """The ids, sorted, a bounded number at a time (SQLite limits parameters)."""
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def refresh_families(connection: Connection, family_ids: Iterable[int]) -> None:
    """Recompute ``listed`` and ``search_text`` of these families."""
    rows = _computed(connection, "f.id IN :ids")
    statement = text(
        "UPDATE family SET listed = v.listed, search_text = v.search_text "  # noqa: S608
        f"FROM ({rows}) v WHERE family.id = v.id"
    ).bindparams(bindparam("ids", expanding=True))
    for chunk in _chunks(family_ids):
        _lock_rows(connection, "family", chunk)
        connection.execute(statement, {**_params(), "ids": chunk})


def refresh_member_rows(connection: Connection, membership_ids: Iterable[int]) -> None:
    """Recompute ``search_text`` and ``sort_name`` of these memberships."""
    statement = text(
        f"UPDATE membership SET search_text = {_MEMBER_VALUES}, sort_name = u.name "  # noqa: S608
        'FROM "user" u WHERE u.id = membership.user_id AND membership.id IN :ids'
    ).bindparams(bindparam("ids", expanding=True))
    for chunk in _chunks(membership_ids):
        _lock_rows(connection, "membership", chunk)
        connection.execute(statement, {**_params(), "ids": chunk})


def _lock_rows(connection: Connection, table: str, ids: list[int]) -> None:
    """PostgreSQL: lock the rows first, in id order, in a statement of their own.

    Under READ COMMITTED an UPDATE that waits for another transaction's lock then writes what
    it computed from its own, older snapshot: a name another transaction had just removed
    (a member deactivated) would be written back. Locked first, the UPDATE is a new statement
    with a new snapshot, taken after the other transaction committed. Id order: no deadlock
    between two refreshes of overlapping families. SQLite has one writer at a time.
    """
    if connection.dialect.name != "postgresql":
        return
    lock = text(f"SELECT id FROM {table} WHERE id IN :ids ORDER BY id FOR UPDATE")  # noqa: S608
    connection.execute(lock.bindparams(bindparam("ids", expanding=True)), {"ids": ids})


def refresh_listings(family_ids: Iterable[int]) -> None:
    """After a bulk write no flush saw: recompute these families' kept columns."""
    refresh_families(db.session.connection(), family_ids)


def refresh_members(membership_ids: Iterable[int]) -> None:
    """After a bulk write no flush saw: recompute these memberships' kept columns."""
    refresh_member_rows(db.session.connection(), membership_ids)


def families_of(membership_ids: Iterable[int]) -> set[int]:
    """The families where these memberships are guardians (their listed-ness follows them)."""
    return _families_of(db.session.connection(), list(membership_ids), [])


def refresh_schools(school_ids: Iterable[int]) -> None:
    """After generating whole schools in bulk: recompute every family and member of them."""
    connection = db.session.connection()
    schools = list(school_ids)
    families = select(Family.id).where(Family.school_id.in_(schools))
    members = select(Membership.id).where(Membership.school_id.in_(schools))
    refresh_families(connection, connection.scalars(families).all())
    refresh_member_rows(connection, connection.scalars(members).all())


def _families_of(connection: Connection, membership_ids: list[int], user_ids: list[int]) -> set[int]:
    """The families where these memberships, or these accounts' memberships, are guardians."""
    found: set[int] = set()
    for chunk in _chunks(membership_ids):
        found.update(connection.scalars(select(Guardian.family_id).where(Guardian.membership_id.in_(chunk))))
    for chunk in _chunks(user_ids):
        found.update(
            connection.scalars(
                select(Guardian.family_id)
                .join(Membership, Membership.id == Guardian.membership_id)
                .where(Membership.user_id.in_(chunk))
            )
        )
    return found


def _members_of(connection: Connection, user_ids: list[int]) -> set[int]:
    """The memberships of these accounts (an account is host-wide: one per school)."""
    found: set[int] = set()
    for chunk in _chunks(user_ids):
        found.update(connection.scalars(select(Membership.id).where(Membership.user_id.in_(chunk))))
    return found


# -- the flush hook ----------------------------------------------------------------------------

_WATCHED = {
    Family: ("name",),
    Guardian: ("family_id", "membership_id"),
    Student: ("family_id", "first_name", "last_name"),
    Membership: ("status", "user_id"),
    User: ("name", "email", "active"),
}
_PENDING_KEY = "_listings_before_delete"


def _changed(obj, names: tuple[str, ...]) -> bool:
    """Did one of these attributes change in this flush?"""
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


def _old_family_ids(obj) -> list[int]:
    """The family a guardian or child belonged to before this flush, and now."""
    history = inspect(obj).attrs.family_id.history
    return [fid for fid in (*history.deleted, *history.unchanged, *history.added) if fid is not None]


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context, _instances) -> None:
    """Note the families of accounts and memberships about to be deleted (the database cascades
    their guardians away, so after the flush nothing points to those families any more)."""
    users = [obj.id for obj in session.deleted if isinstance(obj, User)]
    members = [obj.id for obj in session.deleted if isinstance(obj, Membership)]
    if users or members:
        found = _families_of(session.connection(), members, users)
        session.info.setdefault(_PENDING_KEY, set()).update(found)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context) -> None:
    """Recompute the kept columns of every family and member this flush touched."""
    families: set[int] = session.info.pop(_PENDING_KEY, set())
    members: set[int] = set()
    users: set[int] = set()
    deleted = set(session.deleted)
    for obj in (*session.new, *session.dirty, *deleted):
        kind = type(obj)
        if kind not in _WATCHED or (
            obj not in session.new and obj not in deleted and not _changed(obj, _WATCHED[kind])
        ):
            continue
        if kind is Family and obj not in deleted:
            families.add(obj.id)
        elif kind in (Guardian, Student):
            families.update(_old_family_ids(obj))
        elif kind is Membership and obj not in deleted:
            members.add(obj.id)
        elif kind is User and obj not in deleted:
            users.add(obj.id)
    if not (families or members or users):
        return
    connection = session.connection()
    members |= _members_of(connection, sorted(users))
    families |= _families_of(connection, sorted(members), [])
    refresh_member_rows(connection, members)
    refresh_families(connection, families)


def stale_rows(connection: Connection) -> list[tuple[str, int]]:
    """Families and memberships whose kept columns differ from a recomputation, in one query
    (tests/conftest.py runs it after every test: a write path that forgets shows up here)."""
    rows = connection.execute(
        text(
            f"SELECT 'family', v.id FROM family JOIN ({_computed(connection, '1 = 1')}) v "  # noqa: S608
            "ON v.id = family.id WHERE family.listed <> v.listed OR family.search_text <> v.search_text "
            "UNION ALL SELECT 'membership', membership.id FROM membership "
            f'JOIN "user" u ON u.id = membership.user_id WHERE membership.search_text <> {_MEMBER_VALUES} '
            "OR membership.sort_name <> u.name"
        ),
        _params(),
    )
    return sorted((kind, row_id) for kind, row_id in rows)
