"""Accounts: joining, signing in, passwords, email changes and the current school.

Services flush and never commit; the route commits once.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g, request, session
from flask_login import current_user, login_user, logout_user
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload

from app import sessions, tenancy
from app.auth import passwords, tokens
from app.extensions import db
from app.mail import queue_email
from app.models import (
    Enrollment,
    Family,
    Guardian,
    Membership,
    MembershipStatus,
    Role,
    School,
    SchoolClass,
    Student,
    User,
)
from app.models.base import utcnow
from app.permissions import effective_permissions
from app.urls import external_url

LIVE_STATUSES = (MembershipStatus.PENDING, MembershipStatus.APPROVED)


def normalise_email(email: str) -> str:
    """Compare addresses case-insensitively and without stray spaces."""
    return email.strip().lower()


def normalise_code(code: str) -> str:
    """Invitation codes are typed by hand: ignore case and surrounding spaces."""
    return code.strip().upper()


def find_user(email: str) -> User | None:
    """The account with this email, or None."""
    return db.session.scalar(select(User).where(User.email == normalise_email(email)))


def school_by_code(code: str) -> School | None:
    """The school whose invitation code this is (None if unknown or switched off)."""
    if not code.strip():
        return None
    return db.session.scalar(select(School).where(School.invite_code == normalise_code(code)))


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
    return (approved or memberships or [None])[0]


@dataclass
class JoinOutcome:
    """What joining did: the account to sign in, or an error for a field."""

    user: User | None = None
    field: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class NewChild:
    """A child named at sign-up, with the class the parent picked."""

    first_name: str
    last_name: str
    class_id: int


def join_school(
    *, code: str, name: str, email: str, password: str, children=(), family_code: str = ""
) -> JoinOutcome:
    """A new account with a pending membership and its family in the code's school; an address that
    has an account already is emailed instead, and the answer is the same (no enumeration)."""
    school = school_by_code(code)
    family = _family_for_code(school, family_code)
    # A wrong family code gets the very answer a wrong school code gets: nothing to enumerate.
    if school is None or (family_code.strip() and family is None):
        return JoinOutcome(
            field="invite_code", error="We don't recognise this code. Check it with your school."
        )
    # Everything that can be refused is checked before the address is looked up, and an address
    # that already has an account gets the answer a new one gets: joining reveals no account.
    problems = passwords.problems(password, email=email, name=name)
    if problems:
        return JoinOutcome(field="password", error=problems[0])
    with tenancy.bound(school.id):
        if not _classes_exist({child.class_id for child in children}):
            return JoinOutcome(field="children", error="Choose each child's class from the list.")
    user = find_user(email)
    if user is not None:
        passwords.hash_password(password)  # the work a new account costs, so the same time
        tell_existing_account(user, school)
        return JoinOutcome()
    user = _insert_user(email=email, name=name, password=password)
    if user is None:
        # A simultaneous join (a double-click) made this address's account first: answer as
        # for any existing account, so the second request is neither a 500 nor a giveaway.
        _tell_if_found(email, school)
        return JoinOutcome()
    from app.consent.ledger import record_acceptance

    record_acceptance(user)  # they ticked the box for the newest posted version (P13, P14)
    outcome = add_membership(user, school, children, family=family)
    if outcome.error is None:
        sign_in_link = external_url("auth.sign_in")
        queue_email("join_received", [user], name=user.name, school_name=school.name, link=sign_in_link)
    return outcome


def _insert_user(*, email: str, name: str, password: str) -> User | None:
    """Add the account; None if another transaction took the address first.

    The join has written nothing before this point (the web session has its own connection),
    so on a clash the whole transaction is rolled back rather than a savepoint: pysqlite lets
    a savepoint's RELEASE commit on its own, which would keep a half-made join on SQLite.
    """
    user = User(
        email=normalise_email(email), name=name.strip(), password_hash=passwords.hash_password(password)
    )
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()  # the losing User goes with it
        return None
    return user


def _tell_if_found(email: str, school: School) -> None:
    """Email the owner of the account that won the race (found now that its insert is visible)."""
    user = find_user(email)
    if user is not None:
        tell_existing_account(user, school)


def tell_existing_account(user: User, school: School) -> None:
    """Someone joined with this account's address: tell its owner how to add the school instead."""
    queue_email(
        "account_exists",
        [user],
        name=user.name,
        school_name=school.name,
        sign_in_link=external_url("auth.sign_in"),
        reset_link=external_url("auth.forgot_password"),
    )


def _family_for_code(school: School | None, family_code: str):
    """The family a second guardian's code names in this school (None if no school or no match)."""
    if school is None or not family_code.strip():
        return None
    from app.classes.families import family_by_code

    with tenancy.bound(school.id):
        return family_by_code(family_code)


