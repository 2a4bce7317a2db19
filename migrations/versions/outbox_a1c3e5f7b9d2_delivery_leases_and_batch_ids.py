"""delivery leases, batch ids, the first attempt and the message's send run

Revision ID: a1c3e5f7b9d2
Revises: 7b999a1a0196
Create Date: 2026-12-14 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

import app.models.base


# revision identifiers, used by Alembic.
revision = 'a1c3e5f7b9d2'
down_revision = '7b999a1a0196'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('mail_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sending_until', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_mail_message_sending_until'), ['sending_until'], unique=False)

    with op.batch_alter_table('mail_delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_attempt_at', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('lease_until', app.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('batch_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('batch_at', app.models.base.UTCDateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('mail_delivery', schema=None) as batch_op:
        batch_op.drop_column('batch_at')
        batch_op.drop_column('batch_id')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('claimed_by')
        batch_op.drop_column('first_attempt_at')

    with op.batch_alter_table('mail_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mail_message_sending_until'))
        batch_op.drop_column('sending_until')
