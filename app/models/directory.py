"""Classes, families and students: the school's directory."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Enum, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.base import SchoolScoped, UTCDateTime, utcnow
from app.models.people import Membership


class ClassRole(enum.StrEnum):
    """How a member serves a class."""

    TEACHER = "teacher"
    ROOM_PARENT = "room_parent"


class SchoolClass(SchoolScoped, Model):
    """A class (homeroom) in one school year."""

    __tablename__ = "school_class"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    grade: Mapped[str] = mapped_column(String(20))
    school_year: Mapped[str] = mapped_column(String(20))

    helpers: Mapped[list[ClassHelper]] = relationship(back_populates="school_class")
    enrollments: Mapped[list[Enrollment]] = relationship(back_populates="school_class")


class ClassHelper(SchoolScoped, Model):
    """A teacher or room parent of a class."""

    __table_args__ = (UniqueConstraint("class_id", "membership_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("school_class.id", ondelete="CASCADE"))
    membership_id: Mapped[int] = mapped_column(ForeignKey("membership.id", ondelete="CASCADE"))
    role: Mapped[ClassRole] = mapped_column(
        Enum(ClassRole, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])
    )

    school_class: Mapped[SchoolClass] = relationship(back_populates="helpers")
    membership: Mapped[Membership] = relationship()


class Family(SchoolScoped, Model):
    """A household: one or more guardians and one or more students."""

    __table_args__ = (UniqueConstraint("school_id", "invite_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    # Random, rotatable; a second guardian types it (with the school's code) to ask to join
    # this family. Made the first time a guardian opens the family page.
    invite_code: Mapped[str | None] = mapped_column(String(24))
    # Kept by app/models/listings.py on every write, so the directory walks an index in name
    # order and stops after a page: has a listed guardian (``listed_membership()``), and the
    # lowercased names a search may find (the family's, its listed guardians', its children's).
    listed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")

    guardians: Mapped[list[Guardian]] = relationship(back_populates="family")
    students: Mapped[list[Student]] = relationship(back_populates="family")


class Guardian(SchoolScoped, Model):
    """A member who is a parent or carer in a family."""

    __table_args__ = (UniqueConstraint("family_id", "membership_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # active_history: a move to another family must know the old one even if it was not loaded
    # (app/models/listings.py refreshes both families' search text).
    family_id: Mapped[int] = mapped_column(
        ForeignKey("family.id", ondelete="CASCADE"), index=True, active_history=True
    )
    membership_id: Mapped[int] = mapped_column(ForeignKey("membership.id", ondelete="CASCADE"), index=True)

    family: Mapped[Family] = relationship(back_populates="guardians")
    membership: Mapped[Membership] = relationship()


class Student(SchoolScoped, Model):
    """A child at the school."""

    id: Mapped[int] = mapped_column(primary_key=True)
    # active_history: a move to another family must know the old one even if it was not loaded
    # (app/models/listings.py refreshes both families' search text).
    family_id: Mapped[int] = mapped_column(
        ForeignKey("family.id", ondelete="CASCADE"), index=True, active_history=True
    )
    first_name: Mapped[str] = mapped_column(String(80))
    last_name: Mapped[str] = mapped_column(String(80))

    family: Mapped[Family] = relationship(back_populates="students")
    enrollments: Mapped[list[Enrollment]] = relationship(back_populates="student")


class Enrollment(SchoolScoped, Model):
    """A student's place in a class."""

    __table_args__ = (UniqueConstraint("student_id", "class_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("student.id", ondelete="CASCADE"))
    class_id: Mapped[int] = mapped_column(ForeignKey("school_class.id", ondelete="CASCADE"), index=True)

    student: Mapped[Student] = relationship(back_populates="enrollments")
    school_class: Mapped[SchoolClass] = relationship(back_populates="enrollments")


class ChangeStatus(enum.StrEnum):
    """Where a requested class change stands."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class EnrollmentChange(SchoolScoped, Model):
    """A family asks to move a child to another class, or to add one; it waits for approval.

    Kept apart from Enrollment on purpose: every roster, directory and visibility query reads
    Enrollment only, so a pending change can show nobody the new class (nor the child in it).
    """

    id: Mapped[int] = mapped_column(primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("student.id", ondelete="CASCADE"), index=True)
    # None when a class is added; the class the child leaves when it is a move.
    from_class_id: Mapped[int | None] = mapped_column(ForeignKey("school_class.id", ondelete="CASCADE"))
    to_class_id: Mapped[int] = mapped_column(ForeignKey("school_class.id", ondelete="CASCADE"))
    status: Mapped[ChangeStatus] = mapped_column(
        Enum(ChangeStatus, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]),
        default=ChangeStatus.PENDING,
        index=True,
    )
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("membership.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))

    student: Mapped[Student] = relationship()
    from_class: Mapped[SchoolClass | None] = relationship(foreign_keys=[from_class_id])
    to_class: Mapped[SchoolClass] = relationship(foreign_keys=[to_class_id])
