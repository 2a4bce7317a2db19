"""Reading classes and their rosters, always within the current school."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from app.extensions import db
from app.models import (
    ClassHelper,
    Enrollment,
    Family,
    Guardian,
    Membership,
    MembershipStatus,
    SchoolClass,
    Student,
    User,
)


def list_classes() -> list[SchoolClass]:
    """Every class of the current school, by grade and name."""
    return list(db.session.scalars(select(SchoolClass).order_by(SchoolClass.grade, SchoolClass.name)))


def classes_of_member(membership: Membership) -> list[SchoolClass]:
    """Classes a member teaches, helps with, or has a child in."""
    helping = select(ClassHelper.class_id).where(ClassHelper.membership_id == membership.id)
    children = (
        select(Enrollment.class_id)
        .join(Student, Student.id == Enrollment.student_id)
        .join(Guardian, Guardian.family_id == Student.family_id)
        .where(Guardian.membership_id == membership.id)
    )
    query = (
        select(SchoolClass)
        .where(SchoolClass.id.in_(helping.union(children)))
        .order_by(SchoolClass.grade, SchoolClass.name)
    )
    return list(db.session.scalars(query))


def get_class(class_id: int) -> SchoolClass | None:
    """One class of the current school (None for another school's id)."""
    return db.session.scalar(select(SchoolClass).where(SchoolClass.id == class_id))


def class_helpers(school_class: SchoolClass) -> list[ClassHelper]:
    """Teachers and room parents of a class, with their accounts, in one query."""
    query = (
        select(ClassHelper)
        .join(Membership, Membership.id == ClassHelper.membership_id)
        .join(User, User.id == Membership.user_id)
        .options(joinedload(ClassHelper.membership).joinedload(Membership.user))
        .where(
            ClassHelper.class_id == school_class.id,
            Membership.status == MembershipStatus.APPROVED,
            User.active.is_(True),
        )
        .order_by(ClassHelper.role)
    )
    return list(db.session.scalars(query))


def class_family_ids(school_class: SchoolClass):
    """The families with a child in the class, as a ``select(Family.id)`` for the directory's loader."""
    in_class = (
        select(Student.family_id)
        .join(Enrollment, Enrollment.student_id == Student.id)
        .where(Enrollment.class_id == school_class.id)
    )
    return select(Family.id).where(Family.id.in_(in_class))
