"""Support requests: stored first, then forwarded to Zendesk by the worker (P6, P16).

``SchoolOrPlatform``: a request from the public contact form belongs to no school; one from the
Help form belongs to the school the person was acting in (and the school an access grant would
be for). Support staff read them across schools, inside ``tenancy.unscoped()``.
"""

from __future__ import annotations

import enum
import secrets
from datetime import datetime

from sqlalchemy import BigInteger, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.base import SchoolOrPlatform, SchoolScoped, UTCDateTime, utcnow
from app.models.people import User

# No 0/O, 1/I/L or U: a reference is read out over the phone and typed from an email.
REFERENCE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
REFERENCE_PREFIX = "JOC-"


def new_reference() -> str:
    """A random public reference such as ``JOC-7KQ2MX9P`` (about 39 bits; names nobody)."""
    return REFERENCE_PREFIX + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(8))


class SupportKind(enum.StrEnum):
    """Where a request came from."""

    HELP = "help"  # the signed-in Help form
    CONTACT = "contact"  # the public contact form
    DELETION = "deletion"  # the signed-in Help form, asking for their data at a school to be deleted


class DeletionState(enum.StrEnum):
    """A deletion request's two steps: support marks it, then a school admin confirms it."""

    MARKED = "marked"  # support staff checked it and marked it to be carried out
    CARRIED_OUT = "carried_out"  # a school admin confirmed; it has been carried out


class SupportStatus(enum.StrEnum):
    """A request's way to Zendesk."""

    RECEIVED = "received"  # stored; waiting for the worker (or for Zendesk to come back)
    FORWARDING = "forwarding"  # claimed by a worker, which is talking to Zendesk now
    FORWARDED = "forwarded"  # Zendesk made a ticket of it
    FAILED = "failed"  # Zendesk refused it for good (the reason is in last_error)


def _enum(cls):
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class SupportRequest(SchoolOrPlatform, Model):
    """One question to the platform's support team, and its progress to Zendesk."""

    __tablename__ = "support_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    # "Our request id": shown to the person and sent to Zendesk as the ticket's external_id.
    reference: Mapped[str] = mapped_column(String(16), unique=True, default=new_reference)
    kind: Mapped[SupportKind] = mapped_column(_enum(SupportKind))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"), index=True)
    school_id: Mapped[int | None] = mapped_column(ForeignKey("school.id", ondelete="SET NULL"))
    # What Zendesk receives: the requester's name and email are the only personal data sent.
    name: Mapped[str] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(150))
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[SupportStatus] = mapped_column(
        _enum(SupportStatus), default=SupportStatus.RECEIVED, index=True
    )
    zendesk_ticket_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # After a temporary failure the request waits until then (backoff or Zendesk's Retry-After).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    forwarded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The "let support see my school's data for 72 hours" tick, stored for the grant machinery.
    grant_access_hours: Mapped[int | None] = mapped_column(Integer)
    # Deletion requests only: support marks, then the school's admin confirms (see DeletionState).
    deletion_state: Mapped[DeletionState | None] = mapped_column(_enum(DeletionState), nullable=True)
    deletion_marked_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    deletion_marked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deletion_confirmed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    deletion_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def delayed(self) -> bool:
        """Zendesk failed for now and a retry is due later (the reason is in last_error)."""
        return self.status == SupportStatus.RECEIVED and self.attempts > 0 and bool(self.last_error)

    @property
    def settled(self) -> bool:
        return self.status in (SupportStatus.FORWARDED, SupportStatus.FAILED)


class SupportGrant(SchoolScoped, Model):
    """A school lets platform support read its data, read-only, for a limited time (P3).

    Active from ``starts_at`` until ``expires_at`` unless revoked earlier; rows are kept after
    they end, so the settings page can list past grants.
    """

    __tablename__ = "support_grant"

    id: Mapped[int] = mapped_column(primary_key=True)
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    support_request_id: Mapped[int | None] = mapped_column(
        ForeignKey("support_request.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    granted_by: Mapped[User | None] = relationship(foreign_keys=[granted_by_id])
    revoked_by: Mapped[User | None] = relationship(foreign_keys=[revoked_by_id])
    support_request: Mapped[SupportRequest | None] = relationship()

    def is_active(self, now: datetime | None = None) -> bool:
        """Started, not yet expired, and not revoked."""
        now = now or utcnow()
        return self.revoked_at is None and self.starts_at <= now < self.expires_at
