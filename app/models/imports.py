"""Models of the imports feature: one run per uploaded file, and the school's family keys."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.lazytext import lazy_gettext as _l
from app.models.base import SchoolScoped, UTCDateTime, utcnow


class ImportStatus(enum.StrEnum):
    """Where an uploaded file stands."""

    PREVIEWED = "previewed"  # checked and shown; nothing written yet
    QUEUED = "queued"  # waiting for the worker
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # nothing was written (the whole file is one transaction)

    @property
    def finished(self) -> bool:
        return self in (ImportStatus.DONE, ImportStatus.FAILED)


class ImportRun(SchoolScoped, Model):
    """One uploaded CSV: its text until applied, then counts of what it changed."""

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[ImportStatus] = mapped_column(
        Enum(ImportStatus, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]),
        default=ImportStatus.PREVIEWED,
    )
    # The decoded file, kept only until it is applied (it holds people's names and addresses).
    content: Mapped[str | None] = mapped_column(Text)
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    error_rows: Mapped[int] = mapped_column(Integer, default=0)
    processed_rows: Mapped[int] = mapped_column(Integer, default=0)
    # What the apply created: {"families": n, "guardians": n, "students": n, ...}.
    summary: Mapped[dict] = mapped_column(JSON, default=dict)
    failure: Mapped[str | None] = mapped_column(String(500))
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def display_failure(self) -> str:
        """The stored failure in the reader's language (the worker writes it in English)."""
        if self.failure is None:
            return ""
        known = FAILURE_TEXT.get(self.failure)
        return str(known) if known is not None else self.failure

    @property
    def percent(self) -> int:
        return 100 if not self.total_rows else min(100, round(100 * self.processed_rows / self.total_rows))


class ImportedFamily(SchoolScoped, Model):
    """The school's own key for a family (from its spreadsheet), so a re-import finds it again."""

    __table_args__ = (UniqueConstraint("school_id", "family_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    family_key: Mapped[str] = mapped_column(String(80))
    family_id: Mapped[int] = mapped_column(ForeignKey("family.id", ondelete="CASCADE"), index=True)


# The failures the worker stores, in English whatever the language of the person who started
# the run (it may run outside their request); a page shows them through ``display_failure``.
STALE_FILE = "The file no longer checks out (a class may have changed): upload it again."
STOPPED = "The import stopped on an error; nothing was written. Please try again."
FAILURE_TEXT = {
    STALE_FILE: _l("The file no longer checks out (a class may have changed): upload it again."),
    STOPPED: _l("The import stopped on an error; nothing was written. Please try again."),
}
