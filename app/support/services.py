"""Support requests: store first, forward after the commit, list a person's own."""

from __future__ import annotations

from sqlalchemy import select

from app import jobs, tenancy
from app.extensions import db
from app.models import SupportKind, SupportRequest
from app.models.support import new_reference
from app.support.jobs import QUEUE, forward_request

CONTACT_SUBJECT = "Message from the contact form"


def _clean(text: str | None) -> str:
    return (text or "").strip()


def _store(**values) -> SupportRequest:
    """Add the request and enqueue its forwarding; the job runs only if the caller commits."""
    support_request = SupportRequest(reference=unused_reference(), **values)
    # Filed under the school the route named: the person's current membership, which may still
    # be waiting for approval (then no school is bound to the request, yet the row is theirs).
    with tenancy.acting_for(support_request.school_id):
        db.session.add(support_request)
        db.session.flush()
    jobs.enqueue(forward_request, support_request.id, queue=QUEUE)
    return support_request


def unused_reference() -> str:
    """A fresh random reference no stored request has."""
    while True:
        reference = new_reference()
        with tenancy.unscoped():  # references are unique across the platform, not per school
            taken = db.session.scalar(select(SupportRequest.id).where(SupportRequest.reference == reference))
        if taken is None:
            return reference


def submit_help(
    *,
    user_id: int,
    school_id: int | None,
    name: str,
    email: str,
    subject: str,
    message: str,
    grant_access_hours: int | None,
    deletion: bool = False,
) -> SupportRequest:
    """A signed-in person's request; a grant the caller allowed opens the school to support."""
    support_request = _store(
        kind=SupportKind.DELETION if deletion else SupportKind.HELP,
        user_id=user_id,
        school_id=school_id,
        name=_clean(name),
        email=_clean(email),
        subject=_clean(subject),
        message=_clean(message),
        grant_access_hours=grant_access_hours,
    )
    if grant_access_hours and school_id is not None:
        from app.settings.support_access import grant_support

        grant_support(grant_access_hours, support_request=support_request)
    return support_request


def submit_contact(*, user_id: int | None, name: str, email: str, message: str) -> SupportRequest:
    """A message from the public contact form (linked to the account of a signed-in sender)."""
    return _store(
        kind=SupportKind.CONTACT,
        user_id=user_id,
        school_id=None,
        name=_clean(name),
        email=_clean(email),
        subject=CONTACT_SUBJECT,
        message=_clean(message),
        grant_access_hours=None,
    )


def requests_of(user_id: int) -> list[SupportRequest]:
    """One person's own requests, newest first, whichever school they wrote from."""
    query = (
        select(SupportRequest)
        .where(SupportRequest.user_id == user_id)
        .order_by(SupportRequest.created_at.desc(), SupportRequest.id.desc())
    )
    with tenancy.unscoped():  # their own rows, named by their user id
        return list(db.session.scalars(query))
