"""Which announcements a member has opened in the app: one row per member and message read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.base import SchoolScoped, UTCDateTime, utcnow


class MessageRead(SchoolScoped, Model):
    """A member opened this announcement (or marked every one read): the home feed's unread marks.

    Keyed by (school, member, message): the feed finds a page's marks through that key, and a
    second opening (or a double click on "Mark all read") writes nothing more.
    """

    __tablename__ = "message_read"
    __table_args__ = (UniqueConstraint("school_id", "membership_id", "message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    membership_id: Mapped[int] = mapped_column(ForeignKey("membership.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("mail_message.id", ondelete="CASCADE"), index=True)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
