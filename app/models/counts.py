"""Delivery counts of messages that are done, kept so the messages list never recounts them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.base import UTCDateTime, utcnow


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
