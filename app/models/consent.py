"""Models of the consent feature: privacy policy versions, the consent ledger, data exports."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from sqlalchemy import (
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.extensions import Model
from app.lazytext import lazy_gettext as _l
from app.models.base import SchoolScoped, UTCDateTime, utcnow

# A material change reaches existing users this long after they were told (P13).
NOTICE_PERIOD = timedelta(days=30)


def _enum(cls):
    return Enum(cls, native_enum=False, length=30, values_callable=lambda e: [m.value for m in e])


class PolicyVersion(Model):
    """One version of the privacy policy: a draft until posted, then fixed for good."""

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    body_markdown: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    # The language the operator wrote it in: shown as written, marked with this language.
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    material: Mapped[bool] = mapped_column(Boolean, default=False)
    notify_by_email: Mapped[bool] = mapped_column(Boolean, default=False)
    notify_by_notice: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # The administrative message that told every active account (when email was chosen).
    email_message_id: Mapped[int | None] = mapped_column(ForeignKey("mail_message.id", ondelete="SET NULL"))
    email_dispatch_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    email_recipient_count: Mapped[int | None] = mapped_column(Integer)
    notice_posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Posted while the previous version was still to come: it cannot take effect before that one.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def display_summary(self) -> str:
        """The summary as shown: our placeholder's in the reader's language, anyone else's as written."""
        from app.consent.policy import english_placeholder, placeholder_summary

        return placeholder_summary() if self.summary == english_placeholder()[1] else self.summary

    @property
    def is_posted(self) -> bool:
        return self.posted_at is not None

    @property
    def effective_at(self) -> datetime | None:
        """When the version governs existing users; None while that cannot be known yet.

        Non-material: when posted. Material: the earlier of 30 days after the email dispatch
        finished and 30 days after the notice was posted, counting only the channels used.
        While the email is still going out and there is no notice, the date is not known.
        Never before the previous version's date (``not_before``).
        """
        own = self._own_effective_at()
        if own is None or self.not_before is None:
            return own
        return max(own, self.not_before)

    def _own_effective_at(self) -> datetime | None:
        if self.posted_at is None:
            return None
        if not self.material:
            return self.posted_at
        candidates = []
        if self.notify_by_email and self.email_dispatch_finished_at is not None:
            candidates.append(self.email_dispatch_finished_at + NOTICE_PERIOD)
        if self.notify_by_notice and self.notice_posted_at is not None:
            candidates.append(self.notice_posted_at + NOTICE_PERIOD)
        return min(candidates) if candidates else None


class ConsentKind(enum.StrEnum):
    """What happened between a person and a policy version."""

    ACCEPTED = "accepted"  # ticked the box at sign-up
    NOTIFIED_EMAIL = "notified_email"  # the change notice email was written to them
    NOTICE_SHOWN = "notice_shown"  # the site banner was shown to them
    ACKNOWLEDGED = "acknowledged"  # pressed "I've read it" on the notice
    CONTINUED_USE = "continued_use"  # first signed-in request after the version took effect
    OBJECTED = "objected"  # deactivated before the version took effect for them
    DEACTIVATED = "deactivated"  # closed their account

    @property
    def label(self) -> str:
        """What happened, in the reader's language."""
        return str(CONSENT_KIND_LABELS[self])


# Lazy: translated when shown (``ConsentKind.label`` is the plain str in the current language).
CONSENT_KIND_LABELS = {
    ConsentKind.ACCEPTED: _l("Accepted at sign-up"),
    ConsentKind.NOTIFIED_EMAIL: _l("Told by email"),
    ConsentKind.NOTICE_SHOWN: _l("Shown the notice on the site"),
    ConsentKind.ACKNOWLEDGED: _l("Acknowledged the notice"),
    ConsentKind.CONTINUED_USE: _l("Kept using the service after it took effect"),
    ConsentKind.OBJECTED: _l("Objected to it"),
    ConsentKind.DEACTIVATED: _l("Closed the account"),
}


class ConsentEvent(Model):
    """One line of a person's consent ledger; rows are only ever added."""

    __table_args__ = (
        UniqueConstraint("user_id", "version_id", "kind", name="uq_consent_event_once"),
        Index("ix_consent_event_version_kind", "version_id", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("policy_version.id", ondelete="RESTRICT"))
    kind: Mapped[ConsentKind] = mapped_column(_enum(ConsentKind))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsentLedgerIsAppendOnly(RuntimeError):
    """Someone tried to change or delete a ledger line."""


@event.listens_for(Session, "before_flush")
def _refuse_ledger_changes(session: Session, _context, _instances) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, ConsentEvent) and (obj in session.deleted or session.is_modified(obj)):
            raise ConsentLedgerIsAppendOnly("consent ledger lines are never changed or deleted")


class ExportStatus(enum.StrEnum):
    """A school export's progress through the worker."""

    QUEUED = "queued"
    READY = "ready"
    FAILED = "failed"


class DataExport(SchoolScoped, Model):
    """A school's data, built by the worker and downloadable once with a random, expiring link."""

    id: Mapped[int] = mapped_column(primary_key=True)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    # Only the hash of the link's token is kept: a leaked table opens no download.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[ExportStatus] = mapped_column(_enum(ExportStatus), default=ExportStatus.QUEUED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The ZIP's length in bytes; the file itself is in DataExportChunk rows.
    size: Mapped[int | None] = mapped_column(Integer)


class DataExportChunk(SchoolScoped, Model):
    """One piece (about a megabyte) of a built export's ZIP: the download streams them in order.

    Stored in pieces so neither the worker nor the web process holds a whole school's ZIP.
    """

    # The primary key leads with export_id: a deleted export's pieces are found through it.
    export_id: Mapped[int] = mapped_column(ForeignKey("data_export.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    # The download reads one school's export piece by piece (the tenancy filter adds school_id).
    __table_args__ = (Index("ix_data_export_chunk_school_export_seq", "school_id", "export_id", "seq"),)
