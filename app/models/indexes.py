"""Indexes that keep every page's cost independent of the host: one place, each with its reason.

A district puts all of its schools on one host, so a query of one school's rows must be served
by an index that starts with ``school_id``, and a row found by a foreign key (a person's
deliveries when their data is exported, the rows a deleted account sets to NULL) must be found
through an index rather than a scan of every school's rows. ``tests/test_indexes.py`` checks
that every foreign key has an index led by its columns and that the pages' queries are served
by such indexes; the migration ``district_*`` creates them.
"""

from __future__ import annotations

from sqlalchemy import Index

from app.models.audit import AuditEntry
from app.models.calendar import Event
from app.models.consent import DataExport, PolicyVersion
from app.models.directory import ClassHelper, EnrollmentChange, Family
from app.models.imports import ImportRun
from app.models.messaging import MailDelivery, MailMessage, SuppressionLift
from app.models.people import Membership
from app.models.support import SupportGrant, SupportRequest

# -- pages of one school, in their order --------------------------------------------------------

# The audit log lists a school's entries by id, newest first, a page at a time (keyset).
Index("ix_audit_entry_school_id_id", AuditEntry.school_id, AuditEntry.id)
# Sign-ins per day (and the action filter): one school's entries of one action, by time.
Index("ix_audit_entry_school_action_created", AuditEntry.school_id, AuditEntry.action, AuditEntry.created_at)
# The approval queue (pending, oldest first) and the people list (approved and deactivated).
Index("ix_membership_school_status_created", Membership.school_id, Membership.status, Membership.created_at)
# The class changes waiting beside the approval queue, oldest first, a page at a time: id is
# in the index so it gives the whole order (created_at, id) and a page reads only its rows,
# rather than joining every waiting change to its child and classes before sorting.
Index(
    "ix_enrollment_change_school_status_created_id",
    EnrollmentChange.school_id,
    EnrollmentChange.status,
    EnrollmentChange.created_at,
    EnrollmentChange.id,
)
# The directory walks a school's families in name order and stops after a page.
Index("ix_family_school_name_id", Family.school_id, Family.name, Family.id)
# ... only its listed ones (the directory and its live search never show the others).
Index("ix_family_school_listed_name_id", Family.school_id, Family.listed, Family.name, Family.id)
# The people page walks a school's members in name order (its search filters the kept text).
Index("ix_membership_school_sort_name_id", Membership.school_id, Membership.sort_name, Membership.id)
# The messages list: a school's messages, newest first (also the foreign key to school).
Index("ix_mail_message_school_created", MailMessage.school_id, MailMessage.created_at)
# The calendar's month view and upcoming list: a school's events ending after a moment, their
# start read from the index too (the month's other bound), soonest first after a small sort.
# (It replaced an index on starts_at alone: every school's events in one order, walked from
# the host's first event to find one school's next ones.)
Index("ix_event_school_ends_starts", Event.school_id, Event.ends_at, Event.starts_at)
# A member's home feed: the school's announcements to everyone, and those of their classes
# (class_id IS NULL, or one of a few ids), newest first, a page at a time.
Index(
    "ix_mail_message_school_class_created",
    MailMessage.school_id,
    MailMessage.class_id,
    MailMessage.created_at,
    MailMessage.id,
)

# The next events (the home page, the calendar): one school's events in (starts_at, id) order, the
# query's own, so a page stops after its rows (the global starts_at index walked every school's).
Index("ix_event_school_starts_id", Event.school_id, Event.starts_at, Event.id)

# -- foreign keys that are filtered on, or that a deletion cascades or nulls through -----------

FOREIGN_KEYS = (
    AuditEntry.actor_id,
    ClassHelper.membership_id,
    DataExport.requested_by_id,
    EnrollmentChange.from_class_id,
    EnrollmentChange.to_class_id,
    EnrollmentChange.requested_by_id,
    EnrollmentChange.decided_by_id,
    Event.created_by_id,
    ImportRun.created_by_id,
    MailDelivery.user_id,
    MailMessage.class_id,
    MailMessage.created_by_id,
    MailMessage.cancelled_by_id,
    Membership.decided_by_id,
    PolicyVersion.created_by_id,
    PolicyVersion.email_message_id,
    SupportGrant.granted_by_id,
    SupportGrant.revoked_by_id,
    SupportGrant.support_request_id,
    SupportRequest.school_id,
    SupportRequest.deletion_marked_by_id,
    SupportRequest.deletion_confirmed_by_id,
    SuppressionLift.requested_by_id,
)
for _column in FOREIGN_KEYS:
    Index(f"ix_{_column.table.name}_{_column.key}", _column)
