"""The school's crest, kept in the database so a host with an ephemeral disk (Heroku) keeps it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.base import SchoolScoped, UTCDateTime, utcnow


class SchoolCrest(SchoolScoped, Model):
    """One school's crest: the re-encoded image (no metadata), its type and its checksum.

    One row per school; a new upload replaces it. The bytes load only when the image is served.
    """

    __tablename__ = "school_crest"
    __table_args__ = (UniqueConstraint("school_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    content_type: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    # sha256 of ``data`` in hex: the URL's cache-busting part and the ETag.
    checksum: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
