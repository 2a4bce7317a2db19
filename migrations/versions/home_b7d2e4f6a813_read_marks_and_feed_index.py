"""Read marks of announcements opened in the app, and the indexes the home page walks.

Revision ID: b7d2e4f6a813
Revises: 3c8e5a7f1b92
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "b7d2e4f6a813"
down_revision = "3c8e5a7f1b92"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "message_read",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("membership_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("read_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["membership_id"],
            ["membership.id"],
            name=op.f("fk_message_read_membership_id_membership"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["mail_message.id"],
            name=op.f("fk_message_read_message_id_mail_message"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_message_read_school_id_school"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_read")),
        sa.UniqueConstraint(
            "school_id", "membership_id", "message_id", name=op.f("uq_message_read_school_id")
        ),
    )
    op.create_index(op.f("ix_message_read_membership_id"), "message_read", ["membership_id"], unique=False)
    op.create_index(op.f("ix_message_read_message_id"), "message_read", ["message_id"], unique=False)
    op.create_index(op.f("ix_message_read_school_id"), "message_read", ["school_id"], unique=False)
    op.create_index(
        "ix_mail_message_school_class_created",
        "mail_message",
        ["school_id", "class_id", "created_at", "id"],
        unique=False,
    )
    op.create_index("ix_event_school_starts_id", "event", ["school_id", "starts_at", "id"], unique=False)


def downgrade():
    op.drop_index("ix_event_school_starts_id", table_name="event")
    op.drop_index("ix_mail_message_school_class_created", table_name="mail_message")
    op.drop_index(op.f("ix_message_read_school_id"), table_name="message_read")
    op.drop_index(op.f("ix_message_read_message_id"), table_name="message_read")
    op.drop_index(op.f("ix_message_read_membership_id"), table_name="message_read")
    op.drop_table("message_read")
