"""The outbox: every email is a message with one delivery row per recipient."""

from __future__ import annotations

import enum
import re
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import JSON, Boolean, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.lazytext import lazy_gettext as _l
from app.models.base import SchoolOrPlatform, UTCDateTime, utcnow


class Category(enum.StrEnum):
    """Why an email is sent; administrative mail cannot be turned off by an active account."""

    ADMINISTRATIVE = "administrative"
    SCHOOL_ANNOUNCEMENTS = "school_announcements"
    CLASS_ANNOUNCEMENTS = "class_announcements"
    NEWSLETTERS = "newsletters"
    PROMOTIONAL = "promotional"

    @property
    def label(self) -> str:
        return str(CATEGORY_TEXT[self][0])

    @property
    def description(self) -> str:
        return str(CATEGORY_TEXT[self][1])

    @property
    def optional(self) -> bool:
        """Everything but administrative mail can be turned off (P10, P11)."""
        return self is not Category.ADMINISTRATIVE

    @property
    def can_digest(self) -> bool:
        """Announcements and newsletters may wait for the daily digest."""
        return self in (Category.SCHOOL_ANNOUNCEMENTS, Category.CLASS_ANNOUNCEMENTS, Category.NEWSLETTERS)


# Lazy: translated when shown; ``Category.label`` / ``.description`` give the current language's str.
CATEGORY_TEXT = {
    Category.ADMINISTRATIVE: (
        _l("Account and policy notices"),
        _l(
            "Sign-in, security, approvals and changes to the privacy policy. These reach every active "
            "account, because you need them to keep using the service safely."
        ),
    ),
    Category.SCHOOL_ANNOUNCEMENTS: (_l("School announcements"), _l("News from your school to every family.")),
    Category.CLASS_ANNOUNCEMENTS: (
        _l("Class announcements"),
        _l("Messages from teachers and room parents of your classes."),
    ),
    Category.NEWSLETTERS: (_l("Newsletters"), _l("Regular newsletters from your school.")),
    Category.PROMOTIONAL: (_l("News about Join Our Class"), _l("Occasional news about the service itself.")),
}


class DeliveryMode(enum.StrEnum):
    """How a person wants one category of mail."""

    IMMEDIATE = "immediate"
    DIGEST = "digest"
    OFF = "off"


class DeliveryStatus(enum.StrEnum):
    """A delivery's progress through the worker."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"
    DIGEST = "digest"  # waiting for the person's daily digest
    DIGESTED = "digested"  # went out inside a digest


def _enum(cls):
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class MailMessage(SchoolOrPlatform, Model):
    """One email as written: rendered subject and bodies, its category and its school (if any)."""

    __table_args__ = (
        UniqueConstraint("school_id", "submission_key"),
        # The sweeper's look for fan-outs that stopped: only the few messages still preparing.
        Index(
            "ix_mail_message_preparing",
            "fanout_after",
            postgresql_where=text("fanout_after IS NOT NULL"),
            sqlite_where=text("fanout_after IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int | None] = mapped_column(ForeignKey("school.id", ondelete="CASCADE"))
    category: Mapped[Category] = mapped_column(_enum(Category))
    template: Mapped[str] = mapped_column(String(80))
    subject: Mapped[str] = mapped_column(String(250))
    text_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    # Bodies holding a secret link are erased once every delivery is settled.
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Announcements written in the app: who they went to, what was typed, and when they go.
    audience_label: Mapped[str | None] = mapped_column(String(200))

    @property
    def display_audience(self) -> str:
        """``audience_label`` (stored in English) in the reader's language: 'Everyone at X'."""
        return audience_text(self.audience_label)

    class_id: Mapped[int | None] = mapped_column(ForeignKey("school_class.id", ondelete="SET NULL"))
    source_markdown: Mapped[str | None] = mapped_column(Text)
    # Not sent before this time; the sweeper enqueues the send job once it has passed.
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # A scheduled message called off before its time: its deliveries were skipped then.
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    # A send run is working on it until then (renewed with each batch it claims, cleared when it
    # ends): pending rows of a message whose run has lapsed are the sweeper's at once.
    sending_until: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # A large audience's deliveries are written by the worker (app/messages/fanout.py): while it
    # does, the last membership id written (0 before the first chunk); NULL once all exist.
    fanout_after: Mapped[int | None] = mapped_column(Integer)
    # How many people the audience held when the message was written ("Preparing N recipients").
    audience_size: Mapped[int | None] = mapped_column(Integer)
    # The compose form's one-off key: a second submission of the same form finds this message
    # instead of writing another (a double click, or Send pressed again after a slow answer).
    submission_key: Mapped[str | None] = mapped_column(String(32))
    # The language it was written in (an announcement) or first rendered in (everything else).
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    # What its template was rendered with, kept so each recipient's language is rendered at send
    # time (app/mail/rendering.py); None for rows written before, which send their stored bodies.
    render_context: Mapped[dict | None] = mapped_column(JSON)

    deliveries: Mapped[list[MailDelivery]] = relationship(back_populates="message")


