"""The reference data set: one school at realistic size, for benchmarks and query-count tests.

Defaults: 60 classes, 2,000 families, 3,000 students, about 1.6 guardians per family (some
guardians in two households), staff (one teacher per class, an office, an admin), one room
parent per class, and every visibility choice in use. Rows go in with bulk inserts, and the
one password hash is computed once, so the default set builds in seconds.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field

from sqlalchemy import insert, text, update

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
    Visibility,
    listings,
)

PASSWORD = "reference data password"  # noqa: S105 - test accounts only, printed by the CLI
GRADES = ("Kindergarten", "Grade 1", "Grade 2", "Grade 3", "Grade 4", "Grade 5")
SECOND_GUARDIAN_SHARE = 0.55  # plus the shared guardians below: about 1.6 per family
SHARED_GUARDIAN_SHARE = 0.05  # families whose second guardian also heads another household
OFFICE_STAFF = 4

_FIRST = [
    "Ada",
    "Ben",
    "Cleo",
    "Dev",
    "Ezra",
    "Fay",
    "Gus",
    "Hana",
    "Ivo",
    "Juno",
    "Kai",
    "Lia",
    "Milo",
    "Nia",
    "Omar",
    "Pia",
    "Quinn",
    "Rosa",
    "Sami",
    "Tess",
    "Uma",
    "Vik",
    "Wren",
    "Xavi",
    "Yara",
    "Zane",
    "Amir",
    "Bea",
    "Cato",
    "Dina",
    "Eli",
    "Fern",
    "Gil",
    "Hugo",
    "Iris",
    "Jade",
    "Kofi",
    "Luz",
    "Mae",
    "Noor",
]
_LAST = [
    "Okafor",
    "Nguyen",
    "Schmidt",
    "Garcia",
    "Haddad",
    "Kowalski",
    "Silva",
    "Tanaka",
    "Moreau",
    "Rossi",
    "Novak",
    "Ahmed",
    "Berg",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Gomez",
    "Hansen",
    "Ito",
    "Jensen",
    "Khan",
    "Larsen",
    "Mendes",
    "Nakamura",
    "Olsen",
    "Petrov",
    "Quinn",
    "Rahman",
    "Sato",
    "Torres",
    "Ueda",
    "Varga",
    "Weber",
    "Yilmaz",
    "Zhang",
    "Abbott",
    "Brennan",
    "Chen",
    "Duarte",
]


@dataclass
class ReferenceSet:
    """What was built: the school, counts per table and accounts to sign in with."""

    school_id: int
    school_slug: str
    counts: dict[str, int] = field(default_factory=dict)
    admin_email: str = ""
    staff_email: str = ""
    parent_email: str = ""
    first_class_id: int = 0
    password: str = PASSWORD


class _Builder:
    """Builds rows in memory, then writes each table with one bulk insert."""

    def __init__(self, school: School, rng: random.Random, password_hash: str):
        self.school = school
        self.rng = rng
        self.password_hash = password_hash
        self.users: list[dict] = []
        self.memberships: list[dict] = []

    def person(self, email: str, name: str, role: Role) -> int:
        """Queue an account and its approved membership; returns the person's index."""
        self.users.append(
            {
                "email": email,
                "name": name,
                "password_hash": self.password_hash,
                "mail_key": secrets.token_hex(16),
            }
        )
        self.memberships.append(
            {
                "school_id": self.school.id,
                "role": role,
                "status": MembershipStatus.APPROVED,
                "phone": f"+1 555 {self.rng.randrange(10**7):07d}",
                "address": f"{self.rng.randrange(1, 999)} {self.rng.choice(_LAST)} Street",
                "email_visibility": self.rng.choice(list(Visibility)),
                "phone_visibility": self.rng.choice(list(Visibility)),
                "address_visibility": self.rng.choice(list(Visibility)),
            }
        )
        return len(self.users) - 1

    def write_people(self) -> list[int]:
        """Insert the queued accounts and memberships; returns membership ids in queue order."""
        user_ids = _insert_returning(User, self.users)
        for row, user_id in zip(self.memberships, user_ids, strict=True):
            row["user_id"] = user_id
        return _insert_returning(Membership, self.memberships)


def _insert_returning(model, rows: list[dict]) -> list[int]:
    """Bulk insert; the new ids in the order of ``rows``."""
    if not rows:
        return []
    statement = insert(model).returning(model.id, sort_by_parameter_order=True)
    return list(db.session.scalars(statement, rows))


def generate(
    *,
    families: int = 2000,
    classes: int = 60,
    students: int = 3000,
    seed: int = 2026,
    name: str | None = None,
) -> ReferenceSet:
    """Build one new school with the reference data; flushes, the caller commits."""
    if families < 1 or classes < 1 or students < families:
        raise ValueError("need at least one class and family, and a student for every family")
    rng = random.Random(seed)  # noqa: S311 - repeatable test data, not secrets
    tag = secrets.token_hex(3)  # emails and slug unique across repeated runs on one database
    school = School(
        name=name or f"Reference School {tag}",
        slug=f"reference-{tag}",
        invite_code=f"REF-{tag.upper()}",
        default_visibility=Visibility.CLASSES,
    )
    db.session.add(school)
    db.session.flush()
    with tenancy.bound(school.id):
        return _build(school, _Builder(school, rng, hash_password(PASSWORD)), families, classes, students)


