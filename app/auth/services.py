"""Accounts: signing in, passwords, email changes and the current school.

Joining a school is part of the membership lifecycle (app/members/lifecycle.py).

Services flush and never commit; the route commits once.
"""

from __future__ import annotations

from flask import current_app, g, request, session
from flask_login import current_user, login_user, logout_user
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app import clock, jobs, sessions, tenancy
from app.auth import passwords, tokens
from app.codes import code_key
from app.extensions import db
from app.mail import queue_email
from app.models import (
    Membership,
    MembershipStatus,
    PasswordResetRequest,
    School,
    SchoolClass,
    User,
)
from app.models.base import utcnow
from app.urls import external_url

LIVE_STATUSES = (MembershipStatus.PENDING, MembershipStatus.APPROVED)


def normalise_email(email: str) -> str:
    """Compare addresses case-insensitively and without stray spaces."""
    return email.strip().lower()


def normalise_code(code: str) -> str:
    """A code as a school keeps it: surrounding spaces gone, in capitals (its groups kept)."""
    return code.strip().upper()


def find_user(email: str) -> User | None:
    """The account with this email, or None."""
    return db.session.scalar(select(User).where(User.email == normalise_email(email)))


def school_by_code(code: str) -> School | None:
    """The school whose invitation code this is (None if unknown or switched off)."""
    key = code_key(code)
    if not key:
        return None
    return db.session.scalar(select(School).where(School.invite_code_key == key))


def load_request_membership() -> None:
    """before_request: find the signed-in person's school and bind it for the request."""
    g.memberships, g.membership, g.school = [], None, None
    if request.endpoint == "static" or not current_user.is_authenticated:
        return
    g.memberships = tenancy.memberships_of(current_user.id, LIVE_STATUSES)
    from app.platform.access import bind_support_view

    if bind_support_view():  # platform staff looking at a school under its grant (P3)
        return
    chosen = _choose(g.memberships, session.get("school_id"))
    if chosen is None:
        return
    g.membership, g.school = chosen, chosen.school
    if session.get("school_id") != chosen.school_id:
        session["school_id"] = chosen.school_id
    if chosen.is_approved:
        tenancy.bind_request(chosen.school_id)


def _choose(memberships: list[Membership], wanted: int | None) -> Membership | None:
    for membership in memberships:
        if membership.school_id == wanted:
            return membership
    approved = [m for m in memberships if m.is_approved]
    candidates = approved or memberships
    return candidates[0] if candidates else None


def classes_for_code(code: str) -> list[SchoolClass]:
    """The classes of the school this code belongs to, for the sign-up form's menus."""
    school = school_by_code(code or "")
    if school is None:
        return []
    with tenancy.bound(school.id):
        return list(db.session.scalars(select(SchoolClass).order_by(SchoolClass.grade, SchoolClass.name)))


def _server_session() -> sessions.ServerSession:
    """The request's session as the server-side kind, which can change its id."""
    if not isinstance(session, sessions.ServerSession):  # DatabaseSessionInterface makes every session
        raise TypeError(f"Expected a ServerSession, got {type(session).__name__}.")
    return session


def sign_in(user: User) -> None:
    """Start a fresh session for ``user`` (a new id, so a planted one is worthless)."""
    from app.i18n import SESSION_KEY, supported

    chosen = supported(session.get(SESSION_KEY))  # the language switched to before signing in
    session.clear()
    if chosen and user.language is None:
        user.language = chosen
    login_user(user)
    _server_session().regenerate()
    approved = [m for m in tenancy.memberships_of(user.id, LIVE_STATUSES) if m.is_approved]
    if approved:
        session["school_id"] = approved[0].school_id
        _record_sign_in(approved[0].school_id)
    from app.consent.ledger import note_sign_in

    note_sign_in(user)  # signing in after a policy version took effect is continued use (P14)


def _record_sign_in(school_id: int) -> None:
    """One audit entry per sign-in (the settings page shows them as a count per day)."""
    from app import audit

    with tenancy.bound(school_id):
        audit.record("auth.signed_in", school_id=school_id)
        db.session.flush()
        count_sign_in(school_id)


def count_sign_in(school_id: int) -> None:
    """Add one to the school's sign-ins of today, on its clock (one upsert: no read, no race)."""
    from app.models import School
    from app.models.counts import SignInCount

    zone = clock.zone_named(db.session.get_one(School, school_id).timezone)
    today = utcnow().astimezone(zone).date()
    insert_ = postgresql_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    upsert = insert_(SignInCount).values(school_id=school_id, day=today, count=1)
    db.session.execute(
        upsert.on_conflict_do_update(
            index_elements=["school_id", "day"], set_={"count": SignInCount.count + 1}
        )
    )


