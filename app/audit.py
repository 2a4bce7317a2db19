"""Write to the school's audit log: ``audit.record("member.approved", target=name)``.

The entry joins the caller's transaction, so it lands if and only if the change it
describes does. Entries are append-only (``app.models.audit``).
"""

from __future__ import annotations

import re
from typing import Any

from flask import g, has_request_context
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user

from app import tenancy
from app.extensions import db
from app.lazytext import lazy_gettext as _l
from app.models.audit import AuditEntry

# Every action the log knows, with the words the settings page shows for it (lazy: translated
# when shown; the keys are what the log stores).
ACTIONS: dict[str, Any] = {
    "member.approved": _l("Approved a member"),
    "member.rejected": _l("Rejected a member"),
    "member.role_changed": _l("Changed a role"),
    "member.permission_changed": _l("Changed a permission"),
    "member.deactivated": _l("Deactivated a member"),
    "member.reactivated": _l("Reactivated a member"),
    "settings.changed": _l("Changed the school's settings"),
    "invite_code.rotated": _l("Rotated the invitation code"),
    "class.created": _l("Created a class"),
    "class.changed": _l("Changed a class"),
    "class.deleted": _l("Deleted a class"),
    "staff.changed": _l("Changed the staff directory"),
    "family.changed": _l("Changed a family"),
    "family_code.rotated": _l("Rotated a family's invitation code"),
    "class_change.requested": _l("Asked to change a child's class"),
    "class_change.approved": _l("Approved a class change"),
    "class_change.rejected": _l("Rejected a class change"),
    "guardian.approved": _l("Approved a second guardian"),
    "guardian.rejected": _l("Rejected a second guardian"),
    "event.created": _l("Created an event"),
    "event.changed": _l("Changed an event"),
    "event.deleted": _l("Deleted an event"),
    "calendar_feed.rotated": _l("Made a new calendar feed address"),
    "import.applied": _l("Imported families"),
    "export.directory": _l("Exported the directory"),
    "export.school_data": _l("Exported the school's data"),
    "support.granted": _l("Granted support access"),
    "support.revoked": _l("Revoked support access"),
    "support.viewed": _l("Support viewed a page"),
    "support.deletion": _l("Carried out a deletion request"),
    "support.deletion_marked": _l("Support marked a deletion request to be carried out"),
    "support.refused": _l("Support was refused a page (access had ended)"),
    "invite_code.switched_off": _l("Switched the invitation code off"),
    "auth.signed_in": _l("Signed in"),
    "account.closed": _l("Closed their own account"),
    "message.cancelled": _l("Cancelled a scheduled message"),
    "suppression.lifted": _l("Lifted an email suppression"),
    "school.created": _l("Created the school"),
    "member.invited": _l("Invited a member"),
    "crest.uploaded": _l("Uploaded the school's crest"),
    "crest.removed": _l("Removed the school's crest"),
}


# Targets the app itself writes in English (not names people typed), keyed by the action that
# writes them: the log stores the English, the page shows it in the reader's language.
FIXED_TARGETS: dict[tuple[str, str], Any] = {
    ("settings.changed", "School profile"): _l("School profile"),
    ("settings.changed", "Joining rules"): _l("Joining rules"),
    ("settings.changed", "Brand colour"): _l("Brand colour"),
    ("crest.uploaded", "School crest"): _l("School crest"),
    ("crest.removed", "School crest"): _l("School crest"),
    ("invite_code.rotated", "Invitation code"): _l("Invitation code"),
    ("invite_code.switched_off", "Invitation code"): _l("Invitation code"),
    ("import.applied", "CSV file"): _l("CSV file"),
}
_GRANT_HOURS = re.compile(r"([0-9]+) hours")
_GRANT_UNTIL = re.compile(r"Grant until (.+) UTC")


def target_text(action: str, target: str | None) -> str:
    """An entry's target as the reader's language says it; people's and classes' names as stored."""
    if not target:
        return ""
    fixed = FIXED_TARGETS.get((action, target))
    if fixed is not None:
        return str(fixed)
    if action == "support.granted" and (hours := _GRANT_HOURS.fullmatch(target)):
        count = int(hours.group(1))
        return ngettext("%(num)d hour", "%(num)d hours", count)
    if action == "support.revoked" and (until := _GRANT_UNTIL.fullmatch(target)):
        return _("Grant until %(when)s UTC", when=until.group(1))
    return target


def record(action: str, *, target: str | None = None, school_id: int | None = None, **detail) -> AuditEntry:
    """Add an entry for the current school (or ``school_id``) to the session; it commits with the caller."""
    if action not in ACTIONS:
        raise KeyError(f"{action!r} is not an audit action")
    school_id = school_id or tenancy.current_school_id()
    if school_id is None:
        raise tenancy.TenancyError("an audit entry needs a school")
    entry = AuditEntry(
        school_id=school_id,
        actor_id=_actor_id(),
        action=action,
        target=(target or None) and target[:200],
        detail=detail,
        by_support=bool(has_request_context() and g.get("support_grant")),
    )
    db.session.add(entry)  # flushed under the caller's binding, which must be this school
    return entry


def _actor_id() -> int | None:
    if has_request_context() and current_user.is_authenticated:
        return current_user.id
    return None
