"""The rules about changing people, shared by the lifecycle and the permission editor.

Nobody changes someone whose role is above theirs, gives a role above their own or a
permission they do not hold themselves, and nobody removes or demotes the last SuperAdmin.
A broken rule raises ``Refused``; the caller rolls back and shows its message.
"""

from __future__ import annotations

from flask_babel import gettext as _
from sqlalchemy import select

from app import permissions
from app.extensions import db
from app.models import Membership, Role, User, listed_membership

# A SuperAdmin always keeps these: without them nobody might be left to manage the school's people.
KEPT_BY_SUPERADMINS = frozenset({"members.manage", "members.permissions"})


class Refused(Exception):
    """A change the rules do not allow; the message says why, for the person who tried.

    ``status`` is 403 when the actor asked for more than their own rights, 422 when the
    change would break a rule about the school (the last SuperAdmin).
    """

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


def assignable_roles(actor: Membership) -> list[Role]:
    """The roles this actor may give: up to their own."""
    return [
        role
        for role in permissions.ROLE_ORDER
        if permissions.role_rank(role) <= permissions.role_rank(actor.role)
    ]


def check_may_change(actor: Membership, target: Membership) -> None:
    """Refuse a change to someone whose role is above the actor's."""
    if permissions.role_rank(target.role) > permissions.role_rank(actor.role):
        raise Refused(_("You cannot change someone whose role is above yours."))


def _superadmins_left() -> int:
    """Approved SuperAdmins with an open account, their rows locked (PostgreSQL) so two demotions
    cannot both pass. A closed account cannot sign in, so it does not count."""
    ids = db.session.scalars(
        select(Membership.id)
        .join(User, User.id == Membership.user_id)
        .where(
            Membership.role == Role.SUPERADMIN,
            listed_membership(),
        )
        .with_for_update(of=Membership)
    ).all()
    return len(ids)


def check_not_last_superadmin(target: Membership) -> None:
    """Refuse to take away the last SuperAdmin who can still sign in (a closed one does not count)."""
    counted = target.role is Role.SUPERADMIN and target.is_approved and target.user.active
    if counted and _superadmins_left() <= 1:
        raise Refused(_("The school needs at least one SuperAdmin. Make someone else SuperAdmin first."), 422)


def check_gives_only_what_actor_holds(actor: Membership, target: Membership, role: Role) -> None:
    """A new role must not hand the person a permission the actor was not given themselves.

    Compared as if approved: a deactivated person keeps the role for their reactivation.
    """
    before = permissions.permissions_with_role(target)
    after = permissions.permissions_with_role(target, role)
    beyond = (after - before) - permissions.effective_permissions(actor)
    if beyond:
        labels = ", ".join(str(permissions.BY_KEY[key].label) for key in sorted(beyond))
        raise Refused(
            _("That role would give permissions you do not have yourself (%(labels)s).", labels=labels)
        )
