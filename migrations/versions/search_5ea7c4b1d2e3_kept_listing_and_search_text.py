"""search: kept listed-ness and search text on family and membership, and their indexes

Revision ID: 5ea7c4b1d2e3
Revises: b7e2f4a6c8d0
Create Date: 2026-12-04 02:00:00

The directory's live search and the people page ran a substring LIKE over every listed
guardian, account and child of the school (joined to the host's accounts) on each keystroke,
so their cost grew with the school and the host. Family now keeps ``listed`` and
``search_text``, membership ``search_text`` and ``sort_name`` (app/models/listings.py keeps
them on every write); the pages walk the new indexes in name order and stop at the page.
Existing rows are backfilled here, in SQL, with the same expressions as app/models/listings.py.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "5ea7c4b1d2e3"
down_revision = "b7e2f4a6c8d0"
branch_labels = None
depends_on = None

_LISTED = (
    "FROM guardian g JOIN membership m ON m.id = g.membership_id "
    'JOIN "user" u ON u.id = m.user_id '
    "WHERE g.family_id = family.id AND m.status = 'approved' AND u.active = :yes "
    "AND m.school_id = g.school_id"
)


def _backfill_family(aggregate: str) -> str:
    """PostgreSQL orders inside the aggregate; SQLite (no ORDER BY there before 3.44) concatenates
    an ordered derived table, as app/models/listings.py does at run time."""
    agg = "string_agg(n, :sep ORDER BY k)" if aggregate == "string_agg" else "group_concat(n, :sep)"
    guardians = f"(SELECT {agg} FROM (SELECT lower(u.name) AS n, g.id AS k {_LISTED} ORDER BY g.id) x)"
    children = (
        f"(SELECT {agg} FROM (SELECT lower(s.first_name) || :sep || lower(s.last_name) AS n, s.id AS k "
        "FROM student s WHERE s.family_id = family.id ORDER BY s.id) y)"
    )
    return (
        f"UPDATE family SET listed = EXISTS (SELECT 1 {_LISTED}), "
        f"search_text = lower(family.name) || :sep || coalesce({guardians}, '') || :sep || coalesce({children}, '')"
    )


_BACKFILL_MEMBERSHIP = (
    "UPDATE membership SET "
    'search_text = (SELECT lower(u.name) || :sep || lower(u.email) FROM "user" u WHERE u.id = membership.user_id), '
    'sort_name = (SELECT u.name FROM "user" u WHERE u.id = membership.user_id)'
)


def upgrade():
    op.add_column("family", sa.Column("listed", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("family", sa.Column("search_text", sa.Text(), server_default="", nullable=False))
    op.add_column("membership", sa.Column("search_text", sa.Text(), server_default="", nullable=False))
    op.add_column("membership", sa.Column("sort_name", sa.String(length=120), server_default="", nullable=False))
    bind = op.get_bind()
    aggregate = "string_agg" if bind.dialect.name == "postgresql" else "group_concat"
    params = {"sep": "\n", "yes": True}
    bind.execute(sa.text(_BACKFILL_MEMBERSHIP), params)
    bind.execute(sa.text(_backfill_family(aggregate)), params)
    op.create_index("ix_family_school_listed_name_id", "family", ["school_id", "listed", "name", "id"])
    op.create_index("ix_membership_school_sort_name_id", "membership", ["school_id", "sort_name", "id"])


def downgrade():
    op.drop_index("ix_membership_school_sort_name_id", table_name="membership")
    op.drop_index("ix_family_school_listed_name_id", table_name="family")
    with op.batch_alter_table("membership") as batch:
        batch.drop_column("sort_name")
        batch.drop_column("search_text")
    with op.batch_alter_table("family") as batch:
        batch.drop_column("search_text")
        batch.drop_column("listed")
