"""The school's own settings: profile, time zone, invitation code and joining rules.

Services flush and never commit; the route commits once. Every change writes the audit log.
"""

from __future__ import annotations

import secrets
from zoneinfo import ZoneInfo, available_timezones

from sqlalchemy import select

from app import audit
from app.codes import code_key
from app.extensions import db
from app.models import (
    Role,
    School,
    Visibility,
)

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"


def time_zones() -> list[str]:
    """Every IANA time zone name, sorted, for the time zone field."""
    return sorted(available_timezones())


def is_time_zone(name: str) -> bool:
    """Is this a time zone zoneinfo knows?"""
    if name not in available_timezones():
        return False
    try:
        ZoneInfo(name)
    except (ValueError, KeyError):
        return False
    return True


def _changed(school: School, **values) -> dict:
    """Set the values that differ and return them as {field: [old, new]} for the audit log."""
    changes = {}
    for name, value in values.items():
        old = getattr(school, name)
        if old != value:
            changes[name] = [str(old), str(value)]
            setattr(school, name, value)
    return changes


def update_profile(school: School, *, name: str, timezone: str, default_language: str | None = None) -> bool:
    """Rename the school, set its time zone and default language; audited when anything changed."""
    values: dict[str, str] = {"name": name.strip(), "timezone": timezone}
    if default_language is not None:
        values["default_language"] = default_language
    changes = _changed(school, **values)
    if changes:
        audit.record("settings.changed", target="School profile", changes=changes)
    return bool(changes)


def update_joining_rules(
    school: School, *, families_edit_own: bool, default_visibility: Visibility, approval_role: Role
) -> bool:
    """Who edits families, guardians' default visibility, and who approves newcomers."""
    changes = _changed(
        school,
        families_edit_own=families_edit_own,
        default_visibility=Visibility(default_visibility),
        approval_role=Role(approval_role),
    )
    if changes:
        audit.record("settings.changed", target="Joining rules", changes=changes)
    return bool(changes)


def new_invite_code() -> str:
    """A fresh code such as ``K7QM-2XPD`` that no school has (typed by hand: no 0/O or 1/I)."""
    while True:
        code = "-".join("".join(secrets.choice(CODE_ALPHABET) for _ in range(4)) for _ in range(2))
        if db.session.scalar(select(School.id).where(School.invite_code_key == code_key(code))) is None:
            return code


def rotate_invite_code(school: School) -> str:
    """Replace (or switch on) the invitation code; the old one stops working at once."""
    school.invite_code = new_invite_code()
    audit.record("invite_code.rotated", target="Invitation code")
    return school.invite_code


def switch_off_invite_code(school: School) -> None:
    """Nobody can ask to join with a code until a new one is made."""
    if school.invite_code is not None:
        school.invite_code = None
        audit.record("invite_code.switched_off", target="Invitation code")
