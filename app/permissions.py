"""THE permission catalogue, role defaults, ``can()`` and the access a view declares.

Every view says who may reach it with one decorator from here (``public``, ``signed_in``,
``member`` or ``requires``); ``enforce_access`` checks it before the view runs, and a test
walks the URL map to fail on any view that declares nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from flask import abort, current_app, g, redirect, request, url_for
from flask_login import current_user

from app.lazytext import lazy_gettext as _l
from app.models import PlatformRole, Role

# A view function; the access decorators hand it back with its own type.
ViewT = TypeVar("ViewT", bound=Callable[..., Any])


@dataclass(frozen=True)
class Permission:
    """One thing a member may be allowed to do."""

    key: str
    label: Any  # a lazy gettext string: translated wherever it is shown
    module: str


def _module(name: str, *entries: tuple[str, Any]) -> list[Permission]:
    return [Permission(key, label, name) for key, label in entries]


# The modules' names stay plain (pages and tests group by them); this is how a page shows one.
MODULE_LABELS: dict[str, Any] = {
    "Directory": _l("Directory"),
    "Members": _l("Members"),
    "Classes": _l("Classes"),
    "Events": _l("Events"),
    "Messages": _l("Messages"),
    "Settings": _l("Settings"),
}


def module_label(name: str) -> str:
    """A permission module's name in the reader's language ('Directory' stays the key)."""
    return str(MODULE_LABELS.get(name, name))


CATALOGUE: list[Permission] = [
    *_module(
        "Directory",
        ("directory.view", _l("View the school directory")),
        ("directory.view_all_contacts", _l("See every family's contact details")),
        ("directory.export", _l("Print and export the directory")),
    ),
    *_module(
        "Members",
        ("members.approve", _l("Approve people who ask to join")),
        ("members.manage", _l("Change roles and deactivate people")),
        ("members.permissions", _l("Grant and revoke single permissions")),
    ),
    *_module(
        "Classes",
        ("classes.manage", _l("Create and edit classes and the staff directory")),
        ("families.manage", _l("Add and edit any family")),
        ("import.run", _l("Import families from a spreadsheet")),
    ),
    *_module(
        "Events",
        ("events.create", _l("Create Event")),
        ("events.edit_own", _l("Edit Own Event")),
        ("events.delete_own", _l("Delete Own Event")),
        ("events.edit_any", _l("Edit Any Event")),
        ("events.delete_any", _l("Delete Any Event")),
    ),
    *_module(
        "Messages",
        ("messages.class", _l("Email the families of their classes")),
        ("messages.school", _l("Email the whole school")),
        ("messages.newsletter", _l("Send newsletters")),
    ),
    *_module(
        "Settings",
        ("settings.view", _l("See the school's settings")),
        ("settings.edit", _l("Change the school's settings")),
        ("audit.view", _l("Read the audit log")),
        ("support.grant", _l("Let platform support see the school's data")),
        ("data.export", _l("Export the school's data")),
    ),
]

BY_KEY: dict[str, Permission] = {p.key: p for p in CATALOGUE}

_PARENT = {"directory.view"}
_ROOM_PARENT = _PARENT | {"messages.class", "events.create", "events.edit_own", "events.delete_own"}
_STAFF = _ROOM_PARENT | {
    "directory.view_all_contacts",
    "directory.export",
    "members.approve",
    "events.edit_any",
    "events.delete_any",
}
_ADMIN = set(BY_KEY) - {"members.permissions"}

ROLE_DEFAULTS: dict[Role, frozenset[str]] = {
    Role.PARENT: frozenset(_PARENT),
    Role.ROOM_PARENT: frozenset(_ROOM_PARENT),
    Role.STAFF: frozenset(_STAFF),
    Role.ADMIN: frozenset(_ADMIN),
    Role.SUPERADMIN: frozenset(BY_KEY),
}


ROLE_ORDER: list[Role] = [Role.PARENT, Role.ROOM_PARENT, Role.STAFF, Role.ADMIN, Role.SUPERADMIN]


def role_rank(role: Role) -> int:
    """Roles in order of what they may do: a parent is 0, a SuperAdmin 4."""
    return ROLE_ORDER.index(Role(role))


def approves_by_role(role: Role, approval_role: Role | None) -> bool:
    """Does this role approve newcomers by default, given the school's choice?"""
    threshold = approval_role or Role.STAFF
    return "members.approve" in ROLE_DEFAULTS[role] and role_rank(role) >= role_rank(threshold)


