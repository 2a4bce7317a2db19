"""Approving and rejecting people who asked to join the current school.

Only open accounts wait in the queue: someone who closed theirs while waiting is neither
listed (name and email) nor approved. A rejected request takes its family links with it.
"""

from __future__ import annotations

from flask import g
from sqlalchemy import delete, select, update
from sqlalchemy.orm import contains_eager

from app import audit
from app.extensions import db
from app.mail import queue_email
from app.models import Enrollment, Guardian, Membership, MembershipStatus, SchoolClass, Student, User
from app.models.base import utcnow
from app.urls import external_url

# No name in it: the person is gone, and the page that posted it is out of date anyway.
CLOSED_ACCOUNT = "This person closed their account, so their request can no longer be approved."


def pending_memberships() -> list[Membership]:
    """People with open accounts waiting for approval in the current school, oldest first."""
    query = (
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .options(contains_eager(Membership.user))
        .where(Membership.status == MembershipStatus.PENDING, User.active.is_(True))
        .order_by(Membership.created_at)
    )
    return list(db.session.scalars(query))


def children_named(memberships: list[Membership]) -> dict[int, list[tuple[str, str]]]:
    """The children each newcomer named at sign-up, with their classes, in one query."""
    if not memberships:
        return {}
    rows = db.session.execute(
        select(Guardian.membership_id, Student.first_name, Student.last_name, SchoolClass.name)
        .join(Student, Student.family_id == Guardian.family_id)
        .join(Enrollment, Enrollment.student_id == Student.id)
        .join(SchoolClass, SchoolClass.id == Enrollment.class_id)
        .where(Guardian.membership_id.in_([m.id for m in memberships]))
        .order_by(Student.first_name)
    ).all()
    named: dict[int, list[tuple[str, str]]] = {}
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


def approve(membership: Membership) -> bool:
    """Let the person in, and tell them by email (False if someone decided first, or they left)."""
    if not membership.user.active:
        return False  # only a page opened before they closed their account can post this
    return _decide(membership, MembershipStatus.APPROVED, None, link=external_url("auth.sign_in"))


def reject(membership: Membership, reason: str) -> bool:
    """Turn the request down with a reason the person is told (False if someone decided first).

    The person's links to families go too (a second guardian's request to join one, or the
    family they named at sign-up): nothing should tie a turned-down stranger to children.
    """
    if not _decide(membership, MembershipStatus.REJECTED, reason.strip()):
        return False
    _unlink_families(membership)
    return True


def _unlink_families(membership: Membership) -> None:
    """Delete the rejected membership's Guardian rows, and only those.

    A family the newcomer made at sign-up keeps its children with no guardian: it was only
    ever shown where an approved guardian is (directory, rosters, audiences), and stays in
    the family editor for staff, exactly as it did while it hung on the rejected person.
    """
    # The decision only applies to a pending membership, which is nobody's approved guardian.
    db.session.execute(delete(Guardian).where(Guardian.membership_id == membership.id))


def _decide(membership: Membership, status: MembershipStatus, reason: str | None, **context) -> bool:
    """Record who decided what and when, then tell the person (administrative mail).

    The update only applies to a membership still pending, so two people deciding at the
    same moment cannot both win (and send both emails). Returns False for the one who lost.
    """
    decided = db.session.scalars(
        update(Membership)
        .where(Membership.id == membership.id, Membership.status == MembershipStatus.PENDING)
        .values(
            status=status, decided_at=utcnow(), decided_by_id=g.membership.user_id, decision_reason=reason
        )
        .returning(Membership.id)
        .execution_options(synchronize_session="fetch")
    ).all()
    if not decided:
        return False
    audit.record(f"member.{status.value}", target=membership.user.name)
    queue_email(
        f"membership_{status.value}",
        [membership.user],
        school_id=membership.school_id,
        name=membership.user.name,
        school_name=g.school.name,
        reason=reason,
        **context,
    )
    return True
