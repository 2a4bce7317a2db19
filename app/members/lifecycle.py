"""The membership lifecycle: every change of a person's place in a school, in one service.

    join_school / add_membership  ask to join (a new account, or one that has an account)
    invite                        the school (or the platform, for a new school's first admin)
                                  lets someone in by email, with a role
    approve / reject              decide on a pending request (members/routes.py)
    change_role                   give another role (settings, people)
    deactivate / reactivate       switch a membership off and on (settings, people)
    erase_and_deactivate          carry out a confirmed deletion request (settings, deletions)
    close_account                 the person closes their own account (consent, account)

Screens call these and commit once; nothing here commits. The rules about who may change
whom are in ``app.members.rules``; every decision writes the school's audit log.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask import g
from flask_babel import gettext as _
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from app import audit, sessions, tenancy
from app.auth import passwords, tokens
from app.auth.services import LIVE_STATUSES, find_user, normalise_email, school_by_code
from app.classes import families
from app.consent import ledger, policy
from app.extensions import db
from app.i18n import visitors_language
from app.lazytext import lazy_gettext as _l
from app.mail import queue_email
from app.members import rules
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
    listings,
)
from app.models.base import utcnow
from app.models.consent import ConsentKind, PolicyVersion
from app.urls import external_url

# No name in it: the person is gone, and the page that posted it is out of date anyway.
CLOSED_ACCOUNT = _l("This person closed their account, so their request can no longer be approved.")


# -- joining ---------------------------------------------------------------------------------


@dataclass
class JoinOutcome:
    """What joining did: the account to sign in, or an error for a field."""

    user: User | None = None
    field: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class NewChild:
    """A child named at sign-up, with the class the parent picked (None: the school places them)."""

    first_name: str
    last_name: str
    class_id: int | None


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
            field="invite_code", error=_("We don't recognise this code. Check it with your school.")
        )
    # Everything that can be refused is checked before the address is looked up, and an address
    # that already has an account gets the answer a new one gets: joining reveals no account.
    problems = passwords.problems(password, email=email, name=name)
    if problems:
        return JoinOutcome(field="password", error=problems[0])
    with tenancy.bound(school.id):
        if not _classes_exist({child.class_id for child in children if child.class_id is not None}):
            return JoinOutcome(field="children", error=_("Choose each child's class from the list."))
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
    ledger.record_acceptance(user)  # they ticked the box for the newest posted version (P13, P14)
    outcome = add_membership(user, school, children, family=family)
    if outcome.error is None:
        sign_in_link = external_url("auth.sign_in")
        queue_email("join_received", [user], name=user.name, school_name=school.name, link=sign_in_link)
    return outcome


# How long an invitation's choose-a-password link works (as long as an import's).
INVITATION_HOURS = 7 * 24


def invite(school: School, *, email: str, name: str, role: Role, password: str | None = None) -> Membership:
    """Let someone into ``school`` with ``role``, approved, and email them (administrative mail).

    A new address gets an account nobody can sign in to yet and a link to choose its password
    (they accept the privacy policy there); with ``password`` (the command line, typed by the
    operator) the account can sign in at once and no link is sent. An address that has an
    account gets the membership and a note to sign in. The caller checks the address is free of
    this school (a new school always is).
    """
    user = find_user(email)
    has_account = user is not None
    if user is None:
        user = User(
            email=normalise_email(email),
            name=name.strip(),
            # Nobody knows this password unless the operator typed one: the link sets it.
            password_hash=passwords.hash_password(password or secrets.token_urlsafe(32)),
        )
        db.session.add(user)
        db.session.flush()
    with tenancy.bound(school.id):
        membership = Membership(
            school_id=school.id,
            user_id=user.id,
            role=role,
            status=MembershipStatus.APPROVED,  # the one who invites vouches for them
            decided_at=utcnow(),
            email_visibility=school.default_visibility,
            phone_visibility=school.default_visibility,
        )
        db.session.add(membership)
        db.session.flush()
        if password is None:
            queue_invitation("admin_invitation", school, user, has_account=has_account)
    return membership


def queue_invitation(template: str, school: School, user: User, *, has_account: bool) -> None:
    """Email an invitation: a new account's link to choose its password, or a sign-in link.

    The one lifetime and the one link rule for every invitation (the console's first admin, an
    import's families); the template says who invited them and why.
    """
    if has_account:
        link = external_url("auth.sign_in")
    else:
        raw = tokens.issue(user, "reset", hours=INVITATION_HOURS)  # the reset flow sets the password
        link = external_url("auth.reset_link", token=raw)
    queue_email(
        template,
        [user],
        school_id=school.id,
        sensitive=not has_account,
        name=user.name,
        school_name=school.name,
        link=link,
        hours=INVITATION_HOURS,
        has_account=has_account,
    )


def _insert_user(*, email: str, name: str, password: str) -> User | None:
    """Add the account; None if another transaction took the address first.

    The join has written nothing before this point (the web session has its own connection),
    so on a clash the whole transaction is rolled back rather than a savepoint: pysqlite lets
    a savepoint's RELEASE commit on its own, which would keep a half-made join on SQLite.
    """
    user = User(
        email=normalise_email(email),
        name=name.strip(),
        password_hash=passwords.hash_password(password),
        # The language they joined in is the one their approval email is written in.
        language=visitors_language(),
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
    with tenancy.bound(school.id):
        return families.family_by_code(family_code)


def add_membership(user: User, school: School, children=(), family=None) -> JoinOutcome:
    """Ask to join ``school``; an earlier refusal or deactivation cannot be undone from here."""
    with tenancy.bound(school.id):
        if not _classes_exist({child.class_id for child in children if child.class_id is not None}):
            return JoinOutcome(field="children", error=_("Choose each child's class from the list."))
        existing = db.session.scalar(select(Membership).where(Membership.user_id == user.id))
        if existing is not None and existing.status not in LIVE_STATUSES:
            return JoinOutcome(
                field="invite_code",
                error=_("This school has closed your earlier request. Please contact the school office."),
            )
        if existing is None:
            membership = Membership(school_id=school.id, user_id=user.id, role=Role.PARENT)
            db.session.add(membership)
            db.session.flush()
            if family is not None:
                # A second guardian: the family's guardians are asked (children come with the family).
                families.ask_to_join_family(family, membership, school.name)
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
        if child.class_id is not None:
            db.session.add(Enrollment(student_id=student.id, class_id=child.class_id))
    db.session.flush()


def approvers(school: School) -> list[User]:
    """Active accounts with an approved membership of ``school`` that may approve newcomers."""
    from app.members.notices import approver_memberships

    return [m.user for m in approver_memberships(school.id)]


def notify_approvers(school: School, newcomer: User) -> None:
    """Tell the approvers who want an email per request that someone is waiting (administrative
    mail); the others hear in their daily digest (app/members/notices.py)."""
    from app.members.notices import immediate_recipients

    recipients = immediate_recipients(school.id)
    if recipients:
        queue_email(
            "approval_needed",
            recipients,
            school_id=school.id,
            school_name=school.name,
            queue_url=external_url("members.pending"),
        )


# -- deciding on a request -------------------------------------------------------------------


def approve(membership: Membership) -> bool:
    """Let the person in, and tell them by email (False if someone decided first, or they left)."""
    if not membership.user.active:
        return False  # only a page opened before they closed their account can post this
    return _decide(membership, MembershipStatus.APPROVED, None, link=external_url("auth.sign_in"))


def reject(membership: Membership, reason: str) -> bool:
    """Turn the request down with a reason the person is told (False if someone decided first).

    The person's links to families go too (a second guardian's request to join one, or the
    family they named at sign-up): nothing should tie a turned-down stranger to children.
    """
    if not _decide(membership, MembershipStatus.REJECTED, reason.strip()):
        return False
    _unlink_families(membership)
    return True


def _unlink_families(membership: Membership) -> None:
    """Delete the rejected membership's Guardian rows, and only those.

    A family the newcomer made at sign-up keeps its children with no guardian: it was only
    ever shown where an approved guardian is (directory, rosters, audiences), and stays in
    the family editor for staff, exactly as it did while it hung on the rejected person.
    """
    # The decision only applies to a pending membership, which is nobody's approved guardian.
    families = db.session.scalars(
        delete(Guardian).where(Guardian.membership_id == membership.id).returning(Guardian.family_id)
    ).all()
    listings.refresh_listings(families)  # a bulk DELETE: no flush sees it


def _decide(membership: Membership, status: MembershipStatus, reason: str | None, **context) -> bool:
    """Record who decided what and when, then tell the person (administrative mail).

    The update only applies to a membership still pending, so two people deciding at the
    same moment cannot both win (and send both emails). Returns False for the one who lost.
    """
    decided = db.session.scalars(
        update(Membership)
        .where(Membership.id == membership.id, Membership.status == MembershipStatus.PENDING)
        .values(
            status=status, decided_at=utcnow(), decided_by_id=g.membership.user_id, decision_reason=reason
        )
        .returning(Membership.id)
        .execution_options(synchronize_session="fetch")
    ).all()
    if not decided:
        return False
    listings.refresh_listings(listings.families_of(decided))  # an UPDATE no flush sees
    audit.record(f"member.{status.value}", target=membership.user.name)
    queue_email(
        f"membership_{status.value}",
        [membership.user],
        school_id=membership.school_id,
        name=membership.user.name,
        school_name=g.school.name,
        reason=reason,
        **context,
    )
    return True


# -- role and status -------------------------------------------------------------------------


def _drop_revocations(target: Membership, keys: frozenset[str]) -> None:
    """Undo revocations of these permissions (a new SuperAdmin keeps managing people)."""
    for change in list(target.permission_changes):
        if change.permission in keys and not change.granted:
            target.permission_changes.remove(change)


def change_role(actor: Membership, target: Membership, role: Role) -> bool:
    """Give ``target`` another role (up to the actor's own; never the last SuperAdmin's)."""
    role = Role(role)
    rules.check_may_change(actor, target)
    if role not in rules.assignable_roles(actor):
        raise rules.Refused(_("You can give a role only up to your own."))
    if role is target.role:
        return False
    if target.role is Role.SUPERADMIN:
        rules.check_not_last_superadmin(target)
    rules.check_gives_only_what_actor_holds(actor, target, role)
    old = target.role
    target.role = role
    if role is Role.SUPERADMIN:
        _drop_revocations(target, rules.KEPT_BY_SUPERADMINS)
    audit.record("member.role_changed", target=target.user.name, old=old.value, new=role.value)
    return True


def deactivate(actor: Membership, target: Membership) -> bool:
    """Switch a membership off in this school; the person loses access on their next request."""
    rules.check_may_change(actor, target)
    if target.status is MembershipStatus.DEACTIVATED:
        return False
    rules.check_not_last_superadmin(target)
    target.status = MembershipStatus.DEACTIVATED
    audit.record("member.deactivated", target=target.user.name)
    return True


def reactivate(actor: Membership, target: Membership) -> bool:
    """Let a deactivated member back in, with the role they had."""
    rules.check_may_change(actor, target)
    if target.status is not MembershipStatus.DEACTIVATED:
        return False
    target.status = MembershipStatus.APPROVED
    audit.record("member.reactivated", target=target.user.name)
    return True


def erase_and_deactivate(actor: Membership, target: Membership) -> None:
    """A confirmed deletion request: erase the person's directory details here and switch them off."""
    rules.check_may_change(actor, target)
    rules.check_not_last_superadmin(target)
    target.title = target.phone = target.address = None
    target.status = MembershipStatus.DEACTIVATED


# -- closing one's own account ---------------------------------------------------------------


def deactivate_account(user: User) -> None:
    """Switch an account off: no sign-in, no sessions, no mail (administrative included)."""
    user.active = False
    sessions.end_sessions(user.id)


def close_account(user: User) -> list[PolicyVersion]:
    """Deactivate: no sign-in, no sessions, no email, out of every directory; the school keeps the data.

    Records "objected" for each material version not yet in force for the person, then
    "deactivated", and tells each of their schools' audit logs. Returns the objections.
    """
    objections = ledger.objections_due(user)
    # Sessions are ended on their own connection first (SQLite has one writer at a time).
    deactivate_account(user)
    for version in objections:
        ledger.record(user.id, ConsentKind.OBJECTED, version.id)
    current = policy.version_for_user(user)
    ledger.record(user.id, ConsentKind.DEACTIVATED, current.id if current else None)
    for membership in tenancy.memberships_of(user.id, LIVE_STATUSES):
        with tenancy.bound(membership.school_id):
            audit.record("account.closed", target=user.name, school_id=membership.school_id)
            db.session.flush()
    return objections
