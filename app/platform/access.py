"""Platform support staff in a school's data: only under an active grant, read-only, logged (P3).

Entering a school (``platform.enter``) stores ``{"school_id", "grant_id"}`` in the
server-side session. On each request ``bind_support_view`` (called by
``load_request_membership``) checks that grant again: while it is active the request acts
in that school with a synthetic, read-only permission set and ``g.support_grant`` set (so
audit entries are marked ``by_support``). ``check_school_route`` (called by
``enforce_access`` for school routes) refuses anything but reading the directory, classes
and settings blueprints, writes
``support.viewed`` with the route pattern (never the URL, which may carry ids and queries)
and refuses every school route once the grant has expired or been revoked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import abort, g, request, session
from flask_login import current_user
from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import MembershipStatus, PlatformRole, Role, School, User
from app.models.support import SupportGrant

SESSION_KEY = "support_view"
# What support staff may do in a school under a grant: read the directory and the settings.
SUPPORT_PERMISSIONS = frozenset(
    {"directory.view", "directory.view_all_contacts", "settings.view", "audit.view"}
)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The parts of a school support may open: its directory, its classes and its settings. Nested
# blueprints are named by their full dotted name (request.blueprint), so each is listed here.
SUPPORT_BLUEPRINTS = frozenset({"directory", "classes", "settings", "settings.people", "settings.audit"})


@dataclass
class SupportMembership:
    """Stands in for a membership while support staff look at a school; never stored.

    ``id`` 0 matches no row (ids start at 1), so "my classes" and "my family" are empty.
    """

    school: School
    user: User
    id: int = 0
    role: Role = Role.PARENT
    status: MembershipStatus = MembershipStatus.APPROVED
    permission_changes: list = field(default_factory=list)
    phone: str | None = None
    address: str | None = None
    title: str | None = None

    @property
    def school_id(self) -> int:
        return self.school.id

    @property
    def user_id(self) -> int:
        return self.user.id

    @property
    def is_approved(self) -> bool:
        return True


def is_platform_staff() -> bool:
    """Is the signed-in person one of the operator's support staff or administrators?"""
    role = getattr(current_user, "platform_role", None) if current_user.is_authenticated else None
    return role in (PlatformRole.SUPPORT, PlatformRole.ADMIN)


def active_grant(school_id: int, grant_id: int | None = None) -> SupportGrant | None:
    """The school's active grant (that one, when ``grant_id`` is given), or None."""
    with tenancy.bound(school_id):
        query = select(SupportGrant).order_by(SupportGrant.expires_at.desc())
        if grant_id is not None:
            query = query.where(SupportGrant.id == grant_id)
        return next((grant for grant in db.session.scalars(query) if grant.is_active()), None)


def bind_support_view() -> bool:
    """before_request (from load_request_membership): act in the granted school, if any.

    Returns True when the request is a support view (active or ended), so the person's own
    memberships are not used for it.
    """
    view = session.get(SESSION_KEY)
    if not view:
        return False
    if not is_platform_staff():
        session.pop(SESSION_KEY, None)
        return False
    school_id = int(view["school_id"])
    grant = active_grant(school_id, int(view["grant_id"]))
    g.support_school_id = school_id
    if grant is None:
        return True  # ended: check_school_route refuses every school page
    school = db.session.get_one(School, school_id)  # the active grant belongs to it
    g.support_grant = grant
    g.school = school
    g.membership = SupportMembership(school=school, user=current_user._get_current_object())
    g.permissions = SUPPORT_PERMISSIONS
    tenancy.bind_request(school_id)
    return True


def check_school_route() -> None:
    """enforce_access, for school routes asked for by platform staff: refuse, or log the view."""
    from app import audit

    school_id = g.get("support_school_id")
    rule = request.url_rule.rule if request.url_rule is not None else request.endpoint
    if g.get("support_grant") is not None:
        if request.method not in READ_METHODS:
            abort(403)  # read-only: nothing is changed in a school under a support grant
        if request.blueprint not in SUPPORT_BLUEPRINTS:
            abort(403)  # messages, calendar and the rest are not what a grant opens
        audit.record("support.viewed", target=rule, route=rule)
        db.session.commit()
        return
    if school_id is not None:
        with tenancy.bound(school_id):
            audit.record("support.refused", target=rule, school_id=school_id, route=rule)
            db.session.commit()
        abort(403)
    membership = g.get("membership")
    if membership is None or not membership.is_approved:
        abort(403)  # staff see no school data by default; a school of their own is another matter


def enter(school_id: int) -> SupportGrant | None:
    """Start a support view of a school if it has an active grant (the caller commits)."""
    grant = active_grant(school_id)
    if grant is None:
        return None
    session[SESSION_KEY] = {"school_id": school_id, "grant_id": grant.id}
    return grant


def leave() -> None:
    """End the support view; the person's own school (if any) is used again."""
    session.pop(SESSION_KEY, None)
