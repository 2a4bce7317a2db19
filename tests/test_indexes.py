"""District scale: every foreign key has an index, and the pages' queries never scan the host.

A district puts all its schools on one host. A page of one school must find its rows through
an index (led by ``school_id``, or by the key of rows already found), never by reading every
school's rows; a deleted account must find the rows that point at it through an index too.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint, event, text

from app import tenancy
from app.extensions import db
from app.models import indexes
from app.reference_data import PASSWORD, generate
from tests.conftest import sign_in


def _leading_columns(table) -> list[tuple[str, ...]]:
    """The column lists of every index, unique constraint and primary key of a table."""
    led = [tuple(column.name for column in index.columns) for index in table.indexes]
    led += [
        tuple(column.name for column in constraint.columns)
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint)
    ]
    return led


def test_every_foreign_key_has_an_index_led_by_its_columns():
    missing = []
    for table in db.metadata.sorted_tables:
        led = _leading_columns(table)
        for key in table.foreign_key_constraints:
            columns = tuple(column.name for column in key.columns)
            if not any(index[: len(columns)] == columns for index in led):
                missing.append(f"{table.name}.{','.join(columns)} -> {key.referred_table.name}")
    assert missing == []


# What the pages filter and order school rows by (the model-level half of the check): each of
# these must be the leading columns of an index. tests below run the pages' real queries.
PAGE_ACCESS_PATHS = {
    ("audit_entry", ("school_id", "id")): "the audit log, newest first by id (keyset pages)",
    ("audit_entry", ("school_id", "action", "created_at")): "sign-ins per day, the action filter",
    ("membership", ("school_id", "status", "created_at")): "the approval queue, oldest first",
    ("family", ("school_id", "name", "id")): "the directory in name order, a page at a time",
    ("mail_message", ("school_id", "created_at")): "the messages list, newest first",
    ("mail_message", ("school_id", "class_id", "created_at", "id")): "a member's home feed, newest first",
    ("message_read", ("school_id", "membership_id", "message_id")): "the feed's unread marks",
    ("event", ("school_id", "starts_at", "id")): "the next events, on the home page and the calendar",
    ("enrollment_change", ("school_id", "status", "created_at", "id")): "class changes, paged",
    ("data_export_chunk", ("school_id", "export_id", "seq")): "an export's download, a piece at a time",
    ("event", ("school_id", "ends_at", "starts_at")): "the calendar's month and upcoming list",
}


@pytest.mark.parametrize(("table", "columns"), list(PAGE_ACCESS_PATHS))
def test_the_pages_access_paths_have_school_led_indexes(table, columns):
    led = _leading_columns(db.metadata.tables[table])
    assert any(index[: len(columns)] == columns for index in led), PAGE_ACCESS_PATHS[(table, columns)]


def test_every_school_table_has_an_index_led_by_school_id():
    for name in tenancy.scoped_tables():
        led = _leading_columns(db.metadata.tables[name])
        assert any(index[0] == "school_id" for index in led), name


def test_the_declared_foreign_key_indexes_are_on_foreign_keys():
    """app/models/indexes.py lists foreign keys only: a typo would index a plain column."""
    for column in indexes.FOREIGN_KEYS:
        assert column.foreign_keys, f"{column.table.name}.{column.key}"


# -- the pages' own queries, explained by PostgreSQL --------------------------------------------

PAGES = (
    ("parent", "/directory/", {}),
    ("parent", "/directory/?q=an", {"HX-Request": "true", "HX-Target": "directory-results"}),
    ("parent", "/classes/{first_class_id}", {}),
    ("admin", "/members/pending", {}),
    ("admin", "/settings/people?q=an", {}),
    ("admin", "/settings/audit", {}),
    ("admin", "/messages", {}),
    ("parent", "/", {}),
    ("parent", "/?q=message", {"HX-Request": "true", "HX-Target": "feed"}),
    ("parent", "/news/{school_message_id}", {}),
    ("admin", "/", {}),
    ("admin", "/directory/export.csv", {}),
    ("parent", "/calendar/", {}),
    ("parent", "/calendar/month", {}),
    ("admin", "/calendar/month?month=2026-03", {}),
)
SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Index Scan"}


def _host_tables() -> frozenset[str]:
    """Tables whose rows grow with the host: every school's data, the accounts, the deliveries."""
    return tenancy.scoped_tables() | {"user", "mail_delivery"}


