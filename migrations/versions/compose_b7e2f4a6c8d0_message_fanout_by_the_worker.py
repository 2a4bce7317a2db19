"""compose: a large audience's deliveries are written by the worker, chunk by chunk

Revision ID: b7e2f4a6c8d0
Revises: 5e7a0c3d2b91
Create Date: 2026-12-04 02:10:00

Composing to 300,000 people wrote every delivery inside the request and passed gunicorn's
timeout. The message now records where the worker's fan-out stands (the last membership id
written, NULL once every delivery exists) and how many people it was written to; and the
compose form's one-off key, so a double-submitted form writes one message.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "b7e2f4a6c8d0"
down_revision = "5e7a0c3d2b91"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("mail_message") as batch_op:
        batch_op.add_column(sa.Column("fanout_after", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("audience_size", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("submission_key", sa.String(length=32), nullable=True))
        batch_op.create_unique_constraint(
            "uq_mail_message_school_id", ["school_id", "submission_key"]
        )
    op.create_index(
        "ix_mail_message_preparing",
        "mail_message",
        ["fanout_after"],
        postgresql_where=sa.text("fanout_after IS NOT NULL"),
        sqlite_where=sa.text("fanout_after IS NOT NULL"),
    )


def downgrade():
    op.drop_index("ix_mail_message_preparing", table_name="mail_message")
    with op.batch_alter_table("mail_message") as batch_op:
        batch_op.drop_constraint("uq_mail_message_school_id", type_="unique")
        batch_op.drop_column("submission_key")
        batch_op.drop_column("audience_size")
        batch_op.drop_column("fanout_after")