def modules() -> dict[str, list[Permission]]:
    """The catalogue grouped by module, in catalogue order (for the settings page)."""
    grouped: dict[str, list[Permission]] = {}
    for permission in CATALOGUE:
        grouped.setdefault(permission.module, []).append(permission)
    return grouped


def effective_permissions(membership) -> frozenset[str]:
    """Role defaults, plus this member's grants, minus their revocations (nothing unless approved)."""
    if membership is None or not membership.is_approved:
        return frozenset()
    return permissions_with_role(membership)


def defaults_of_role(role, approval_role) -> frozenset[str]:
    """What a role gives in a school, before a person's single changes."""
    allowed = set(ROLE_DEFAULTS[role])
    if not approves_by_role(role, approval_role):
        allowed.discard("members.approve")  # the school chose who approves newcomers
    return frozenset(allowed)


def permissions_with_role(membership, role=None) -> frozenset[str]:
    """What the membership gives, or would give once approved, with ``role`` (its own by default)."""
    allowed = set(defaults_of_role(role or membership.role, membership.school.approval_role))
    for change in membership.permission_changes:
        if change.granted:
            allowed.add(change.permission)
        else:
            allowed.discard(change.permission)
    return frozenset(allowed & set(BY_KEY))


def can(permission: str) -> bool:
    """May the current member do this in the current school?"""
    if permission not in BY_KEY:
        raise KeyError(f"{permission!r} is not in the permission catalogue")
    if "permissions" not in g:
        g.permissions = effective_permissions(g.get("membership"))
    return permission in g.permissions


class Access(StrEnum):
    """Who may reach a view."""

    PUBLIC = "public"
    SIGNED_IN = "signed in"
    MEMBER = "approved member"
    PERMISSION = "permission"
    PLATFORM = "platform staff"


def _declare(access: Access, permissions: tuple[str, ...] = ()) -> Callable[[ViewT], ViewT]:
    for permission in permissions:
        if access is not Access.PLATFORM and permission not in BY_KEY:
            raise KeyError(f"{permission!r} is not in the permission catalogue")

    def decorate(view: ViewT) -> ViewT:
        # Kept on the function itself (read back by declared_access); a function's type has no
        # attributes of its own to assign, so they go into its __dict__.
        vars(view).update(access=access, access_permissions=permissions)
        return view

    return decorate


public = _declare(Access.PUBLIC)
signed_in = _declare(Access.SIGNED_IN)
member = _declare(Access.MEMBER)


def requires(*permissions: str) -> Callable:
    """The view needs every one of these permissions in the current school."""
    return _declare(Access.PERMISSION, permissions)


def platform(*roles: PlatformRole) -> Callable:
    """The view is for the operator's own people with one of these platform roles, in no school."""
    return _declare(Access.PLATFORM, tuple(PlatformRole(role).value for role in roles))


def has_platform_role(*roles: PlatformRole) -> bool:
    """Is the signed-in person one of the operator's staff with one of these roles?"""
    role = getattr(current_user, "platform_role", None) if current_user.is_authenticated else None
    return role is not None and role in roles


def access_of(endpoint: str) -> tuple[Access | None, tuple[str, ...]]:
    """What a registered endpoint declares (None when it declares nothing)."""
    view = current_app.view_functions.get(endpoint)
    return getattr(view, "access", None), getattr(view, "access_permissions", ())


def enforce_access():
    """before_request: refuse what the view's declaration does not allow."""
    if request.endpoint is None:
        return None  # 404/405 are answered by routing
    access, permissions = access_of(request.endpoint)
    if access is None:
        current_app.logger.error("unclassified endpoint refused: %s", request.endpoint)
        abort(403)
    if access is Access.PUBLIC:
        return None
    if not current_user.is_authenticated:
        # "Email settings" in an email carries ?lang=: sign-in opens in the email's language too.
        lang = request.args.get("lang")  # None adds nothing; an unknown code is ignored by sign-in
        return redirect(url_for("auth.sign_in", next=request.full_path.rstrip("?"), lang=lang))
    if access is Access.SIGNED_IN:
        return None
    if access is Access.PLATFORM:
        if not has_platform_role(*(PlatformRole(role) for role in permissions)):
            abort(403)
        return None
    if has_platform_role(*PlatformRole):
        from app.platform.access import check_school_route

        check_school_route()  # staff: only under an active grant, read-only, logged (P3)
    membership = g.get("membership")
    if membership is None or not membership.is_approved:
        return redirect(url_for("auth.pending"))
    if access is Access.PERMISSION and not all(can(p) for p in permissions):
        abort(403)
    return None
