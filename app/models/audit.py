"""The audit log: an append-only record, per school, of who did what and when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, event
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from app.extensions import Model
from app.models.base import SchoolScoped, UTCDateTime, utcnow
from app.models.people import User


class AuditEntry(SchoolScoped, Model):
    """One action in a school; rows are only ever added (see ``_refuse_changes``)."""

    __table_args__ = (Index("ix_audit_school_created", "school_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    # A dotted verb from app.audit.ACTIONS, e.g. "member.approved" or "support.viewed".
    action: Mapped[str] = mapped_column(String(60), index=True)
    # Whom or what it was done to, in words an admin reads ("Ada Lovelace", "Class 3B").
    target: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    # True when platform support staff acted under the school's access grant.
    by_support: Mapped[bool] = mapped_column(Boolean, default=False)

    actor: Mapped[User | None] = relationship()

    @property
    def display_target(self) -> str:
        """The target as the reader's language says it (the app's own English words translated)."""
        from app.audit import target_text  # app.audit imports this module

        return target_text(self.action, self.target)


class AuditLogIsAppendOnly(RuntimeError):
    """Someone tried to change or delete an audit entry."""


@event.listens_for(Session, "before_flush")
def _refuse_changes(session: Session, _context, _instances) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEntry) and (obj in session.deleted or session.is_modified(obj)):
            raise AuditLogIsAppendOnly("audit entries are never changed or deleted")
