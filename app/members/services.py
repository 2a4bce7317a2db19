"""The approval queue: who waits to join the current school, and the children they named.

Only open accounts wait in the queue: someone who closed theirs while waiting is neither
listed (name and email) nor approved. Deciding is in app/members/lifecycle.py.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import contains_eager

from app import paging
from app.extensions import db
from app.models import Enrollment, Guardian, Membership, MembershipStatus, SchoolClass, Student, User

QUEUE_PAGE = paging.PAGE_SIZE
COUNT_CAP = paging.COUNT_CAP  # "1,000+ waiting" (see app/paging.py)


class QueuePage(paging.OldestFirst):
    """One page of the queue, oldest first; the (capped) number waiting; the next page's key."""

    @property
    def memberships(self) -> list[Membership]:
        """The page's memberships, oldest first."""
        return self.rows


def _waiting():
    """Pending memberships of open accounts in the current school (joined to their User)."""
    return (
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.status == MembershipStatus.PENDING, User.active.is_(True))
    )


def pending_memberships(after: int | None = None) -> QueuePage:
    """A page of people with open accounts waiting in the current school, oldest first.

    Keyset paging on (created_at, id) after the membership ``after``, served by the
    (school_id, status, created_at) index; an unknown ``after`` starts from the beginning.
    """
    query = _waiting().options(contains_eager(Membership.user))
    anchor = get_pending(after) if after is not None else None
    page = paging.oldest_first(query, _waiting(), Membership, anchor, QUEUE_PAGE, COUNT_CAP)
    return QueuePage(page.rows, page.waiting, page.more_waiting, page.next_after)


def waiting_count(cap: int) -> tuple[int, bool]:
    """How many wait in the queue, counting no further than ``cap`` (the home page's "20+")."""
    return paging.capped_count(_waiting(), Membership.id, cap)


def children_named(memberships: list[Membership]) -> dict[int, list[tuple[str, str | None]]]:
    """The children each newcomer named at sign-up, with their classes, in one query."""
    if not memberships:
        return {}
    rows = db.session.execute(
        select(Guardian.membership_id, Student.first_name, Student.last_name, SchoolClass.name)
        .join(Student, Student.family_id == Guardian.family_id)
        # A child named without a class (the parent joined before the menus listed any) is shown too.
        .outerjoin(Enrollment, Enrollment.student_id == Student.id)
        .outerjoin(SchoolClass, SchoolClass.id == Enrollment.class_id)
        .where(Guardian.membership_id.in_([m.id for m in memberships]))
        .order_by(Student.first_name)
    ).all()
    named: dict[int, list[tuple[str, str | None]]] = {}
    for membership_id, first, last, class_name in rows:
        named.setdefault(membership_id, []).append((f"{first} {last}", class_name))
    return named


def get_pending(membership_id: int) -> Membership | None:
    """A pending membership of the current school (None for any other id)."""
    return db.session.scalar(
        select(Membership).where(
            Membership.id == membership_id, Membership.status == MembershipStatus.PENDING
        )
    )