def _full_scans(plan: dict, found: list[str]) -> list[str]:
    """Scans of host-sized tables that read the whole table or walk a whole index."""
    kind = plan.get("Node Type")
    if plan.get("Relation Name") in _host_tables() or kind == "Bitmap Index Scan":
        if kind == "Seq Scan":
            found.append(f"Seq Scan on {plan['Relation Name']}")
        elif kind in SCANS and "Index Cond" not in plan:
            found.append(f"{kind} using {plan['Index Name']} with no index condition")
    for child in plan.get("Plans", []):
        _full_scans(child, found)
    return found


def _statements_of(client, path: str, headers: dict) -> list[tuple[str, object]]:
    """The SELECTs a page runs, with their parameters."""
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert client.get(path, headers=headers).status_code == 200, path
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    return seen


def _add_events(school_id: int, count: int) -> None:
    """A school's calendar over two years around 2026 (whole-school events, a few hours each)."""
    from datetime import UTC, datetime, timedelta

    from app.models.calendar import Event

    start = datetime(2025, 3, 1, 15, tzinfo=UTC)
    with tenancy.bound(school_id):
        db.session.add_all(
            Event(
                title=f"Event {i}",
                starts_at=start + timedelta(days=12 * i),
                ends_at=start + timedelta(days=12 * i, hours=2),
            )
            for i in range(count)
        )
        db.session.flush()


@pytest.mark.postgres
def test_every_query_of_the_pages_is_served_by_an_index(app):
    """EXPLAIN every SELECT the main pages run, with sequential scans and sorts priced out:
    PostgreSQL then takes an index wherever one serves the query, so a Seq Scan, or an index
    walked end to end (the audit log's primary key across every school), means none does."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("EXPLAIN needs PostgreSQL: run with TEST_DATABASE_URL")
    from bench.district import add_history, clone_school

    # A host of 20 schools (copies of one), so the whole host is much bigger than one school.
    ours = generate(families=40, classes=4, students=60)
    for school_id in [ours.school_id, *clone_school(ours.school_id, 19)]:
        add_history(school_id, 40)
        _add_events(school_id, 60)
    db.session.commit()
    clients = {"parent": app.test_client(), "admin": app.test_client()}
    assert sign_in(clients["parent"], ours.parent_email, PASSWORD).status_code in (302, 303)
    assert sign_in(clients["admin"], ours.admin_email, PASSWORD).status_code in (302, 303)
    school_message_id = db.session.scalar(
        text(
            "SELECT min(id) FROM mail_message WHERE school_id = :school AND category = 'school_announcements'"
        ),
        {"school": ours.school_id},
    )
    problems = []
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        # Joins as nested loops, so each inner side must be found through an index on its key.
        for method in ("seqscan", "hashjoin", "mergejoin"):
            conn.execute(text(f"SET enable_{method} = off"))
        raw = conn.connection.driver_connection
        for who, path, headers in PAGES:
            path = path.format(first_class_id=ours.first_class_id, school_message_id=school_message_id)
            for statement, parameters in _statements_of(clients[who], path, headers):
                if "pg_catalog" in statement or "web_session" in statement:
                    continue  # the session store reads by its primary key
                explained = raw.execute("EXPLAIN (FORMAT JSON) " + statement, parameters).fetchone()[0]
                plan = (
                    explained[0]["Plan"]
                    if not isinstance(explained, str)
                    else json.loads(explained)[0]["Plan"]
                )
                problems += [f"{path}: {scan}\n  {statement[:300]}" for scan in _full_scans(plan, [])]
    assert problems == [], "\n".join(problems)
