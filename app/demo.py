"""A populated demo school, so a newcomer can sign in as each role at once."""

from __future__ import annotations

import random

from app import tenancy
from app.auth.passwords import hash_password
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
    School,
    SchoolClass,
    Student,
    User,
)

DEMO_PASSWORD = "demo-school-2026"
DEMO_ACCOUNTS = [
    ("admin@demo.example", "Avery Admin", Role.SUPERADMIN),
    ("teacher@demo.example", "Taylor Teacher", Role.STAFF),
    ("roomparent@demo.example", "Robin Roomparent", Role.ROOM_PARENT),
    ("parent@demo.example", "Pat Parent", Role.PARENT),
]
DEMO_CODE = "MAPLE-2026"

_FIRST = ["Ada", "Ben", "Cleo", "Dev", "Ezra", "Fay", "Gus", "Hana", "Ivo", "Juno", "Kai", "Lia"]
_LAST = ["Okafor", "Nguyen", "Schmidt", "Garcia", "Haddad", "Kowalski", "Silva", "Tanaka", "Moreau"]


def seed_demo(families_per_class: int = 6) -> School:
    """Create the demo school with classes, staff, families, students and one account per role."""
    rng = random.Random(2026)
    school = School(name="Maple Grove Elementary", slug="maple-grove", invite_code=DEMO_CODE)
    db.session.add(school)
    db.session.flush()
    password_hash = hash_password(DEMO_PASSWORD)
    with tenancy.bound(school.id):
        members = {
            role: _member(school, email, name, role, password_hash) for email, name, role in DEMO_ACCOUNTS
        }
        classes = [
            SchoolClass(name=f"{grade} {letter}", grade=grade, school_year="2026-27")
            for grade in ("Grade 1", "Grade 2", "Grade 3")
            for letter in ("A", "B")
        ]
        db.session.add_all(classes)
        db.session.flush()
        db.session.add(
            ClassHelper(class_id=classes[0].id, membership_id=members[Role.STAFF].id, role=ClassRole.TEACHER)
        )
        db.session.add(
            ClassHelper(
                class_id=classes[0].id, membership_id=members[Role.ROOM_PARENT].id, role=ClassRole.ROOM_PARENT
            )
        )
        _family(members[Role.PARENT], "Parent", [classes[0]], rng)
        _family(members[Role.ROOM_PARENT], "Roomparent", [classes[0], classes[2]], rng)
        for index, school_class in enumerate(classes):
            for n in range(families_per_class):
                last = _LAST[(index + n) % len(_LAST)]
                email = f"family{index}-{n}@demo.example"
                guardian = _member(school, email, f"{rng.choice(_FIRST)} {last}", Role.PARENT, password_hash)
                _family(guardian, last, [school_class], rng)
        db.session.flush()
    return school


def _member(school: School, email: str, name: str, role: Role, password_hash: str) -> Membership:
    user = User(email=email, name=name, password_hash=password_hash)
    db.session.add(user)
    db.session.flush()
    membership = Membership(school_id=school.id, user_id=user.id, role=role, status=MembershipStatus.APPROVED)
    db.session.add(membership)
    db.session.flush()
    return membership


def _family(guardian: Membership, last_name: str, classes: list[SchoolClass], rng: random.Random) -> Family:
    family = Family(name=f"{last_name} family")
    db.session.add(family)
    db.session.flush()
    db.session.add(Guardian(family_id=family.id, membership_id=guardian.id))
    for school_class in classes:
        student = Student(family_id=family.id, first_name=rng.choice(_FIRST), last_name=last_name)
        db.session.add(student)
        db.session.flush()
        db.session.add(Enrollment(student_id=student.id, class_id=school_class.id))
    return family
