"""Counts kept so pages never recount rows: deliveries of messages that are done, sign-ins per day."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.base import SchoolScoped, UTCDateTime, utcnow


class SettledCounts(Model):
    """Where a message's deliveries ended, written once every delivery is final.

    Final means sent, skipped, failed or sent in a digest: nothing moves a delivery out of those
    (retries put back only rows being sent), so the counts cannot change after. A school-wide
    message to 30,000 people is then one row to read on each view of the list, not 30,000.
    """

    __tablename__ = "settled_counts"

    message_id: Mapped[int] = mapped_column(
        ForeignKey("mail_message.id", ondelete="CASCADE"), primary_key=True
    )
    sent: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    digest: Mapped[int] = mapped_column(Integer)
    counted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SignInCount(SchoolScoped, Model):
    """How many sign-ins a school had on one day of its own clock, added to at each sign-in.

    The audit log's sign-ins box reads 60 of these rows, not the school's 60 days of sign-in
    entries (20,000 a month in a school of 20,000 families). The entries stay in the log.
    """

    __tablename__ = "sign_in_count"
    __table_args__ = (UniqueConstraint("school_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    count: Mapped[int] = mapped_column(Integer, default=0)
