"""Schools, accounts and memberships: who belongs where, in which role."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import Boolean, ColumnElement, Enum, ForeignKey, String, Text, UniqueConstraint, and_
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from app.codes import code_key
from app.extensions import Model
from app.lazytext import lazy_gettext as _l
from app.models.base import SchoolScoped, UTCDateTime, utcnow


class Role(enum.StrEnum):
    """A member's role in one school; each role carries default permissions."""

    PARENT = "parent"
    ROOM_PARENT = "room_parent"
    STAFF = "staff"
    ADMIN = "admin"
    SUPERADMIN = "superadmin"

    @property
    def label(self) -> str:
        """The role's name in the reader's language ('Room Parent')."""
        return str(ROLE_LABELS[self])


class MembershipStatus(enum.StrEnum):
    """Where a membership stands: waiting for approval, approved, or switched off."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    DEACTIVATED = "deactivated"


class JoinNotices(enum.StrEnum):
    """How an approver hears of join requests: each by email, in a daily digest, or not at all
    (someone with the permission always gets at least the digest: app/members/notices.py)."""

    IMMEDIATE = "immediate"
    DIGEST = "digest"
    OFF = "off"

    @property
    def label(self) -> str:
        """The choice in the reader's language."""
        return str(JOIN_NOTICE_LABELS[self])


class Visibility(enum.StrEnum):
    """Who may see one of a guardian's contact details."""

    STAFF = "staff"  # school staff only
    CLASSES = "classes"  # families in the same classes as my children (and staff)
    SCHOOL = "school"  # every approved member of the school

    @property
    def label(self) -> str:
        """Who sees the detail, in the reader's language."""
        return str(VISIBILITY_LABELS[self])


def _enum_column(cls, **kwargs):
    return mapped_column(
        Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]), **kwargs
    )


class PlatformRole(enum.StrEnum):
    """A role on the platform itself, outside every school (operators, not school staff)."""

    SUPPORT = "support"  # reads support requests; sees a school's data only under its grant
    ADMIN = "admin"  # also writes privacy policy versions

    @property
    def label(self) -> str:
        """The platform role's name in the reader's language."""
        return str(PLATFORM_ROLE_LABELS[self])


# Lazy: translated when shown. Forms built at import take these; code that compares or formats
# takes ``.label`` (a plain str in the current language).
ROLE_LABELS = {
    Role.PARENT: _l("Parent"),
    Role.ROOM_PARENT: _l("Room Parent"),
    Role.STAFF: _l("Staff"),
    Role.ADMIN: _l("Admin"),
    Role.SUPERADMIN: _l("Superadmin"),
}
VISIBILITY_LABELS = {
    Visibility.STAFF: _l("Only school staff"),
    Visibility.CLASSES: _l("Families in my children's classes"),
    Visibility.SCHOOL: _l("Everyone at the school"),
}
JOIN_NOTICE_LABELS = {
    JoinNotices.IMMEDIATE: _l("An email for each request"),
    JoinNotices.DIGEST: _l("One email a day while requests wait"),
    JoinNotices.OFF: _l("No emails"),
}
PLATFORM_ROLE_LABELS = {
    PlatformRole.SUPPORT: _l("Platform support"),
    PlatformRole.ADMIN: _l("Platform administrator"),
}


