"""A populated demo school, so a newcomer can sign in as each role at once."""

from __future__ import annotations

import random
from datetime import timedelta

from flask import g

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
from app.models.base import utcnow

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
        _news_and_events(school, members, classes)
    return school


# What a parent finds on the home page of a fresh demo: two school-wide announcements and one
# for Grade 1 A (Pat Parent's class), and the next few events. Sent through the messages
# service, so the dev mailbox holds them too.
_NEWS = [
    (
        "school",
        None,
        "Welcome to Maple Grove's new family directory",
        "Families can now find each other class by class.\n\n"
        "Check what your card shows under **Directory** → *My card*; you choose what others see.",
    ),
    (
        "class",
        0,
        "Grade 1 A: library books on Tuesdays",
        "Please send your child's library book back every **Tuesday**. Thank you!",
    ),
    (
        "school",
        None,
        "Picture day is coming",
        "Photos are taken in the hall. Order forms go home in book bags this week.",
    ),
]
_EVENTS = [
    ("Picture day", 3, 9, 2, None, "School hall"),
    ("Grade 1 A class assembly", 6, 14, 1, 0, "Grade 1 A classroom"),
    ("Parents' evening", 10, 18, 2, None, "Main building"),
]


def _news_and_events(school: School, members: dict[Role, Membership], classes: list[SchoolClass]) -> None:
    """Announcements from the teacher and events of the coming days, as a school would have them."""
    from app.messages import services as messages
    from app.models.calendar import Event

    g.school = school  # the messages service reads the current school, as in a request
    teacher = members[Role.STAFF]
    for kind, class_index, subject, body in _NEWS:
        school_class = classes[class_index] if class_index is not None else None
        audience = messages.audience_for(messages.KINDS[kind], school_class)
        messages.send(audience, subject=subject, body=body, send_at=None, sender=teacher.user)
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    for title, in_days, hour, hours, class_index, place in _EVENTS:
        starts = today + timedelta(days=in_days, hours=hour)
        db.session.add(
            Event(
                title=title,
                starts_at=starts,
                ends_at=starts + timedelta(hours=hours),
                location=place,
                class_id=classes[class_index].id if class_index is not None else None,
                created_by_id=teacher.id,
            )
        )
    db.session.flush()  # while the school is bound: tenancy checks each row's school on write


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
