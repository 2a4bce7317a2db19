"""Write to the school's audit log: ``audit.record("member.approved", target=name)``.

The entry joins the caller's transaction, so it lands if and only if the change it
describes does. Entries are append-only (``app.models.audit``).
"""

from __future__ import annotations

from flask import g, has_request_context
from flask_login import current_user

from app import tenancy
from app.extensions import db
from app.models.audit import AuditEntry

# Every action the log knows, with the words the settings page shows for it.
ACTIONS: dict[str, str] = {
    "member.approved": "Approved a member",
    "member.rejected": "Rejected a member",
    "member.role_changed": "Changed a role",
    "member.permission_changed": "Changed a permission",
    "member.deactivated": "Deactivated a member",
    "member.reactivated": "Reactivated a member",
    "settings.changed": "Changed the school's settings",
    "invite_code.rotated": "Rotated the invitation code",
    "class.created": "Created a class",
    "class.changed": "Changed a class",
    "class.deleted": "Deleted a class",
    "staff.changed": "Changed the staff directory",
    "family.changed": "Changed a family",
    "family_code.rotated": "Rotated a family's invitation code",
    "class_change.requested": "Asked to change a child's class",
    "class_change.approved": "Approved a class change",
    "class_change.rejected": "Rejected a class change",
    "guardian.approved": "Approved a second guardian",
    "guardian.rejected": "Rejected a second guardian",
    "event.created": "Created an event",
    "event.changed": "Changed an event",
    "event.deleted": "Deleted an event",
    "calendar_feed.rotated": "Made a new calendar feed address",
    "import.applied": "Imported families",
    "export.directory": "Exported the directory",
    "export.school_data": "Exported the school's data",
    "support.granted": "Granted support access",
    "support.revoked": "Revoked support access",
    "support.viewed": "Support viewed a page",
    "support.deletion": "Carried out a deletion request",
    "support.deletion_marked": "Support marked a deletion request to be carried out",
    "support.refused": "Support was refused a page (access had ended)",
    "invite_code.switched_off": "Switched the invitation code off",
    "auth.signed_in": "Signed in",
    "account.closed": "Closed their own account",
    "message.cancelled": "Cancelled a scheduled message",
    "suppression.lifted": "Lifted an email suppression",
}


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
