"""Approvers choose how they hear of join requests: each by email, a daily digest, or off.

Revision ID: 3b8f1d6e2c47
Revises: 3b8f1d6c2e47
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "3b8f1d6e2c47"
down_revision = "3b8f1d6c2e47"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("membership", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "join_notices",
                sa.Enum("immediate", "digest", "off", name="joinnotices", native_enum=False, length=20),
                server_default="immediate",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column("join_digest_sent_at", app.models.base.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade():
    with op.batch_alter_table("membership", schema=None) as batch_op:
        batch_op.drop_column("join_digest_sent_at")
        batch_op.drop_column("join_notices")
