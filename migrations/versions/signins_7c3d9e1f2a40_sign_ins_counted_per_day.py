"""Sign-ins counted per day of the school's clock, kept at each sign-in (the audit log's box).

Revision ID: 7c3d9e1f2a40
Revises: 5ea7c4b1d2e3
"""

from collections import Counter
from datetime import UTC
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "7c3d9e1f2a40"
down_revision = "5ea7c4b1d2e3"
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        "sign_in_count",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_sign_in_count_school_id_school"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_count")),
        sa.UniqueConstraint("school_id", "day", name=op.f("uq_sign_in_count_school_id")),
    )
    op.create_index(op.f("ix_sign_in_count_school_id"), "sign_in_count", ["school_id"], unique=False)
    _backfill(op.get_bind(), table)


def _backfill(bind, table) -> None:
    """Count the sign-ins already in the log, school by school, on each school's clock (streamed)."""
    schools = bind.execute(sa.text("SELECT id, timezone FROM school")).all()
    entries = sa.text(
        "SELECT created_at FROM audit_entry WHERE school_id = :school AND action = 'auth.signed_in'"
    ).columns(sa.column("created_at", sa.DateTime(timezone=True)))  # SQLite hands back text otherwise
    for school_id, timezone in schools:
        zone = ZoneInfo(timezone or "UTC")
        days: Counter = Counter()
        for (created_at,) in bind.execution_options(yield_per=5000).execute(entries, {"school": school_id}):
            moment = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
            days[moment.astimezone(zone).date()] += 1
        if days:
            rows = [{"school_id": school_id, "day": d, "count": n} for d, n in days.items()]
            bind.execute(table.insert(), rows)


def downgrade():
    op.drop_index(op.f("ix_sign_in_count_school_id"), table_name="sign_in_count")
    op.drop_table("sign_in_count")