def add_membership(user: User, school: School, children=(), family=None) -> JoinOutcome:
    """Ask to join ``school``; an earlier refusal or deactivation cannot be undone from here."""
    with tenancy.bound(school.id):
        if not _classes_exist({child.class_id for child in children}):
            return JoinOutcome(field="children", error="Choose each child's class from the list.")
        existing = db.session.scalar(select(Membership).where(Membership.user_id == user.id))
        if existing is not None and existing.status not in LIVE_STATUSES:
            return JoinOutcome(
                field="invite_code",
                error="This school has closed your earlier request. Please contact the school office.",
            )
        if existing is None:
            membership = Membership(school_id=school.id, user_id=user.id, role=Role.PARENT)
            db.session.add(membership)
            db.session.flush()
            if family is not None:
                # A second guardian: the family's guardians are asked (children come with the family).
                from app.classes.families import ask_to_join_family

                ask_to_join_family(family, membership, school.name)
                return JoinOutcome(user=user)
            if children:
                _add_family(membership, user, children)
            notify_approvers(school, user)
    return JoinOutcome(user=user)


def _classes_exist(class_ids: set[int]) -> bool:
    """Are all these classes of the bound school? (Another school's id is simply not found.)"""
    if not class_ids:
        return True
    found = db.session.scalars(select(SchoolClass.id).where(SchoolClass.id.in_(class_ids))).all()
    return set(found) == class_ids


def _add_family(membership: Membership, user: User, children) -> None:
    """The newcomer's family and children; nobody sees them until the membership is approved."""
    family = Family(name=f"{children[0].last_name.strip() or user.name.split()[-1]} family")
    db.session.add(family)
    db.session.flush()
    db.session.add(Guardian(family_id=family.id, membership_id=membership.id))
    for child in children:
        student = Student(
            family_id=family.id, first_name=child.first_name.strip(), last_name=child.last_name.strip()
        )
        db.session.add(student)
        db.session.flush()
        db.session.add(Enrollment(student_id=student.id, class_id=child.class_id))
    db.session.flush()


def classes_for_code(code: str) -> list[SchoolClass]:
    """The classes of the school this code belongs to, for the sign-up form's menus."""
    school = school_by_code(code or "")
    if school is None:
        return []
    with tenancy.bound(school.id):
        return list(db.session.scalars(select(SchoolClass).order_by(SchoolClass.grade, SchoolClass.name)))


def approvers(school: School) -> list[User]:
    """Approved members of ``school`` whose permissions include approving newcomers."""
    with tenancy.bound(school.id):
        members = db.session.scalars(
            select(Membership)
            .options(joinedload(Membership.user), selectinload(Membership.permission_changes))
            .where(Membership.status == MembershipStatus.APPROVED)
        ).all()
        return [m.user for m in members if "members.approve" in effective_permissions(m)]


def notify_approvers(school: School, newcomer: User) -> None:
    """Tell the people who approve that someone is waiting (administrative mail)."""
    recipients = approvers(school)
    if recipients:
        queue_email(
            "approval_needed",
            recipients,
            school_id=school.id,
            school_name=school.name,
            queue_url=external_url("members.pending"),
        )


def sign_in(user: User) -> None:
    """Start a fresh session for ``user`` (a new id, so a planted one is worthless)."""
    session.clear()
    login_user(user)
    session.regenerate()
    approved = [m for m in tenancy.memberships_of(user.id, LIVE_STATUSES) if m.is_approved]
    if approved:
        session["school_id"] = approved[0].school_id
        _record_sign_in(approved[0].school_id)


def _record_sign_in(school_id: int) -> None:
    """One audit entry per sign-in (the settings page shows them as a count per day)."""
    from app import audit

    with tenancy.bound(school_id):
        audit.record("auth.signed_in", school_id=school_id)
        db.session.flush()


def sign_out() -> None:
    """End this session and forget everything it held."""
    logout_user()
    session.clear()


def authenticate(email: str, password: str) -> User | None:
    """The active account these credentials open, or None (same answer and time for every failure)."""
    user = find_user(email)
    if not passwords.verify_password(user.password_hash if user else None, password):
        return None
    if not user.active:
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
    sessions.end_sessions(user.id, keep_session_id=session.session_id)
    tokens.void_all(user)  # a reset link sent before the change must not undo it
    session.regenerate()


def send_password_reset(email: str) -> None:
    """Email a reset link if the address belongs to an active account; silent otherwise."""
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
    user = db.session.get(User, token.user_id)
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
    user = db.session.get(User, token.user_id)
    new_email = token.payload.get("email", "")
    if not new_email or email_taken(new_email, by_other_than=user):
        return None
    tokens.spend(token)
    tokens.void_all(user)  # links sent to the old address stop working
    user.email = new_email
    return user


def deactivate_account(user: User) -> None:
    """Switch an account off: no sign-in, no sessions, no mail (administrative included)."""
    user.active = False
    sessions.end_sessions(user.id)


def switch_school(school_id: int) -> bool:
    """Make another of the person's schools the current one."""
    if any(m.school_id == school_id for m in g.memberships):
        session["school_id"] = school_id
        return True
    return False


def count_users() -> int:
    """How many accounts exist (the demo seeds itself into an empty database)."""
    return db.session.scalar(select(func.count(User.id))) or 0
