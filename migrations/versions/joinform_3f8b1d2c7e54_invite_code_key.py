"""invite code key: school invitation codes are looked up without case, spaces or dashes

Revision ID: 3f8b1d2c7e54
Revises: 9a4e2c6b8d10
Create Date: 2026-12-06 21:20:00

A parent who types ``maple 2026`` or ``maple2026`` for ``MAPLE-2026`` was refused. Each school now
keeps the code's compared form (school.invite_code_key, see app.codes.code_key), unique, and
the join form looks codes up by it. Existing codes get theirs here.
"""

import unicodedata

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "3f8b1d2c7e54"
down_revision = "9a4e2c6b8d10"
branch_labels = None
depends_on = None


def _key(code):
    """app.codes.code_key as it was when this migration was written (frozen here)."""
    text = unicodedata.normalize("NFKC", code or "")
    kept = (
        ch
        for ch in text
        if not ch.isspace()
        and ch not in {"\u2212", "\u00ad", "_", ".", "/"}
        and unicodedata.category(ch) not in ("Pd", "Cf")
    )
    return "".join(kept).upper() or None


def upgrade():
    with op.batch_alter_table("school", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invite_code_key", sa.String(length=40), nullable=True))

    conn = op.get_bind()
    seen = set()
    rows = conn.execute(sa.text("SELECT id, invite_code FROM school ORDER BY id")).all()
    for school_id, code in rows:
        key = _key(code)
        if key in seen:
            # Two codes that differ only in dashes or case: the older school keeps its code's key;
            # the other's code stops working until an admin makes a new one (never silently shared).
            print(f"school {school_id}: its invitation code matches an older school's; make a new one")
            key = None
        if key is not None:
            seen.add(key)
            conn.execute(
                sa.text("UPDATE school SET invite_code_key = :key WHERE id = :id"), {"key": key, "id": school_id}
            )

    with op.batch_alter_table("school", schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f("uq_school_invite_code_key"), ["invite_code_key"])


def downgrade():
    with op.batch_alter_table("school", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_school_invite_code_key"), type_="unique")
        batch_op.drop_column("invite_code_key")
