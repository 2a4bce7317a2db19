"""What each person wants of each optional category, read in bulk at send time."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from app.extensions import db
from app.models import Category, DeliveryMode, MailPreference, Suppression, User

OPTIONAL = [c for c in Category if c.optional]


class PreferenceError(ValueError):
    """A choice the category does not allow (administrative mail, digest of promotions)."""


def modes_of(user: User) -> dict[Category, DeliveryMode]:
    """Every optional category with this person's mode (immediately unless they chose otherwise)."""
    chosen = {
        p.category: p.mode
        for p in db.session.scalars(select(MailPreference).where(MailPreference.user_id == user.id))
    }
    return {category: chosen.get(category, DeliveryMode.IMMEDIATE) for category in OPTIONAL}


def modes_for(user_ids: Iterable[int], category: Category) -> dict[int, DeliveryMode]:
    """The mode of many people for one category, in one query (missing: immediately)."""
    ids = list(user_ids)
    if not ids or not category.optional:
        return {}
    rows = db.session.execute(
        select(MailPreference.user_id, MailPreference.mode).where(
            MailPreference.user_id.in_(ids), MailPreference.category == category
        )
    )
    return dict(rows.all())


def set_mode(user: User, category: Category, mode: DeliveryMode) -> None:
    """Record a choice; refuses what the category cannot do."""
    if not category.optional:
        raise PreferenceError("Account and policy notices reach every active account.")
    if mode is DeliveryMode.DIGEST and not category.can_digest:
        raise PreferenceError(f"{category.label} cannot be gathered into a digest.")
    preference = db.session.scalar(
        select(MailPreference).where(MailPreference.user_id == user.id, MailPreference.category == category)
    )
    if preference is None:
        db.session.add(MailPreference(user_id=user.id, category=category, mode=mode))
    else:
        preference.mode = mode


def unsubscribe(user: User, category: Category | None) -> list[Category]:
    """Turn off one optional category, or every one (None). Returns what was turned off."""
    categories = OPTIONAL if category is None else [category]
    for each in categories:
        set_mode(user, each, DeliveryMode.OFF)
    return categories


def suppressed(emails: Iterable[str]) -> dict[str, Suppression]:
    """Suppressions for these addresses, in one query."""
    addresses = list({e.lower() for e in emails})
    if not addresses:
        return {}
    rows = db.session.scalars(select(Suppression).where(Suppression.email.in_(addresses)))
    return {row.email: row for row in rows}