def sign_out() -> None:
    """End this session and forget everything it held."""
    logout_user()
    session.clear()


def authenticate(email: str, password: str) -> User | None:
    """The active account these credentials open, or None (same answer and time for every failure)."""
    user = find_user(email)
    if not passwords.verify_password(user.password_hash if user else None, password):
        return None
    if user is None or not user.active:
        return None
    if passwords.needs_rehash(user.password_hash):
        # The only moment the password is known: bring an older hash up to today's cost.
        user.password_hash = passwords.hash_password(password)
    return user


def change_password(user: User, new_password: str) -> None:
    """Set a new password and end every other session of this person."""
    user.password_hash = passwords.hash_password(new_password)
    user.password_changed_at = utcnow()
    # The session store has its own connection: end the sessions before this transaction
    # writes anything (SQLite allows one writer at a time).
    sessions.end_sessions(user.id, keep_session_id=_server_session().session_id)
    tokens.void_all(user)  # a reset link sent before the change must not undo it
    _server_session().regenerate()


def ask_for_password_reset(email: str) -> None:
    """The web request's part of a reset: store the address and enqueue the worker's lookup.

    The same INSERT and the same job for every address, with or without an account, so the
    answer and its timing say nothing; ``auth.jobs.handle_reset_request`` does the rest.
    """
    from app.auth.jobs import QUEUE, handle_reset_request

    # No account has a longer address; lowercasing can lengthen some (İ), and the column is 254.
    request_row = PasswordResetRequest(email=normalise_email(email)[:254])
    db.session.add(request_row)
    db.session.flush()
    jobs.enqueue(handle_reset_request, request_row.id, queue=QUEUE)


def send_password_reset(email: str) -> None:
    """Email a reset link if the address belongs to an active account; silent otherwise (worker)."""
    user = find_user(email)
    if user is None or not user.active:
        return
    hours = current_app.config["PASSWORD_RESET_HOURS"]
    raw = tokens.issue(user, "reset", hours=hours)
    queue_email(
        "password_reset",
        [user],
        sensitive=True,
        name=user.name,
        hours=hours,
        link=external_url("auth.reset_link", token=raw),
    )


def reset_token_owner(raw_token: str) -> User | None:
    """The account a usable reset token belongs to."""
    token = tokens.find_usable(raw_token, "reset")
    return db.session.get(User, token.user_id) if token else None


def reset_password(raw_token: str, new_password: str) -> User | None:
    """Use a reset token: new password, every session ended. None if the token is not usable."""
    token = tokens.find_usable(raw_token, "reset")
    if token is None:
        return None
    user = db.session.get_one(User, token.user_id)  # the token's foreign key keeps its owner
    tokens.spend(token)
    user.password_hash = passwords.hash_password(new_password)
    user.password_changed_at = utcnow()
    sessions.end_sessions(user.id)
    return user


def email_taken(email: str, *, by_other_than: User) -> bool:
    """Is this address already another account's?"""
    found = find_user(email)
    return found is not None and found.id != by_other_than.id


def start_email_change(user: User, new_email: str) -> None:
    """Send a confirmation link to the new address; the old one is told, and stays until confirmed."""
    hours = current_app.config["EMAIL_CHANGE_HOURS"]
    raw = tokens.issue(user, "email", hours=hours, payload={"email": normalise_email(new_email)})
    queue_email(
        "email_change_confirm",
        [user],
        to_email=normalise_email(new_email),
        sensitive=True,
        name=user.name,
        hours=hours,
        link=external_url("auth.email_link", token=raw),
    )
    queue_email("email_change_notice", [user], name=user.name)


def confirm_email_change(raw_token: str) -> User | None:
    """Make the confirmed address the account's. None if the token is unusable or the address taken."""
    token = tokens.find_usable(raw_token, "email")
    if token is None:
        return None
    user = db.session.get_one(User, token.user_id)  # the token's foreign key keeps its owner
    new_email = token.payload.get("email", "")
    if not new_email or email_taken(new_email, by_other_than=user):
        return None
    tokens.spend(token)
    tokens.void_all(user)  # links sent to the old address stop working
    user.email = new_email
    return user


def switch_school(school_id: int) -> bool:
    """Make another of the person's schools the current one."""
    if any(m.school_id == school_id for m in g.memberships):
        session["school_id"] = school_id
        return True
    return False


def count_users() -> int:
    """How many accounts exist (the demo seeds itself into an empty database)."""
    return db.session.scalar(select(func.count(User.id))) or 0
