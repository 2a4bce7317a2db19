"""Listed-ness and search text kept on Family and Membership, so search pages walk an index.

``Family.listed`` (someone listed: an approved membership of an open account, exactly
``listed_membership()``) and ``Family.search_text`` (the family's name, its LISTED guardians'
names and its children's names, lowercased), ``Membership.search_text`` (name and email,
lowercased) and ``Membership.sort_name`` are recomputed here by SQL for the rows a write
touches. Every ORM flush does it through ``after_flush``; bulk statements, which no flush
sees, call ``refresh_listings`` / ``refresh_members`` themselves. tests/conftest.py checks
after every test that nothing is stale (``stale_families`` / ``stale_members``).
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

_LISTED = (
    "FROM guardian g JOIN membership m ON m.id = g.membership_id "
    'JOIN "user" u ON u.id = m.user_id '
    "WHERE g.family_id = family.id AND m.status = 'approved' AND u.active = :yes"
)


def _family_values(aggregate: str) -> tuple[str, str]:
    """SQL for ``listed`` and ``search_text`` of the row ``family`` (the dialect names the aggregate)."""
    listed = f"EXISTS (SELECT 1 {_LISTED})"
    # Ordered derived tables, not ORDER BY inside the aggregate (SQLite < 3.44 has none): the
    # same rows always give the same text, so the staleness check can compare texts. Every
    # piece of SQL here is a constant of this module: nothing comes from outside.
    guardians = f"(SELECT {aggregate}(n, :sep) FROM (SELECT lower(u.name) AS n {_LISTED} ORDER BY g.id) x)"  # noqa: S608
    children = (
        f"(SELECT {aggregate}(n, :sep) FROM (SELECT lower(s.first_name) || :sep || lower(s.last_name) AS n "  # noqa: S608
        "FROM student s WHERE s.family_id = family.id ORDER BY s.id) y)"
    )
    search = f"lower(family.name) || :sep || coalesce({guardians}, '') || :sep || coalesce({children}, '')"
    return listed, search


_MEMBER_SEARCH = (
    'SELECT lower(u.name) || :sep || lower(u.email) FROM "user" u WHERE u.id = membership.user_id'
)
_MEMBER_SORT = 'SELECT u.name FROM "user" u WHERE u.id = membership.user_id'


def _aggregate(connection: Connection) -> str:
    """The string aggregate of this database."""
    return "string_agg" if connection.dialect.name == "postgresql" else "group_concat"


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
    listed, search = _family_values(_aggregate(connection))
    statement = text(
        f"UPDATE family SET listed = {listed}, search_text = {search} WHERE family.id IN :ids"  # noqa: S608
    ).bindparams(bindparam("ids", expanding=True))
    for chunk in _chunks(family_ids):
        connection.execute(statement, {**_params(), "ids": chunk})


def refresh_member_rows(connection: Connection, membership_ids: Iterable[int]) -> None:
    """Recompute ``search_text`` and ``sort_name`` of these memberships."""
    statement = text(
        f"UPDATE membership SET search_text = ({_MEMBER_SEARCH}), sort_name = ({_MEMBER_SORT}) "  # noqa: S608
        "WHERE membership.id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    for chunk in _chunks(membership_ids):
        connection.execute(statement, {**_params(), "ids": chunk})


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
    listed, search = _family_values(_aggregate(connection))
    rows = connection.execute(
        text(
            f"SELECT 'family', family.id FROM family WHERE family.listed <> ({listed}) "  # noqa: S608
            f"OR family.search_text <> ({search}) "
            "UNION ALL SELECT 'membership', membership.id FROM membership "
            f"WHERE membership.search_text <> ({_MEMBER_SEARCH}) OR membership.sort_name <> ({_MEMBER_SORT})"
        ),
        _params(),
    )
    return sorted((kind, row_id) for kind, row_id in rows)
