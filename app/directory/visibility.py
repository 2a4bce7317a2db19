"""THE place that decides which contact details a viewer may see (pages, partials, print, CSV).

Each guardian chooses, per field, who may see it: only school staff, families in their
children's classes, or the whole school. People with ``directory.view_all_contacts``
(staff by default) see every field; everyone sees their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from app.classes.services import class_ids_of_member
from app.extensions import db
from app.models import Membership, Visibility
from app.permissions import can

FIELDS = ("email", "phone", "address")


@dataclass(frozen=True)
class Viewer:
    """Who is looking: their membership, the classes they belong to, and whether they see all."""

    membership_id: int
    class_ids: frozenset[int]
    sees_all: bool


class _HasEmail(Protocol):
    """The account side of a contact owner: only its address is read."""

    @property
    def email(self) -> str: ...


class ContactOwner(Protocol):
    """What deciding needs of a guardian: a Membership, or the plain rows the directory reads."""

    @property
    def id(self) -> int: ...
    @property
    def user(self) -> _HasEmail: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...
    @property
    def email_visibility(self) -> Visibility: ...
    @property
    def phone_visibility(self) -> Visibility: ...
    @property
    def address_visibility(self) -> Visibility: ...


def classes_of(membership_id: int) -> frozenset[int]:
    """Classes a member has a child in or helps with, in one query (the rule is the classes')."""
    return frozenset(db.session.scalars(class_ids_of_member(membership_id)))


def current_viewer(membership: Membership) -> Viewer:
    """The signed-in member as a viewer of the directory."""
    return Viewer(membership.id, classes_of(membership.id), can("directory.view_all_contacts"))


def allowed(viewer: Viewer, visibility: Visibility, owner_id: int, owner_class_ids: frozenset[int]) -> bool:
    """May this viewer see a field with this visibility, owned by this member?"""
    if viewer.sees_all or viewer.membership_id == owner_id or visibility is Visibility.SCHOOL:
        return True
    return visibility is Visibility.CLASSES and bool(viewer.class_ids & owner_class_ids)


def visible_contact(viewer: Viewer, owner: ContactOwner, owner_class_ids: frozenset[int]) -> dict[str, str]:
    """The owner's contact details this viewer may see (fields that are empty are left out)."""
    values = {"email": owner.user.email, "phone": owner.phone, "address": owner.address}
    return {
        field: value
        for field in FIELDS
        if (value := values[field])
        and allowed(viewer, getattr(owner, f"{field}_visibility"), owner.id, owner_class_ids)
    }
