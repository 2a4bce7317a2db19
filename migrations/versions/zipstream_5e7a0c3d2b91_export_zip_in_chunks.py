"""zipstream: a school export's ZIP is stored in ~1 MB pieces and streamed; class changes paged

Revision ID: 5e7a0c3d2b91
Revises: d15c7a1e5ca1
Create Date: 2026-12-04 02:20:00

The worker wrote a school's whole ZIP into data_export.content and the download read it back
whole, so both processes held the entire file. The pieces live in data_export_chunk; an export
built before this migration keeps its file as one piece (seq 0), so its link still works until
it expires. Downgrading joins the pieces back into content.

The class changes beside the approval queue are now paged on (created_at, id); their index
takes id as its last column so it serves that order whole.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "5e7a0c3d2b91"
down_revision = "d15c7a1e5ca1"
branch_labels = None
depends_on = None


def upgrade():
    # The class changes beside the approval queue are paged on (created_at, id): the index gives
    # the whole order, so a page stops after its rows.
    op.drop_index("ix_enrollment_change_school_status_created", table_name="enrollment_change")
    op.create_index(
        "ix_enrollment_change_school_status_created_id",
        "enrollment_change",
        ["school_id", "status", "created_at", "id"],
    )
    op.create_table(
        "data_export_chunk",
        sa.Column("export_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"],
            ["data_export.id"],
            name=op.f("fk_data_export_chunk_export_id_data_export"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["school_id"],
            ["school.id"],
            name=op.f("fk_data_export_chunk_school_id_school"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("export_id", "seq", name=op.f("pk_data_export_chunk")),
    )
    with op.batch_alter_table("data_export_chunk", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_data_export_chunk_school_id"), ["school_id"], unique=False)
        batch_op.create_index(
            "ix_data_export_chunk_school_export_seq", ["school_id", "export_id", "seq"], unique=False
        )
    op.execute(
        "INSERT INTO data_export_chunk (export_id, seq, data, school_id) "
        "SELECT id, 0, content, school_id FROM data_export WHERE content IS NOT NULL"
    )
    with op.batch_alter_table("data_export", schema=None) as batch_op:
        batch_op.drop_column("content")


def downgrade():
    with op.batch_alter_table("data_export", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content", sa.LargeBinary(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE data_export SET content = joined.data FROM ("
            " SELECT export_id, string_agg(data, ''::bytea ORDER BY seq) AS data"
            " FROM data_export_chunk GROUP BY export_id) AS joined"
            " WHERE joined.export_id = data_export.id"
        )
    else:  # SQLite has no bytes aggregate in order: one-piece files come back, others are dropped
        op.execute(
            "UPDATE data_export SET content = (SELECT data FROM data_export_chunk"
            " WHERE export_id = data_export.id AND seq = 0)"
            " WHERE (SELECT count(*) FROM data_export_chunk WHERE export_id = data_export.id) = 1"
        )
    with op.batch_alter_table("data_export_chunk", schema=None) as batch_op:
        batch_op.drop_index("ix_data_export_chunk_school_export_seq")
        batch_op.drop_index(batch_op.f("ix_data_export_chunk_school_id"))
    op.drop_table("data_export_chunk")
    op.drop_index("ix_enrollment_change_school_status_created_id", table_name="enrollment_change")
    op.create_index(
        "ix_enrollment_change_school_status_created",
        "enrollment_change",
        ["school_id", "status", "created_at"],
    )