def _build(school: School, builder: _Builder, families: int, classes: int, students: int) -> ReferenceSet:
    """Write every table of the set for ``school`` (bound), in dependency order."""
    rng = builder.rng
    domain = f"{school.slug}.example.org"

    class_rows = [
        {
            "school_id": school.id,
            "name": f"{GRADES[n % len(GRADES)]} {chr(ord('A') + n // len(GRADES) % 26)}{n // 156 or ''}",
            "grade": GRADES[n % len(GRADES)],
            "school_year": "2026-27",
        }
        for n in range(classes)
    ]
    class_ids = _insert_returning(SchoolClass, class_rows)

    admin = builder.person(f"admin@{domain}", "Avery Admin", Role.SUPERADMIN)
    teachers = [builder.person(f"teacher{n}@{domain}", _name(rng), Role.STAFF) for n in range(classes)]
    office = [builder.person(f"office{n}@{domain}", _name(rng), Role.STAFF) for n in range(OFFICE_STAFF)]

    family_names = [rng.choice(_LAST) for _ in range(families)]
    heads = [
        builder.person(f"parent{n}@{domain}", f"{rng.choice(_FIRST)} {family_names[n]}", Role.PARENT)
        for n in range(families)
    ]
    seconds: dict[int, int] = {}  # family index -> person index of its second guardian
    for n in range(families):
        if rng.random() < SECOND_GUARDIAN_SHARE:
            seconds[n] = builder.person(
                f"coparent{n}@{domain}", f"{rng.choice(_FIRST)} {family_names[n]}", Role.PARENT
            )
    shared = rng.sample(range(families), k=int(families * SHARED_GUARDIAN_SHARE))
    # Room parents: the first guardian of one family per class (chosen below, after enrolment).
    membership_ids = builder.write_people()

    family_ids = _insert_returning(
        Family, [{"school_id": school.id, "name": f"{last} family"} for last in family_names]
    )
    guardian_rows = [
        {"school_id": school.id, "family_id": family_ids[n], "membership_id": membership_ids[heads[n]]}
        for n in range(families)
    ]
    guardian_rows += [
        {"school_id": school.id, "family_id": family_ids[n], "membership_id": membership_ids[p]}
        for n, p in seconds.items()
    ]
    # A parent who heads one household and is also the second guardian of another.
    for n in shared:
        other = (n + 1 + rng.randrange(families - 1)) % families if families > 1 else n
        if other != n and other not in seconds:
            seconds[other] = heads[n]
            guardian_rows.append(
                {
                    "school_id": school.id,
                    "family_id": family_ids[other],
                    "membership_id": membership_ids[heads[n]],
                }
            )
    db.session.execute(insert(Guardian), guardian_rows)

    owners = list(range(families)) + [rng.randrange(families) for _ in range(students - families)]
    student_rows = [
        {
            "school_id": school.id,
            "family_id": family_ids[n],
            "first_name": rng.choice(_FIRST),
            "last_name": family_names[n],
        }
        for n in owners
    ]
    student_ids = _insert_returning(Student, student_rows)
    student_class = [rng.randrange(classes) for _ in student_ids]
    db.session.execute(
        insert(Enrollment),
        [
            {"school_id": school.id, "student_id": s, "class_id": class_ids[c]}
            for s, c in zip(student_ids, student_class, strict=True)
        ],
    )

    helper_rows = [
        {
            "school_id": school.id,
            "class_id": class_ids[c],
            "membership_id": membership_ids[t],
            "role": ClassRole.TEACHER,
        }
        for c, t in enumerate(teachers)
    ]
    room_parents = _room_parents(owners, student_class, heads, classes)
    helper_rows += [
        {
            "school_id": school.id,
            "class_id": class_ids[c],
            "membership_id": membership_ids[p],
            "role": ClassRole.ROOM_PARENT,
        }
        for c, p in room_parents.items()
    ]
    db.session.execute(insert(ClassHelper), helper_rows)
    promoted = {membership_ids[p] for p in room_parents.values()}
    if promoted:
        db.session.execute(
            update(Membership).where(Membership.id.in_(promoted)).values(role=Role.ROOM_PARENT)
        )
    db.session.flush()
    if db.session.get_bind().dialect.name == "postgresql":
        # Tables filled a moment ago have no statistics: planned as if empty, each refresh of
        # 500 families walked every approved membership (18 s a chunk at 20,000 families).
        db.session.execute(text('ANALYZE family, guardian, membership, "user", student'))
    listings.refresh_schools([school.id])  # bulk inserts: no flush saw them

    return ReferenceSet(
        school_id=school.id,
        school_slug=school.slug,
        counts={
            "classes": len(class_ids),
            "families": len(family_ids),
            "students": len(student_ids),
            "guardians": len(guardian_rows),
            "accounts": len(membership_ids),
            "staff": len(teachers) + len(office) + 1,
            "room_parents": len(room_parents),
        },
        admin_email=builder.users[admin]["email"],
        staff_email=builder.users[office[0]]["email"] if office else builder.users[teachers[0]]["email"],
        parent_email=builder.users[heads[0]]["email"],
        first_class_id=class_ids[0],
    )


def _room_parents(
    owners: list[int], student_class: list[int], heads: list[int], classes: int
) -> dict[int, int]:
    """One room parent per class: the first guardian of the first family with a child in it."""
    chosen: dict[int, int] = {}
    for family_index, class_index in zip(owners, student_class, strict=True):
        if class_index not in chosen and len(chosen) < classes:
            chosen[class_index] = heads[family_index]
    return chosen


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