class School(Model):
    """A tenant: one school and its invitation code."""

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    invite_code: Mapped[str | None] = mapped_column(String(40), unique=True)
    # The code as it is compared (app.codes.code_key: no case, spaces or dashes), kept with every
    # change of invite_code; its unique index serves the join form's lookup.
    invite_code_key: Mapped[str | None] = mapped_column(String(40), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What a new guardian's contact details default to, until they choose.
    default_visibility: Mapped[Visibility] = _enum_column(Visibility, default=Visibility.CLASSES)
    # May approved guardians add and edit their own family's members? Otherwise only staff with
    # families.manage can.
    families_edit_own: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    # The least role whose members approve newcomers by default (staff, admin or superadmin);
    # single grants and revocations of members.approve still apply on top.
    approval_role: Mapped[Role] = _enum_column(Role, default=Role.STAFF, server_default=Role.STAFF.value)
    # The language of its pages and mail for anyone who has not chosen one (a code of app.i18n.LANGUAGES).
    default_language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    # Its brand colour ("#1d4ed8"), accepted only with AA contrast under white text; None: the
    # app's own. The crest's checksum names its current image (app.models.identity) so pages link
    # to it without reading the bytes; None: no crest.
    brand_colour: Mapped[str | None] = mapped_column(String(7))
    crest_checksum: Mapped[str | None] = mapped_column(String(64))

    @validates("invite_code")
    def _keep_code_key(self, _key: str, code: str | None) -> str | None:
        """Every new code (or switching it off) sets the form it is looked up by."""
        self.invite_code_key = code_key(code) or None
        return code


class User(UserMixin, Model):
    """One person's account, shared by all the schools they belong to."""

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Random, and the only account reference in unsubscribe links (nothing personal in them).
    mail_key: Mapped[str] = mapped_column(String(32), unique=True, default=lambda: secrets.token_hex(16))
    # None for everyone but the operator's own people (set with `flask platform-role`).
    platform_role: Mapped[PlatformRole | None] = _enum_column(PlatformRole, nullable=True)
    # Their chosen language for pages and mail; None: the school's default, or the browser's.
    language: Mapped[str | None] = mapped_column(String(8))

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", foreign_keys="Membership.user_id"
    )

    @property
    def is_active(self) -> bool:
        """Flask-Login refuses sign-in for deactivated accounts."""
        return self.active


class Membership(SchoolScoped, Model):
    """A person's place in one school: role, approval status and permission changes."""

    __table_args__ = (UniqueConstraint("school_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]),
        default=Role.PARENT,
    )
    status: Mapped[MembershipStatus] = mapped_column(
        Enum(
            MembershipStatus,
            native_enum=False,
            length=20,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=MembershipStatus.PENDING,
        index=True,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    decision_reason: Mapped[str | None] = mapped_column(String(500))
    # Directory details of this person in this school, each with who may see it.
    title: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(40))
    address: Mapped[str | None] = mapped_column(String(300))
    email_visibility: Mapped[Visibility] = _enum_column(Visibility, default=Visibility.CLASSES)
    phone_visibility: Mapped[Visibility] = _enum_column(Visibility, default=Visibility.CLASSES)
    address_visibility: Mapped[Visibility] = _enum_column(Visibility, default=Visibility.STAFF)
    # Kept by app/models/listings.py from the account (host-wide, so copied here per school):
    # the people page searches and orders one school's members without reading the host's accounts.
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    sort_name: Mapped[str] = mapped_column(String(120), default="", server_default="")
    # An approver's choice for join-request emails, and when their last daily digest went.
    join_notices: Mapped[JoinNotices] = _enum_column(
        JoinNotices, default=JoinNotices.IMMEDIATE, server_default=JoinNotices.IMMEDIATE.value
    )
    join_digest_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="memberships", foreign_keys=[user_id])
    school: Mapped[School] = relationship()
    permission_changes: Mapped[list[PermissionChange]] = relationship(
        back_populates="membership", cascade="all, delete-orphan"
    )

    @property
    def is_approved(self) -> bool:
        return self.status is MembershipStatus.APPROVED


def listed_membership() -> ColumnElement[bool]:
    """SQL: an approved membership of an open account, the only kind a school's pages show, its
    mail reaches and its rules count. The statement must join User to Membership."""
    return and_(Membership.status == MembershipStatus.APPROVED, User.active.is_(True))


class PermissionChange(SchoolScoped, Model):
    """A single permission granted to, or revoked from, one member on top of the role."""

    __table_args__ = (UniqueConstraint("membership_id", "permission"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    membership_id: Mapped[int] = mapped_column(ForeignKey("membership.id", ondelete="CASCADE"))
    permission: Mapped[str] = mapped_column(String(60))
    granted: Mapped[bool] = mapped_column(Boolean)

    membership: Mapped[Membership] = relationship(back_populates="permission_changes")
