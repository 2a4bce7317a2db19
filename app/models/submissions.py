"""Form submissions claimed by their one-time key: a repeat of a form answers the first result.

Every rendered form carries a random submission key (``app.forms``). The first POST with a key
claims it (one row, unique by ``token_hash``) before its view runs; the view's outcome (the
redirect it answered, or only "done") is written on the row afterwards, and a repeat of the key
(a double click, back-and-resubmit, a retried request) is answered from the row without running
the view again (``app.submissions``). No body is kept: nothing personal is stored.

``SchoolOrPlatform``: a form sent in a school (announcements, approvals, settings) belongs to
it; one sent before any school (sign-in, join) to the platform. Rows live for hours only and
are looked up by ``token_hash`` alone, a keyed hash of the key and who sent it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.base import SchoolOrPlatform, UTCDateTime, utcnow


class FormSubmission(SchoolOrPlatform, Model):
    """One claimed submission key: who claimed it (hashed with it), and once done, its answer."""

    id: Mapped[int] = mapped_column(primary_key=True)
    # HMAC(secret key, sender scope + key): the key of another session hashes to another row.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    school_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("school.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # NULL while the first request runs; then its status code (303, 204, 200, ...).
    status: Mapped[int | None] = mapped_column(SmallInteger)
    # The headers a repeat answers with: Location, HX-Redirect, HX-Location, HX-Refresh.
    headers: Mapped[dict] = mapped_column(JSON, default=dict)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# The school's rows, oldest first: the foreign key (a school's deletion) and a school-led index.
Index("ix_form_submission_school_created", FormSubmission.school_id, FormSubmission.created_at)
