"""The school's identity: a brand colour and a crest, the crest's image kept in the database.

Revision ID: 3b8f1d6c2e47
Revises: 3f1a2b4c5d6e

A Heroku-style host forgets its disk at each restart, so the crest's (re-encoded) bytes live in
school_crest, one row per school; the school row keeps the crest's checksum and the colour, so
pages link to both without reading the image.
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "3b8f1d6c2e47"
down_revision = "3f1a2b4c5d6e"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "school_crest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("updated_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_school_crest_school_id_school"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_school_crest")),
        sa.UniqueConstraint("school_id", name=op.f("uq_school_crest_school_id")),
    )
    op.create_index(op.f("ix_school_crest_school_id"), "school_crest", ["school_id"], unique=False)
    with op.batch_alter_table("school", schema=None) as batch_op:
        batch_op.add_column(sa.Column("brand_colour", sa.String(length=7), nullable=True))
        batch_op.add_column(sa.Column("crest_checksum", sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table("school", schema=None) as batch_op:
        batch_op.drop_column("crest_checksum")
        batch_op.drop_column("brand_colour")
    op.drop_index(op.f("ix_school_crest_school_id"), table_name="school_crest")
    op.drop_table("school_crest")
