"""Acknowledging a notice (closing one's account is in app/members/lifecycle.py)."""

from __future__ import annotations

from sqlalchemy import select

from app.consent import ledger
from app.extensions import db
from app.models import User
from app.models.consent import ConsentKind, PolicyVersion


def acknowledge(user: User, number: int) -> bool:
    """The person read the notice of a posted version: the banner goes away for them."""
    version = db.session.scalar(
        select(PolicyVersion).where(PolicyVersion.number == number, PolicyVersion.posted_at.is_not(None))
    )
    if version is None:
        return False
    ledger.record(user.id, ConsentKind.ACKNOWLEDGED, version.id)
    return True
