"""Single-use emailed tokens: random, stored only as a hash, expiring."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select

from app.extensions import db
from app.models import AccountToken, User
from app.models.base import utcnow


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def issue(user: User, purpose: str, *, hours: int, payload: dict | None = None) -> str:
    """Create a token for ``purpose``; returns the raw value to put in the link."""
    raw = secrets.token_urlsafe(32)
    db.session.add(
        AccountToken(
            purpose=purpose,
            token_hash=_digest(raw),
            user_id=user.id,
            payload=payload or {},
            expires_at=utcnow() + timedelta(hours=hours),
        )
    )
    return raw


def find_usable(raw: str | None, purpose: str) -> AccountToken | None:
    """The unexpired, unused token of this purpose, or None (never says which check failed)."""
    if not raw or len(raw) > 100:
        return None
    token = db.session.scalar(
        select(AccountToken).where(AccountToken.token_hash == _digest(raw), AccountToken.purpose == purpose)
    )
    if token is None or token.used_at is not None or token.expires_at <= utcnow():
        return None
    return token


def void_all(user: User) -> None:
    """Make every unused token of this person unusable (their password or address changed)."""
    now = utcnow()
    unused = select(AccountToken).where(AccountToken.user_id == user.id, AccountToken.used_at.is_(None))
    for token in db.session.scalars(unused):
        token.used_at = now


def spend(token: AccountToken) -> None:
    """Mark a token used, and void the person's other tokens of the same purpose."""
    now = utcnow()
    others = select(AccountToken).where(
        AccountToken.user_id == token.user_id,
        AccountToken.purpose == token.purpose,
        AccountToken.used_at.is_(None),
    )
    for other in db.session.scalars(others):
        other.used_at = now
    token.used_at = now
