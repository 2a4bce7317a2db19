"""Families: children and their classes, class changes waiting for approval, second guardians.

A guardian's change of a child's classes (a move, or one more class) is stored as an
``EnrollmentChange`` and reaches Enrollment, which every roster and visibility rule reads,
only once someone with ``members.approve`` approves it. Services flush; routes commit.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from flask import g
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import joinedload

from app import audit, paging
from app.codes import code_key
from app.directory import services as directory
from app.extensions import db
from app.mail import queue_email
from app.models import (
    Enrollment,
    Family,
    Guardian,
    Membership,
    MembershipStatus,
    SchoolClass,
    Student,
    User,
    listed_membership,
    listings,
)
from app.models.base import utcnow
from app.models.directory import ChangeStatus, EnrollmentChange
from app.parsing import optional_id
from app.permissions import can
from app.urls import external_url

# No 0/O, 1/I/L: the code is read aloud and typed by hand. 10 characters of 31 = 49 bits.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 10
FAMILIES_PAGE = 50
CHANGES_PAGE = paging.PAGE_SIZE  # class changes beside the approval queue, like the queue


def may_edit_own() -> bool:
    """May the current member add and edit their own family's children?"""
    return bool(g.school.families_edit_own) or can("families.manage")


def my_families(membership: Membership) -> list[Family]:
    """The families this member is an approved guardian in, loaded for the family page."""
    return directory.load_families(directory.families_of(membership.id))


def my_family(membership: Membership, family_id) -> Family | None:
    """One of the member's own families by id, as text or number (None for anyone else's)."""
    # ASCII digits only: "²".isdigit() is True, and int("²") raised (a 500).
    family_id = optional_id(family_id)
    if family_id is None:
        return None
    return db.session.scalar(
        select(Family).where(
            Family.id == family_id,
            Family.id.in_(select(Guardian.family_id).where(Guardian.membership_id == membership.id)),
        )
    )


def get_family(family_id: int) -> Family | None:
    """A family of the current school, loaded for the editor (None for another school's id)."""
    families = directory.load_families(select(Family.id).where(Family.id == family_id))
    return families[0] if families else None


@dataclass
class FamilyList:
    families: list[Family]
    total: int
    page: int
    pages: int