class MailRendering(Model):
    """A message's subject and bodies in one language, rendered once at send time and reused."""

    __table_args__ = (UniqueConstraint("message_id", "locale"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("mail_message.id", ondelete="CASCADE"))
    locale: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(250))
    text_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    # Carries a machine translation of what a person wrote (labelled as such in the email).
    machine_translated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageTranslation(Model):
    """A translation service's answer for one announcement and one language (ok or failed), kept."""

    __table_args__ = (UniqueConstraint("message_id", "locale"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("mail_message.id", ondelete="CASCADE"))
    locale: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))  # "ok", "failed" (for good) or "retry"
    # A "retry" row (the service was down) stands until then; a later batch asks again after it.
    retry_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    subject: Mapped[str | None] = mapped_column(String(250))
    body_html: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MailDelivery(Model):
    """One recipient of one message, and what happened when the worker tried to send it."""

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("mail_message.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    to_email: Mapped[str] = mapped_column(String(254))
    # Normally the account's current address is used at send time; fixed: exactly to_email
    # (an email change is confirmed at the new address before it becomes the account's).
    address_fixed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus), default=DeliveryStatus.PENDING, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))

    @property
    def display_error(self) -> str:
        """``last_error`` in the reader's language where it is one of the app's own skip reasons."""
        return delivery_reason_text(self.last_error)

    provider_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # After a temporary failure the delivery waits until then (backoff or the provider's Retry-After).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When it was first handed to a send attempt: temporary failures are retried until
    # MAIL_GIVE_UP_AFTER past this, then it is failed.
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The claim: which send run holds the row ("sending") and until when. A run renews the
    # lease before each provider call; once it has run out, the sweeper hands the row on.
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The batch it was last handed to the provider in (Mailgun's ``v:batch``), recorded and
    # committed before the call; with no recorded answer the provider is asked about it first.
    batch_id: Mapped[str | None] = mapped_column(String(32))
    batch_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    message: Mapped[MailMessage] = relationship(back_populates="deliveries")


class MailPreference(Model):
    """A person's choice for one optional category (no row: immediately)."""

    __table_args__ = (UniqueConstraint("user_id", "category"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    category: Mapped[Category] = mapped_column(_enum(Category))
    mode: Mapped[DeliveryMode] = mapped_column(_enum(DeliveryMode))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Suppression(Model):
    """An address we must not mail, learnt from the provider (bounce, complaint, unsubscribe).

    Kept here rather than in Mailgun's per-domain lists, which would also block the
    administrative mail an active account must still receive after an unsubscribe. The
    reasons are app.mail.provider_events' (the provider's words, kept as it said them).
    """

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    reason: Mapped[str] = mapped_column(String(20))
    # A dead address gets nothing; a complaint or an unsubscribe still gets administrative mail.
    blocks_administrative: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Mailgun's own lists the address is on ("bounces,complaints"): what lifting it removes there.
    provider_lists: Mapped[str] = mapped_column(String(60), default="", server_default="")
    # What the receiving server said (code and words, addresses taken out), when it said anything.
    detail: Mapped[str | None] = mapped_column(String(200))


class WebhookToken(Model):
    """A webhook token already accepted: a second delivery of it is a replay."""

    token: Mapped[str] = mapped_column(String(100), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class DevMail(Model):
    """An email caught by the development backend, shown in the development mailbox."""

    id: Mapped[int] = mapped_column(primary_key=True)
    to_email: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(250))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# -- provider feedback and lifted suppressions (app/mail/provider_events.py, suppressions.py) --


class DeliveryEvent(Model):
    """What the provider reported about one delivery after it was sent (a bounce, a complaint).

    Written by the webhook once per delivery and kind, however often the provider repeats it;
    the message page counts these.
    """

    __table_args__ = (
        UniqueConstraint("delivery_id", "kind"),
        Index("ix_delivery_event_message_kind", "message_id", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("mail_delivery.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(ForeignKey("mail_message.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # bounced, complained, unsubscribed, dropped
    reason: Mapped[str | None] = mapped_column(String(40))  # the provider's own word ("suppress-bounce")
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SuppressionLift(Model):
    """A suppression lifted here, whose removal from the provider's lists follows (and retries).

    The local suppression is gone at once; this row keeps the address only until the provider
    has forgotten it too, and a while after (refusals of mail sent before then are not new news).
    """

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    reason: Mapped[str] = mapped_column(String(20))
    provider_lists: Mapped[str] = mapped_column(String(60), default="")
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(300))
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


# A webhook finds the deliveries of the provider's message id (one id per batch of up to 1,000).
Index("ix_mail_delivery_provider_id", MailDelivery.provider_id)


# --- stored English, shown in the reader's language -----------------------------------------
# An audience's label and a delivery's skip reason are written once, in English (a worker may
# write them, outside anyone's request); pages translate the known shapes when they show them.
# Anything else (a provider's own words) is shown as stored.
EVERYONE_AT = "Everyone at "
CLASS_COMMUNITY = "Families, teachers and room parents of "


def audience_text(label: str | None) -> str:
    """A stored audience label in the reader's language ('Everyone at Hillside')."""
    if not label:
        return ""
    if label.startswith(EVERYONE_AT):
        return _("Everyone at %(school)s", school=label.removeprefix(EVERYONE_AT))
    if label.startswith(CLASS_COMMUNITY):
        return _(
            "Families, teachers and room parents of %(class_name)s",
            class_name=label.removeprefix(CLASS_COMMUNITY),
        )
    return label


SKIP_REASONS = {
    "cancelled before it was sent": _l("cancelled before it was sent"),
    "account deactivated": _l("account deactivated"),
    "no longer a member of this school": _l("no longer a member of this school"),
    "unsubscribed from this category": _l("unsubscribed from this category"),
}
_SUPPRESSED = re.compile(r"address suppressed \((.*)\)")


def delivery_reason_text(reason: str | None) -> str:
    """A stored skip or delay reason in the reader's language (a provider's words as stored)."""
    if not reason:
        return ""
    known = SKIP_REASONS.get(reason)
    if known is not None:
        return str(known)
    if suppressed := _SUPPRESSED.fullmatch(reason):
        return _("address suppressed (%(reason)s)", reason=suppressed.group(1))
    return reason
