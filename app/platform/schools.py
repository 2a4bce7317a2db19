"""Creating a school and inviting its first admin: the one service behind the platform console's
form and ``flask create-school``.

The school's first SuperAdmin comes in through the membership lifecycle (``lifecycle.invite``):
by email with a link to choose a password, or, from the command line, with the password the
operator typed. Nothing here commits; the school's audit log records both steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask_babel import gettext as _
from sqlalchemy import select

from app import audit, tenancy
from app.auth.services import find_user, normalise_code
from app.codes import code_key
from app.extensions import db
from app.members import lifecycle
from app.models import Role, School
from app.settings import school as school_settings

# What a typed invitation code may hold once upper-cased: letters, digits and single hyphens.
CODE_PATTERN = re.compile(r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$")
CODE_MAX = 40


class SchoolRefused(Exception):
    """The school cannot be made as asked: ``field`` names what to change."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class NewSchool:
    """What a school starts with, and who runs it first."""

    name: str
    code: str
    admin_email: str
    admin_name: str
    timezone: str = "UTC"
    default_language: str = "en"


def suggest_code() -> str:
    """A code no school has, offered in the form (the same kind the settings page makes)."""
    return school_settings.new_invite_code()


def code_problem(code: str) -> str | None:
    """Why this invitation code cannot be a new school's (None when it can)."""
    code = normalise_code(code)
    if len(code) < 4 or len(code) > CODE_MAX or not CODE_PATTERN.match(code):
        return _("Use 4 to 40 letters, digits and hyphens, e.g. MAPLE-2026.")
    if db.session.scalar(select(School.id).where(School.invite_code_key == code_key(code))) is not None:
        return _("Another school already uses this code. Choose another one.")
    return None


def create_school(new: NewSchool, *, admin_password: str | None = None) -> School:
    """The school, its first SuperAdmin (invited by email unless a password is given), audited.

    Raises ``SchoolRefused`` for a code that is taken or malformed, an unknown time zone, or
    (with a password) an address that has an account already: that account's owner chose their
    own password, so they are invited by email instead.
    """
    problem = code_problem(new.code)
    if problem:
        raise SchoolRefused("code", problem)
    if not school_settings.is_time_zone(new.timezone):
        problem = _("We don't know this time zone. Pick one from the list, e.g. Europe/London.")
        raise SchoolRefused("timezone", problem)
    if admin_password is not None and find_user(new.admin_email) is not None:
        problem = _("An account with this email exists already.")
        raise SchoolRefused("admin_email", problem)
    name = new.name.strip()
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80] or "school"
    school = School(
        name=name,
        slug=_unique_slug(slug),
        invite_code=normalise_code(new.code),
        timezone=new.timezone,
        default_language=new.default_language,
    )
    db.session.add(school)
    db.session.flush()
    with tenancy.bound(school.id):
        audit.record("school.created", target=name, school_id=school.id)
        membership = lifecycle.invite(
            school, email=new.admin_email, name=new.admin_name, role=Role.SUPERADMIN, password=admin_password
        )
        role = Role.SUPERADMIN.value
        audit.record("member.invited", target=membership.user.name, school_id=school.id, role=role)
        db.session.flush()
    return school


def _unique_slug(slug: str) -> str:
    candidate, n = slug, 1
    while db.session.scalar(select(School.id).where(School.slug == candidate)):
        n += 1
        candidate = f"{slug[:75]}-{n}"
    return candidate
