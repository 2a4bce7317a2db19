"""Classes, their rosters and the staff directory, always within the current school.

Services flush and never commit; the route commits once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select, union
from sqlalchemy.orm import joinedload

from app import audit
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
    listed_membership,
)


def list_classes() -> list[SchoolClass]:
    """Every class of the current school, by grade and name."""
    return list(db.session.scalars(select(SchoolClass).order_by(SchoolClass.grade, SchoolClass.name)))


def class_ids_of_member(membership_id: int):
    """THE rule for which classes a member belongs to: those they have a child in or help with
    (teacher or room parent), as one ``select`` of class ids (a union)."""
    children = (
        select(Enrollment.class_id)
        .join(Student, Student.id == Enrollment.student_id)
        .join(Guardian, Guardian.family_id == Student.family_id)
        .where(Guardian.membership_id == membership_id)
    )
    helping = select(ClassHelper.class_id).where(ClassHelper.membership_id == membership_id)
    return union(children, helping)


def classes_of_member(membership: Membership) -> list[SchoolClass]:
    """Classes a member teaches, helps with, or has a child in."""
    query = (
        select(SchoolClass)
        .where(SchoolClass.id.in_(class_ids_of_member(membership.id)))
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
            listed_membership(),
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


def approved_members() -> list[Membership]:
    """Approved members with active accounts (teachers, room parents and staff are chosen from them)."""
    query = (
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .options(joinedload(Membership.user))
        .where(listed_membership())
    )
    return list(db.session.scalars(query))


def helper_ids(school_class: SchoolClass, role: ClassRole) -> list[int]:
    """Membership ids serving a class in one role (to fill the edit form)."""
    query = select(ClassHelper.membership_id).where(
        ClassHelper.class_id == school_class.id, ClassHelper.role == role
    )
    return list(db.session.scalars(query))


def name_taken(name: str, school_year: str, *, other_than: int | None = None) -> bool:
    """Is there already a class of this name in this school year (names compared case-blind)?"""
    query = select(SchoolClass.id).where(
        func.lower(SchoolClass.name) == name.strip().lower(), SchoolClass.school_year == school_year.strip()
    )
    if other_than is not None:
        query = query.where(SchoolClass.id != other_than)
    return db.session.scalar(query) is not None


def save_class(school_class: SchoolClass | None, *, name, grade, school_year, teachers, room_parents):
    """Create or change a class and set its teachers and room parents (audited)."""
    created = school_class is None
    if school_class is None:  # tested directly, so the type checker narrows it
        school_class = SchoolClass()
        db.session.add(school_class)
    school_class.name, school_class.grade = name.strip(), grade.strip()
    school_class.school_year = school_year.strip()
    db.session.flush()
    _set_helpers(school_class, ClassRole.TEACHER, teachers)
    _set_helpers(school_class, ClassRole.ROOM_PARENT, room_parents)
    audit.record("class.created" if created else "class.changed", target=school_class.name)
    return school_class


def _set_helpers(school_class: SchoolClass, role: ClassRole, membership_ids) -> None:
    """Replace the class's helpers in one role with these approved members."""
    allowed = {m.id for m in approved_members()} & set(membership_ids)
    db.session.execute(
        delete(ClassHelper).where(ClassHelper.class_id == school_class.id, ClassHelper.role == role)
    )
    db.session.add_all(
        ClassHelper(class_id=school_class.id, membership_id=mid, role=role) for mid in sorted(allowed)
    )
    db.session.flush()


def delete_class(school_class: SchoolClass) -> None:
    """Delete a class; its enrollments, helpers and events go with it (database cascade)."""
    name = school_class.name
    db.session.execute(delete(SchoolClass).where(SchoolClass.id == school_class.id))
    db.session.expunge(school_class)
    audit.record("class.deleted", target=name)


@dataclass
class StaffEntry:
    """One row of the staff directory as the admin page edits it."""

    membership: Membership
    class_ids: list[int]


STAFF_ROLES = (Role.STAFF, Role.ADMIN, Role.SUPERADMIN)


def staff_entries() -> list[StaffEntry]:
    """Who the staff directory lists (staff roles, teachers, anyone given a title), in two queries."""
    teaching = select(ClassHelper.membership_id).where(ClassHelper.role == ClassRole.TEACHER)
    members = db.session.scalars(
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .options(joinedload(Membership.user))
        .where(
            listed_membership(),
            or_(Membership.role.in_(STAFF_ROLES), Membership.id.in_(teaching), Membership.title.is_not(None)),
        )
    ).all()
    taught: dict[int, list[int]] = {}
    for membership_id, class_id in db.session.execute(
        select(ClassHelper.membership_id, ClassHelper.class_id).where(ClassHelper.role == ClassRole.TEACHER)
    ):
        taught.setdefault(membership_id, []).append(class_id)
    entries = [StaffEntry(m, taught.get(m.id, [])) for m in members]
    return sorted(entries, key=lambda e: e.membership.user.name.lower())


def approved_member(membership_id: int) -> Membership | None:
    """An approved member of the current school (None for another school's id)."""
    return db.session.scalar(
        select(Membership)
        .options(joinedload(Membership.user))
        .where(Membership.id == membership_id, Membership.status == MembershipStatus.APPROVED)
    )


def save_staff_entry(membership: Membership, title: str | None, class_ids) -> None:
    """Set a person's title and the classes they teach (audited)."""
    membership.title = (title or "").strip() or None
    existing = set(
        db.session.scalars(
            select(ClassHelper.class_id).where(
                ClassHelper.membership_id == membership.id, ClassHelper.role == ClassRole.TEACHER
            )
        )
    )
    wanted = set(db.session.scalars(select(SchoolClass.id).where(SchoolClass.id.in_(list(class_ids)))))
    if existing - wanted:
        db.session.execute(
            delete(ClassHelper).where(
                ClassHelper.membership_id == membership.id,
                ClassHelper.role == ClassRole.TEACHER,
                ClassHelper.class_id.in_(existing - wanted),
            )
        )
    db.session.add_all(
        ClassHelper(class_id=cid, membership_id=membership.id, role=ClassRole.TEACHER)
        for cid in sorted(wanted - existing)
    )
    db.session.flush()
    audit.record("staff.changed", target=membership.user.name)
