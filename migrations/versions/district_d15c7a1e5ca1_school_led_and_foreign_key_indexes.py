"""district scale: school_id-led indexes for the pages, an index on every foreign key, kept counts

Revision ID: d15c7a1e5ca1
Revises: 365807ded0aa
Create Date: 2026-12-03 17:45:00

The audit log walked the primary key across every school to find one school's newest entries,
the messages list had no index on mail_message.school_id, and 24 foreign keys (mail_delivery.user_id
among them) had none, so exporting one person's data or deleting an account scanned every
school's rows. The indexes are declared in app/models/indexes.py.
"""

from alembic import op
import sqlalchemy as sa

import app.models.base


# revision identifiers, used by Alembic.
revision = "d15c7a1e5ca1"
down_revision = "365807ded0aa"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_audit_entry_actor_id", "audit_entry", ["actor_id"]),
    ("ix_audit_entry_school_action_created", "audit_entry", ["school_id", "action", "created_at"]),
    ("ix_audit_entry_school_id_id", "audit_entry", ["school_id", "id"]),
    ("ix_class_helper_membership_id", "class_helper", ["membership_id"]),
    ("ix_data_export_requested_by_id", "data_export", ["requested_by_id"]),
    ("ix_enrollment_change_decided_by_id", "enrollment_change", ["decided_by_id"]),
    ("ix_enrollment_change_from_class_id", "enrollment_change", ["from_class_id"]),
    ("ix_enrollment_change_requested_by_id", "enrollment_change", ["requested_by_id"]),
    ("ix_enrollment_change_to_class_id", "enrollment_change", ["to_class_id"]),
    ("ix_enrollment_change_school_status_created", "enrollment_change", ["school_id", "status", "created_at"]),
    ("ix_event_created_by_id", "event", ["created_by_id"]),
    ("ix_family_school_name_id", "family", ["school_id", "name", "id"]),
    ("ix_import_run_created_by_id", "import_run", ["created_by_id"]),
    ("ix_mail_delivery_user_id", "mail_delivery", ["user_id"]),
    ("ix_mail_message_cancelled_by_id", "mail_message", ["cancelled_by_id"]),
    ("ix_mail_message_class_id", "mail_message", ["class_id"]),
    ("ix_mail_message_created_by_id", "mail_message", ["created_by_id"]),
    ("ix_mail_message_school_created", "mail_message", ["school_id", "created_at"]),
    ("ix_membership_decided_by_id", "membership", ["decided_by_id"]),
    ("ix_membership_school_status_created", "membership", ["school_id", "status", "created_at"]),
    ("ix_policy_version_created_by_id", "policy_version", ["created_by_id"]),
    ("ix_policy_version_email_message_id", "policy_version", ["email_message_id"]),
    ("ix_support_grant_granted_by_id", "support_grant", ["granted_by_id"]),
    ("ix_support_grant_revoked_by_id", "support_grant", ["revoked_by_id"]),
    ("ix_support_grant_support_request_id", "support_grant", ["support_request_id"]),
    ("ix_support_request_deletion_confirmed_by_id", "support_request", ["deletion_confirmed_by_id"]),
    ("ix_support_request_deletion_marked_by_id", "support_request", ["deletion_marked_by_id"]),
    ("ix_support_request_school_id", "support_request", ["school_id"]),
    ("ix_suppression_lift_requested_by_id", "suppression_lift", ["requested_by_id"]),
]


def upgrade():
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    # The delivery counts of messages whose deliveries are all final (app/models/counts.py).
    op.create_table(
        "settled_counts",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("digest", sa.Integer(), nullable=False),
        sa.Column("counted_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["mail_message.id"],
            name=op.f("fk_settled_counts_message_id_mail_message"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_settled_counts")),
    )


def downgrade():
    op.drop_table("settled_counts")
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