def list_families(q: str, page: int) -> FamilyList:
    """Families by name for the editor, a page at a time, in three queries whatever the size."""
    ids = select(Family.id)
    if q:
        like = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        ids = ids.where(func.lower(Family.name).like(like, escape="\\"))
    total = db.session.scalar(select(func.count()).select_from(ids.subquery())) or 0
    pages = max(1, -(-total // FAMILIES_PAGE))
    page = min(max(page, 1), pages)
    families = directory.load_families(ids, limit=FAMILIES_PAGE, offset=(page - 1) * FAMILIES_PAGE)
    return FamilyList(families, total, page, pages)


def listed_guardians(family: Family) -> list[Membership]:
    """The family's approved guardians with active accounts."""
    return [
        guardian.membership
        for guardian in family.guardians
        if guardian.membership.is_approved and guardian.membership.user.active
    ]


def waiting_guardians(family: Family) -> list[Membership]:
    """People with open accounts who asked to join this family as a guardian and wait for a decision.

    Someone who closed their account while waiting is not shown (name and all) to the family.
    """
    return [
        guardian.membership
        for guardian in family.guardians
        if guardian.membership.status is MembershipStatus.PENDING and guardian.membership.user.active
    ]


def family_code(family: Family) -> str:
    """The family's invitation code, made the first time it is asked for."""
    if family.invite_code is None:
        family.invite_code = _new_code()
        db.session.flush()
    return family.invite_code


def rotate_code(family: Family) -> str:
    """A new invitation code; the old one stops working at once (audited)."""
    family.invite_code = _new_code()
    db.session.flush()
    audit.record("family_code.rotated", target=family.name)
    return family.invite_code


def _new_code() -> str:
    """A random family code that no other family of the school has."""
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if db.session.scalar(select(Family.id).where(Family.invite_code == code)) is None:
            return code


def normalise_family_code(code: str) -> str:
    """Typed by hand: ignore case, spaces and dashes (of any kind)."""
    return code_key(code)


def family_by_code(code: str) -> Family | None:
    """The bound school's family with this invitation code (None if none has it)."""
    code = normalise_family_code(code)
    if len(code) != CODE_LENGTH:
        return None
    return db.session.scalar(select(Family).where(Family.invite_code == code))


def ask_to_join_family(family: Family, membership: Membership, school_name: str) -> None:
    """A newcomer's pending membership becomes a waiting guardian; the family's guardians are told."""
    db.session.add(Guardian(family_id=family.id, membership_id=membership.id))
    db.session.flush()
    recipients = [
        m.user
        for m in db.session.scalars(
            select(Membership)
            .join(Guardian, Guardian.membership_id == Membership.id)
            .join(User, User.id == Membership.user_id)
            .options(joinedload(Membership.user))
            .where(
                Guardian.family_id == family.id,
                listed_membership(),
            )
        )
    ]
    if recipients:
        queue_email(
            "guardian_request",
            recipients,
            school_id=family.school_id,
            school_name=school_name,
            family_url=external_url("classes.families.mine"),
        )


def waiting_guardian(family: Family, membership_id) -> Membership | None:
    """A pending member who asked to join this family (None for anyone else).

    A closed account is still found, so that approving it says why it cannot be approved
    (``members.approve``) instead of a bare "not found"; the family's list no longer shows it.
    """
    membership_id = optional_id(membership_id)
    if membership_id is None:
        return None
    return db.session.scalar(
        select(Membership)
        .join(Guardian, Guardian.membership_id == Membership.id)
        .options(joinedload(Membership.user))
        .where(
            Guardian.family_id == family.id,
            Membership.id == membership_id,
            Membership.status == MembershipStatus.PENDING,
        )
    )


# --- children and their classes -------------------------------------------------------------


def student_of(family: Family, student_id) -> Student | None:
    """A child of this family by id, as text or number (None for anyone else's child)."""
    student_id = optional_id(student_id)
    if student_id is None:
        return None
    return db.session.scalar(select(Student).where(Student.id == student_id, Student.family_id == family.id))


@dataclass
class SavedStudent:
    student: Student
    requested: list[EnrollmentChange] = field(default_factory=list)


def save_student(family: Family, student: Student | None, *, first_name, last_name, class_ids, direct: bool):
    """Add or change a child; class moves and additions wait for approval unless ``direct``."""
    if student is None:
        student = Student(family_id=family.id)
        db.session.add(student)
    student.first_name, student.last_name = first_name.strip(), last_name.strip()
    db.session.flush()
    wanted = set(db.session.scalars(select(SchoolClass.id).where(SchoolClass.id.in_(list(class_ids)))))
    current = set(db.session.scalars(select(Enrollment.class_id).where(Enrollment.student_id == student.id)))
    # A new request replaces whatever this child still had waiting.
    db.session.execute(
        delete(EnrollmentChange).where(
            EnrollmentChange.student_id == student.id, EnrollmentChange.status == ChangeStatus.PENDING
        )
    )
    added, removed = sorted(wanted - current), sorted(current - wanted)
    saved = SavedStudent(student)
    if direct:
        _unenroll(student, removed)
        db.session.add_all(Enrollment(student_id=student.id, class_id=cid) for cid in added)
    else:
        # Each added class is paired with a left one as a move; the child stays in the old
        # class until approval. A class only left (nothing new) is left at once.
        for index, to_class in enumerate(added):
            from_class = removed[index] if index < len(removed) else None
            change = EnrollmentChange(
                student_id=student.id,
                from_class_id=from_class,
                to_class_id=to_class,
                requested_by_id=g.membership.id,
            )
            db.session.add(change)
            saved.requested.append(change)
        _unenroll(student, removed[len(added) :])
    db.session.flush()
    audit.record("family.changed", target=family.name)
    if saved.requested:
        audit.record("class_change.requested", target=family.name, changes=len(saved.requested))
    return saved


def _unenroll(student: Student, class_ids) -> None:
    """Take the child out of these classes at once (leaving needs nobody's approval)."""
    if class_ids:
        db.session.execute(
            delete(Enrollment).where(Enrollment.student_id == student.id, Enrollment.class_id.in_(class_ids))
        )


def remove_student(family: Family, student: Student) -> None:
    """Take a child out of the family (and every class)."""
    db.session.execute(delete(Student).where(Student.id == student.id, Student.family_id == family.id))
    db.session.expunge(student)
    listings.refresh_listings([family.id])  # a bulk DELETE: no flush sees it
    audit.record("family.changed", target=family.name)


def rename_family(family: Family, name: str) -> None:
    """The family's name as the directory shows it."""
    family.name = name.strip()
    db.session.flush()
    audit.record("family.changed", target=family.name)


def _pending_changes():
    """The current school's class changes waiting for a decision."""
    return select(EnrollmentChange).where(EnrollmentChange.status == ChangeStatus.PENDING)


def _with_names(query):
    """Load each change's child, family and classes with it (the list shows them)."""
    return query.options(
        joinedload(EnrollmentChange.student).joinedload(Student.family),
        joinedload(EnrollmentChange.from_class),
        joinedload(EnrollmentChange.to_class),
    )


def waiting_changes(student_ids) -> list[EnrollmentChange]:
    """These children's class changes waiting for approval (a family's few), in one query."""
    query = _with_names(_pending_changes()).where(EnrollmentChange.student_id.in_(list(student_ids)))
    return list(db.session.scalars(query.order_by(EnrollmentChange.created_at, EnrollmentChange.id)))


def waiting_changes_page(after=None) -> paging.OldestFirst:
    """A page of the school's class changes waiting for approval, oldest first, with a capped count.

    The approval queue's shape (app/paging.py): keyset on (created_at, id) after the change
    ``after``, served by the (school_id, status, created_at) index; an unknown ``after`` (or
    one decided meanwhile) starts from the beginning.
    """
    anchor = waiting_change(after)
    return paging.oldest_first(
        _with_names(_pending_changes()),
        _pending_changes(),
        EnrollmentChange,
        anchor,
        CHANGES_PAGE,
        paging.COUNT_CAP,
    )


def waiting_changes_count(cap: int) -> tuple[int, bool]:
    """How many class changes wait for a decision, counting no further than ``cap``."""
    return paging.capped_count(_pending_changes(), EnrollmentChange.id, cap)


def my_waiting_requests(membership_id: int, limit: int) -> list[EnrollmentChange]:
    """Class changes of this member's children still waiting for approval, oldest first (``limit``).

    Found from the member's guardianships, so a co-guardian sees the change the other asked for.
    """
    children = (
        select(Student.id)
        .join(Guardian, Guardian.family_id == Student.family_id)
        .where(Guardian.membership_id == membership_id)
    )
    query = (
        _with_names(_pending_changes())
        .where(EnrollmentChange.student_id.in_(children))
        .order_by(EnrollmentChange.created_at, EnrollmentChange.id)
        .limit(limit)
    )
    return list(db.session.scalars(query))


def guardians_waiting_count(membership_id: int, cap: int) -> tuple[int, bool]:
    """People with open accounts asking to join one of this member's families, up to ``cap``.

    What a guardian decides on the family page (``waiting_guardians``), counted for the home page.
    """
    families = select(Guardian.family_id).where(Guardian.membership_id == membership_id)
    waiting = (
        select(Guardian)
        .join(Membership, Membership.id == Guardian.membership_id)
        .join(User, User.id == Membership.user_id)
        .where(
            Guardian.family_id.in_(families),
            Membership.status == MembershipStatus.PENDING,
            User.active.is_(True),
        )
    )
    return paging.capped_count(waiting, Guardian.id, cap)


def waiting_change(change_id) -> EnrollmentChange | None:
    """A waiting class change of the current school, by id as text or number (None for any other)."""
    change_id = optional_id(change_id)
    if change_id is None:
        return None
    return db.session.scalar(
        select(EnrollmentChange)
        .options(joinedload(EnrollmentChange.student), joinedload(EnrollmentChange.to_class))
        .where(EnrollmentChange.id == change_id, EnrollmentChange.status == ChangeStatus.PENDING)
    )


def decide_change(change: EnrollmentChange, approve: bool) -> bool:
    """Approve (the child moves, or joins the class) or reject; False if someone decided first."""
    status = ChangeStatus.APPROVED if approve else ChangeStatus.REJECTED
    decided = db.session.scalars(
        update(EnrollmentChange)
        .where(EnrollmentChange.id == change.id, EnrollmentChange.status == ChangeStatus.PENDING)
        .values(status=status, decided_at=utcnow(), decided_by_id=g.membership.user_id)
        .returning(EnrollmentChange.id)
        .execution_options(synchronize_session="fetch")
    ).all()
    if not decided:
        return False
    if approve:
        if change.from_class_id is not None:
            _unenroll(change.student, [change.from_class_id])
        already = db.session.scalar(
            select(Enrollment.id).where(
                Enrollment.student_id == change.student_id, Enrollment.class_id == change.to_class_id
            )
        )
        if already is None:
            db.session.add(Enrollment(student_id=change.student_id, class_id=change.to_class_id))
    db.session.flush()
    audit.record(f"class_change.{status.value}", target=change.to_class.name)
    return True
