"""Reading the directory: search, filters, pages and the cards each viewer may see.

Every listing runs a fixed number of queries whatever the number of families: one count,
one page of family ids, then that page's guardians and children as plain rows, built into
cards by one builder (``cards_of``). The family editor loads ORM objects (``load_families``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from sqlalchemy import ARRAY, Integer, and_, any_, bindparam, exists, func, or_, select, true
from sqlalchemy.orm import joinedload

from app.directory.visibility import Viewer, visible_contact
from app.extensions import db
from app.models import (
    ClassHelper,
    ClassRole,
    Enrollment,
    Family,
    Guardian,
    Membership,
    MembershipStatus,
    Role,
    SchoolClass,
    Student,
    User,
    Visibility,
    listed_membership,
)

PAGE_SIZE = 25
MAX_QUERY = 100


@dataclass(frozen=True)
class DirectoryQuery:
    """What the person asked for: words, a class, a grade and a page."""

    q: str = ""
    class_id: int | None = None
    grade: str = ""
    page: int = 1

    @classmethod
    def from_args(cls, args) -> DirectoryQuery:
        """Read query-string arguments leniently: nonsense becomes 'no filter', never an error."""
        class_id = args.get("class_id", "")
        page = args.get("page", "")
        return cls(
            # Runs of whitespace, line breaks included, are one space: the kept search text
            # separates names by line breaks, which a query must not match across.
            q=" ".join(args.get("q", "").split())[:MAX_QUERY],
            class_id=int(class_id) if re.fullmatch(r"[0-9]{1,9}", class_id) else None,
            grade=args.get("grade", "").strip()[:20],
            page=max(1, min(int(page), 10_000)) if re.fullmatch(r"[0-9]{1,5}", page) else 1,
        )


@dataclass
class GuardianCard:
    name: str
    contact: dict[str, str]


@dataclass
class FamilyCard:
    id: int
    name: str
    guardians: list[GuardianCard] = field(default_factory=list)
    children: list[tuple[str, list[str]]] = field(default_factory=list)


@dataclass
class DirectoryPage:
    """A page of cards; ``total`` is exact up to COUNT_CAP, past it ``more`` says "COUNT_CAP+"."""

    cards: list[FamilyCard]
    total: int
    page: int
    pages: int  # exact unless ``more``: then the pages known so far (this one, and the next)
    more: bool = False
    has_next: bool = False


# The directory counts matches up to this many ("1,000+ families"): an exact count would read
# every match of a large school on each keystroke of the live search.
COUNT_CAP = 1000


def _matching(query: DirectoryQuery):
    """Families of the current school with someone listed, matching the query (tenancy adds the school).

    Reads the kept ``Family.listed`` and ``Family.search_text`` (app/models/listings.py): the
    statement walks the school's listed families in name order on one index and stops at the
    page or the count's cap, however large the school. Only listed people are in the text: a
    pending co-guardian's name finds nothing.
    """
    # "= true", not "IS true": only an equality can lead the index walk on PostgreSQL.
    statement = select(Family.id).where(Family.listed == true())
    if query.q:
        like = f"%{_escape_like(query.q.lower())}%"
        statement = statement.where(Family.search_text.like(like, escape="\\"))
    if query.class_id is not None or query.grade:
        conditions = [Student.family_id == Family.id]
        if query.class_id is not None:
            conditions.append(Enrollment.class_id == query.class_id)
        if query.grade:
            conditions.append(SchoolClass.grade == query.grade)
        in_class = (
            select(Enrollment.id)
            .join(Student, Student.id == Enrollment.student_id)
            .join(SchoolClass, SchoolClass.id == Enrollment.class_id)
            .where(and_(*conditions))
        )
        statement = statement.where(exists(in_class))
    return statement


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def load_families(ids_query, *, limit: int | None = None, offset: int = 0) -> list[Family]:
    """The families a ``select(Family.id)`` statement picks, with guardians, children and classes.

    Two queries however many families there are: the page of ids, then the families with
    joined eager loads (selectinload would add a query per 500 parents). The id statement is
    run as it is, never nested in ``Family.id IN (...)``: its correlated EXISTS would then
    bind to the outer family and PostgreSQL would compare every family with every other.
    """
    ids = _page_of_ids(ids_query, limit=limit, offset=offset)
    if not ids:
        return []
    statement = (
        select(Family)
        .where(Family.id.in_(ids))
        .options(
            joinedload(Family.guardians).joinedload(Guardian.membership).joinedload(Membership.user),
            joinedload(Family.students).joinedload(Student.enrollments),
        )
        .order_by(Family.name, Family.id)
    )
    return list(db.session.scalars(statement).unique())


def class_names() -> dict[int, str]:
    """Every class of the school by id (a school has tens of classes, not thousands)."""
    return dict(db.session.execute(select(SchoolClass.id, SchoolClass.name)).all())


def search(query: DirectoryQuery, viewer: Viewer) -> DirectoryPage:
    """One page of the directory as this viewer may see it, with the matches counted up to
    COUNT_CAP: both queries stop early (the families are walked in name order)."""
    matching = _matching(query)
    page = query.page
    ids = _page_of_ids(matching, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    total = _capped_count(matching)
    if not ids and page > 1:  # past the last page (an old link): show the last one
        exact = total
        if total > COUNT_CAP:  # only an old link past a very long list pays for a full count
            exact = db.session.scalar(select(func.count()).select_from(matching.subquery())) or 0
        page = max(1, math.ceil(exact / PAGE_SIZE))
        ids = _page_of_ids(matching, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    has_next = len(ids) > PAGE_SIZE
    ids = ids[:PAGE_SIZE]
    more = total > COUNT_CAP
    pages = page + int(has_next) if more else max(1, math.ceil(total / PAGE_SIZE))
    return DirectoryPage(cards_of(ids, viewer), min(total, COUNT_CAP), page, pages, more, has_next)


def _capped_count(matching) -> int:
    """How many families match, counting no further than COUNT_CAP + 1."""
    capped = matching.order_by(None).limit(COUNT_CAP + 1).subquery()
    return db.session.scalar(select(func.count()).select_from(capped)) or 0


def everything(query: DirectoryQuery, viewer: Viewer) -> list[FamilyCard]:
    """All matching families (the print view), with the same visibility rules as the pages."""
    return load_cards(_matching(query), viewer)


EXPORT_BATCH = 1000


def export_ids(query: DirectoryQuery) -> list[int]:
    """The ids of every matching family in directory order: all a streamed export holds whole
    (the cards are built ``EXPORT_BATCH`` at a time by ``cards_of``)."""
    return _page_of_ids(_matching(query), limit=None, offset=0)


@dataclass(frozen=True)
class _Owner:
    """The columns visibility needs of one guardian, read as plain rows (no ORM objects)."""

    id: int
    email: str
    phone: str | None
    address: str | None
    email_visibility: Visibility
    phone_visibility: Visibility
    address_visibility: Visibility

    @property
    def user(self) -> _Owner:
        """``visible_contact`` reads ``owner.user.email``, as on a Membership."""
        return self


def load_cards(
    ids_query,
    viewer: Viewer,
    *,
    limit: int | None = None,
    offset: int = 0,
    own_details_seen_by: Viewer | None = None,
) -> list[FamilyCard]:
    """The cards of the families a ``select(Family.id)`` picks, in four queries whatever their number.

    Reads plain rows rather than ORM objects: building a Family, its guardians, their
    memberships and accounts, its students and their enrollments as objects cost about 0.5 ms
    a family, ten times the query itself, and the CSV of a large school waited on it.
    """
    ids = _page_of_ids(ids_query, limit=limit, offset=offset)
    return cards_of(ids, viewer, own_details_seen_by=own_details_seen_by)


def cards_of(
    ids: list[int],
    viewer: Viewer,
    *,
    own_details_seen_by: Viewer | None = None,
    names: dict[int, str] | None = None,
) -> list[FamilyCard]:
    """The cards of these families, in this order, in three queries (see ``load_cards``): THE card
    builder of the directory, its class rosters, print, CSV and the preview.

    ``own_details_seen_by`` (the preview): the viewer's own details as that other viewer would
    see them; everyone else's stay as the viewer may see them, so previewing "as staff" never
    opens a co-guardian's staff-only details to the person previewing. ``names``: the class
    names, when the caller has them already (the export's batches read them once).
    """
    if not ids:
        return []
    cards = {family_id: FamilyCard(family_id, "") for family_id in ids}
    guardians = db.session.execute(
        select(
            Guardian.family_id,
            Family.name,
            User.name,
            Membership.id,
            User.email,
            Membership.phone,
            Membership.address,
            Membership.email_visibility,
            Membership.phone_visibility,
            Membership.address_visibility,
        )
        .join(Family, Family.id == Guardian.family_id)
        .join(Membership, Membership.id == Guardian.membership_id)
        .join(User, User.id == Membership.user_id)
        .where(Guardian.family_id.in_(ids), listed_membership())
        .order_by(Guardian.id)
    ).all()
    children = db.session.execute(
        select(Student.family_id, Student.id, Student.first_name, Enrollment.class_id)
        .outerjoin(Enrollment, Enrollment.student_id == Student.id)
        .where(_among(Student.family_id, ids))
        .order_by(Student.id, Enrollment.id)
    ).all()
    names = class_names() if names is None else names
    family_classes: dict[int, set[int]] = {}
    kids: dict[int, dict[int, tuple[str, list[str]]]] = {}
    for family_id, student_id, first_name, class_id in children:
        child = kids.setdefault(family_id, {}).setdefault(student_id, (first_name, []))
        if class_id is not None:
            child[1].append(names[class_id])
            family_classes.setdefault(family_id, set()).add(class_id)
    for family_id, family_name, guardian_name, *owner in guardians:
        card = cards[family_id]
        card.name = family_name
        seen_by = viewer
        if own_details_seen_by is not None and owner[0] == viewer.membership_id:
            seen_by = own_details_seen_by
        contact = visible_contact(seen_by, _Owner(*owner), frozenset(family_classes.get(family_id, ())))
        card.guardians.append(GuardianCard(guardian_name, contact))
    for family_id, card in cards.items():
        card.children = sorted(kids.get(family_id, {}).values(), key=lambda child: child[0])
    return [card for card in cards.values() if card.guardians]


def _among(column, ids: list[int]):
    """``column IN ids``; on PostgreSQL as ``= ANY(array)``, one parameter instead of one per id
    (psycopg spent 0.15 s splitting a statement with 5,000 placeholders)."""
    if db.session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam("ids", ids, type_=ARRAY(Integer)))
    return column.in_(ids)


def _page_of_ids(ids_query, *, limit: int | None, offset: int) -> list[int]:
    """Run the id statement as it is (see ``load_families``), ordered like the directory."""
    statement = ids_query.order_by(Family.name, Family.id).offset(offset)
    if limit is not None:
        statement = statement.limit(limit)
    return list(db.session.scalars(statement))


def grades() -> list[str]:
    """The grades that have classes, for the filter."""
    return list(db.session.scalars(select(SchoolClass.grade).distinct().order_by(SchoolClass.grade)))


def all_classes() -> list[SchoolClass]:
    """Classes for the filter, by grade and name."""
    return list(db.session.scalars(select(SchoolClass).order_by(SchoolClass.grade, SchoolClass.name)))


@dataclass
class StaffCard:
    name: str
    title: str | None
    classes: list[str]


def staff() -> list[StaffCard]:
    """Staff of the school with the classes they teach, in two queries."""
    members = db.session.scalars(
        select(Membership)
        .options(joinedload(Membership.user))
        .where(
            Membership.status == MembershipStatus.APPROVED,
            or_(
                Membership.role.in_([Role.STAFF, Role.ADMIN, Role.SUPERADMIN]),
                Membership.id.in_(
                    select(ClassHelper.membership_id).where(ClassHelper.role == ClassRole.TEACHER)
                ),
            ),
        )
    ).all()
    taught: dict[int, list[str]] = {}
    rows = db.session.execute(
        select(ClassHelper.membership_id, SchoolClass.name)
        .join(SchoolClass, SchoolClass.id == ClassHelper.class_id)
        .where(ClassHelper.role == ClassRole.TEACHER)
        .order_by(SchoolClass.name)
    ).all()
    for membership_id, name in rows:
        taught.setdefault(membership_id, []).append(name)
    cards = [StaffCard(m.user.name, m.title, taught.get(m.id, [])) for m in members if m.user.active]
    return sorted(cards, key=lambda c: c.name.lower())


def families_of(membership_id: int):
    """The families a member is a guardian in, as a ``select(Family.id)``."""
    return select(Family.id).where(
        Family.id.in_(select(Guardian.family_id).where(Guardian.membership_id == membership_id))
    )
