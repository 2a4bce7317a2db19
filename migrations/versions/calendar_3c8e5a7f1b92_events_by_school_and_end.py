"""calendar: events found by school and end time (the month view and the upcoming list)

Revision ID: 3c8e5a7f1b92
Revises: 3f8b1d2c7e54
Create Date: 2026-12-06 21:30:00

The month view reads a school's events that overlap the weeks it shows; the upcoming list
reads those ending after today. Both are served by (school_id, ends_at, starts_at). The old
ix_event_starts_at held every school's events in one order: PostgreSQL walked it from the
host's first event to find one school's next ones, so it goes.
"""

from alembic import op

revision = "3c8e5a7f1b92"
down_revision = "3f8b1d2c7e54"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_event_school_ends_starts", "event", ["school_id", "ends_at", "starts_at"], unique=False)
    op.drop_index("ix_event_starts_at", table_name="event")


def downgrade():
    op.create_index("ix_event_starts_at", "event", ["starts_at"], unique=False)
    op.drop_index("ix_event_school_ends_starts", table_name="event")
