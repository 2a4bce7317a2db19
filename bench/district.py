"""District scale: what each per-school page costs in a big school and in a host of 50 schools.

    python -m bench.district [--requests 12] [--rounds 3] [--redis-url redis://127.0.0.1:6379/12]
        [--server postgresql+psycopg://postgres@127.0.0.1:5432] [--schools 50] [--big 20000]

Builds three throwaway PostgreSQL databases (each DROPPED and rebuilt):

- ``bench_district_2k``: one school of 2,000 families (``app/reference_data.py``, as
  ``flask reference-data``);
- ``bench_district_20k``: one school of 20,000 families (ten times everything);
- ``bench_district_50x2k``: 50 schools of 2,000 families in one database;

and gives every school, with INSERT ... SELECT in the database, what a year of use leaves:
pending requests (newcomers with the children they named), audit history and sign-ins spread
over a year, and sent messages with their deliveries, all in proportion to its size.

Then it serves each database in this process (the app through Flask's test client, one
request at a time) and measures every surface of the issue's table, in interleaved rounds so
a busy machine weighs on all three alike: CPU per request of this process and of the
PostgreSQL backends serving it (utime + stime from ``/proc/<pid>/stat``, so the figure holds
on a busy machine), and SQL statements per request. It prints the two growth ratios (20k/2k
and 50 schools/1, the measured school being the FIRST built of the 50, whose rows have the
lowest ids), each against its target. Plus the CSV export's memory growth (peak RSS during the
request) and time to first byte, and composing a school-wide message in the 20k school (~30,000
people) and in that school grown ten times (~300,000, its people cloned into it, last): the
request, then the worker's fan-out of the deliveries run here, each against a bare
INSERT ... SELECT of the same delivery rows.

Jobs go to Redis (``--redis-url``, FLUSHED at the start and the end) and are never run: the
compose request costs what it costs in production, where the worker sends. Only 127.0.0.1.
Writes bench/results/district.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "district.json"
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
TICK = os.sysconf("SC_CLK_TCK")
PAGED_TARGET = 1.5  # a paged surface at 20,000 families costs at most this times 2,000
HOST_TARGET = 1.2  # any surface in a 50-school host costs at most this times a lone school
EXPORT_MEMORY_TARGET_MB = 20.0  # the CSV export's peak memory grows less than this from 2k to 20k
COMPOSE_TARGET = 1.5  # composing costs at most this times the bare INSERT ... SELECT
COMPOSE_SECONDS = 1.0  # and under this for the 20k school's ~33,000 recipients

PARTIAL = {"HX-Request": "true", "HX-Target": "directory-results"}
PEOPLE_PARTIAL = {"HX-Request": "true", "HX-Target": "people-results"}
FEED_PARTIAL = {"HX-Request": "true", "HX-Target": "feed"}


@dataclass(frozen=True)
class Surface:
    """One page or partial of the issue's table, as whom, and whether it is paged."""

    name: str
    path: str
    who: str  # "parent" or "admin"
    paged: bool
    headers: dict = field(default_factory=dict)


SURFACES = (
    Surface("directory page", "/directory/", "parent", True),
    Surface("search partial `an`", "/directory/?q=an", "parent", True, PARTIAL),
    Surface("class roster", "/classes/{first_class_id}", "parent", True),
    Surface("approval queue", "/members/pending", "admin", True),
    Surface("settings people `q=an`", "/settings/people?q=an", "admin", True, PEOPLE_PARTIAL),
    Surface("audit log", "/settings/audit", "admin", True),
    Surface("messages list", "/messages", "admin", True),
    Surface("home (parent)", "/", "parent", True),
    Surface("home search `message`", "/?q=message", "parent", True, FEED_PARTIAL),
    Surface("home (admin, with queues)", "/", "admin", True),
    Surface("announcement reader", "/news/{school_message_id}", "parent", False),
    Surface("CSV export", "/directory/export.csv", "admin", False),
)


# -- databases ---------------------------------------------------------------------------------------


def database_urls(server: str, prefix: str = "bench_district") -> dict[str, str]:
    """The three throwaway databases on ``server`` (only 127.0.0.1: they are DROPPED)."""
    if "@127.0.0.1" not in server and "@localhost" not in server:
        raise SystemExit("bench.district drops its databases: give a PostgreSQL server on 127.0.0.1")
    return {key: f"{server.rstrip('/')}/{prefix}_{key}" for key in ("2k", "20k", "50x2k")}


def make_app(database_url: str, redis_url: str):
    """The app on one bench database: jobs to Redis (never run), mail in memory, no rate limit."""
    from app import create_app
    from config import Config, engine_options

    class BenchConfig(Config):
        ENV_NAME = "bench"

        def fallback_secret_key(self) -> str:
            return "bench-district-" + str(os.getpid())

    config = BenchConfig()
    config.SQLALCHEMY_DATABASE_URI = database_url
    options = engine_options(database_url)
    # The backends serving this process are found by this name in pg_stat_activity.
    options["connect_args"] = {"application_name": backend_name()}
    config.SQLALCHEMY_ENGINE_OPTIONS = options
    config.REDIS_URL = redis_url
    config.RATELIMIT_STORAGE_URI = "memory://"
    config.RATELIMIT_ENABLED = False
    config.MAIL_BACKEND = "memory"
    config.PUBLIC_URL = "https://district.bench.example"
    app = create_app(config)
    logging.getLogger().setLevel(logging.WARNING)  # no access line per request on the terminal
    return app


def backend_name() -> str:
    return f"bench-district-{os.getpid()}"


# -- building --------------------------------------------------------------------------------------------


@dataclass
class School:
    """One built school: the reference set, and what was added to it."""

    school_id: int
    families: int
    admin_email: str
    parent_email: str
    password: str
    first_class_id: int
    counts: dict
    school_message_id: int = 0  # a school-wide announcement, for the reader view


def build(database_url: str, redis_url: str, schools: int, families: int) -> tuple[list[School], float]:
    """Drop and rebuild one database with ``schools`` schools of ``families`` families each.

    The first school is built by ``app/reference_data.py``; the others are copies of it made by
    INSERT ... SELECT (``clone_school``), which take a second where the builder takes ten.
    Foreign-key triggers are off while building (``session_replication_role``): every row is
    made from rows that exist, and this database is thrown away.
    """
    from sqlalchemy import text

    from app.extensions import db
    from app.reference_data import generate
    from bench.mail_fanout import drop_postgres_database, ensure_postgres_database

    drop_postgres_database(database_url)
    ensure_postgres_database(database_url)
    app = make_app(database_url, redis_url)
    started = time.perf_counter()
    with app.app_context():
        db.create_all()
        db.session.execute(text("SET session_replication_role = replica"))
        ref = generate(
            families=families,
            classes=max(1, families * 60 // 2000),
            students=families * 3 // 2,
            name="District School 1",
        )
        school_ids = [ref.school_id, *clone_school(ref.school_id, schools - 1)]
        history = [add_history(school_id, families) for school_id in school_ids]
        db.session.execute(text("SET session_replication_role = DEFAULT"))
        school_message_id = db.session.scalar(
            text(
                "SELECT min(id) FROM mail_message WHERE school_id = :school"
                " AND category = 'school_announcements'"
            ),
            {"school": ref.school_id},
        )
        db.session.commit()
        with db.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
        db.engine.dispose()
    first = School(
        ref.school_id,
        families,
        ref.admin_email,
        ref.parent_email,
        ref.password,
        ref.first_class_id,
        {**ref.counts, **history[0]},
        school_message_id,
    )
    return [first] * len(school_ids), time.perf_counter() - started


# The reference set's tables, parents first; a copy of a school copies its rows in each.
CLONED = (
    "school",
    "user",
    "membership",
    "school_class",
    "family",
    "guardian",
    "student",
    "enrollment",
    "class_helper",
)


def clone_school(source_id: int, copies: int) -> list[int]:
    """``copies`` new schools, each a copy of ``source_id`` (people included), in one
    INSERT ... SELECT per table: copy k's ids are the source's plus k times the table's span,
    foreign keys into copied tables move with them, emails and codes get a k prefix."""
    from sqlalchemy import text

    from app.extensions import db

    if copies < 1:
        return []
    # Every name put into SQL here is one of CLONED's or the models' own: nothing comes from outside.
    span = {name: db.session.scalar(text(f'SELECT max(id) FROM "{name}"')) for name in CLONED}  # noqa: S608
    special = {
        ("user", "email"): "'c' || k || '.' || t.email",
        ("user", "mail_key"): "md5(random()::text || t.id || '.' || k)",
        ("school", "name"): "'District School ' || (k + 1)",
        ("school", "slug"): "t.slug || '-' || k",
        ("school", "invite_code"): "t.invite_code || '-' || k",
        # The code as joining reads it (app/codes.py: no dashes, capitals), unique like the code.
        ("school", "invite_code_key"): "t.invite_code_key || k",
        # The kept search text (app/models/listings.py) holds the email, which a copy prefixes.
        ("membership", "search_text"): (
            "(SELECT lower(u.name) || chr(10) || lower('c' || k || '.' || u.email) "
            'FROM "user" u WHERE u.id = t.user_id)'
        ),
    }
    for name in CLONED:
        if name == "school":
            where = "t.id = :source"
        elif name == "user":
            where = "t.id IN (SELECT user_id FROM membership WHERE school_id = :source)"
        else:
            where = "t.school_id = :source"
        _copy_rows(name, special, span, where, {"source": source_id, "copies": copies})
    return [source_id + k * span["school"] for k in range(1, copies + 1)]


FIRST_NAMES = ("Ana", "Dana", "Ben", "Hana", "Ivo", "Jan", "Kai", "Lia", "Omar", "Rosa", "Tess", "Zane")
ACTIONS = (
    "member.approved",
    "member.rejected",
    "member.role_changed",
    "family.changed",
    "class.changed",
    "event.created",
    "settings.changed",
    "export.directory",
)


def _refresh_newcomers(school_id: int) -> None:
    """The kept search columns of the newcomers' families and memberships (app/models/listings.py):
    INSERT ... SELECT is a write no flush sees."""
    from sqlalchemy import text

    from app.extensions import db
    from app.models import listings

    connection = db.session.connection()
    params = {"school": school_id}
    families = "SELECT id FROM family WHERE school_id = :school AND name LIKE 'Newcomer family %'"
    members = "SELECT id FROM membership WHERE school_id = :school AND status = 'pending'"
    listings.refresh_families(connection, connection.execute(text(families), params).scalars().all())
    listings.refresh_member_rows(connection, connection.execute(text(members), params).scalars().all())


def add_history(school_id: int, families: int) -> dict[str, int]:
    """A year of use in proportion to the school's size, written by INSERT ... SELECT.

    Per 2,000 families: 100 pending requests (each with a family and a child in a class), 3,000
    audit entries and 12,000 sign-ins spread over 365 days (ids in time order), 120 messages (4
    to the whole school, the rest to about 1% of it) with a delivery per recipient, half of them
    read in the app (read marks).
    """
    from sqlalchemy import text

    from app.extensions import db

    scale = families / 2000
    params: dict[str, Any] = {
        "school": school_id,
        "pending": int(100 * scale),
        "actions": int(3_000 * scale),
        "sign_ins": int(12_000 * scale),
        "messages": 120,
        "names": list(FIRST_NAMES),
        "action_names": list(ACTIONS),
    }
    run = lambda sql: db.session.execute(text(sql), params)  # noqa: E731 - one statement each
    run(
        """
        WITH n AS (SELECT g FROM generate_series(1, :pending) g),
        u AS (
          INSERT INTO "user" (email, name, password_hash, active, created_at, password_changed_at, mail_key)
          SELECT 'newcomer' || g || '.' || :school || '@district.bench.example',
                 (CAST(:names AS text[]))[1 + g % cardinality(CAST(:names AS text[]))] || ' Newcomer' || g,
                 'x', true, now(), now(), md5(random()::text || g)
          FROM n RETURNING id)
        INSERT INTO membership (school_id, user_id, role, status, created_at, email_visibility,
                                phone_visibility, address_visibility)
        SELECT :school, id, 'parent', 'pending', now() - random() * interval '30 days',
               'classes', 'classes', 'staff' FROM u
        """
    )
    run(
        """
        INSERT INTO family (school_id, name)
        SELECT :school, 'Newcomer family ' || m.id FROM membership m
        WHERE m.school_id = :school AND m.status = 'pending'
        """
    )
    run(
        """
        INSERT INTO guardian (school_id, family_id, membership_id)
        SELECT :school, f.id, substr(f.name, 17)::int FROM family f
        WHERE f.school_id = :school AND f.name LIKE 'Newcomer family %'
        """
    )
    run(
        """
        INSERT INTO student (school_id, family_id, first_name, last_name)
        SELECT :school, f.id, (CAST(:names AS text[]))[1 + f.id % cardinality(CAST(:names AS text[]))],
               'Newcomer'
        FROM family f
        WHERE f.school_id = :school AND f.name LIKE 'Newcomer family %'
        """
    )
    run(
        """
        INSERT INTO enrollment (school_id, student_id, class_id)
        SELECT :school, s.id, c.ids[1 + s.id % cardinality(c.ids)]
        FROM student s,
             (SELECT array_agg(id ORDER BY id) AS ids FROM school_class WHERE school_id = :school) c
        WHERE s.school_id = :school AND s.last_name = 'Newcomer'
        """
    )
    _refresh_newcomers(school_id)
    # Audit entries and sign-ins, oldest first so ids follow time, by members of the school.
    run(
        """
        INSERT INTO audit_entry (school_id, created_at, actor_id, action, target, detail, by_support)
        SELECT :school, now() - (1 - g::float / t.n) * interval '365 days', a.ids[1 + g % cardinality(a.ids)],
               CASE WHEN g % 5 = 0
                    THEN (CAST(:action_names AS text[]))[1 + g % cardinality(CAST(:action_names AS text[]))]
                    ELSE 'auth.signed_in' END,
               CASE WHEN g % 5 = 0 THEN 'Target ' || g END, '{}', false
        FROM (SELECT :actions + :sign_ins AS n) t, generate_series(1, :actions + :sign_ins) g,
             (SELECT array_agg(user_id) AS ids FROM membership WHERE school_id = :school
              AND status = 'approved') a
        ORDER BY g
        """
    )
    # The sign-ins box reads kept per-day counts, added to at each sign-in in the app.
    run(
        """
        INSERT INTO sign_in_count (school_id, day, count)
        SELECT :school, date(timezone((SELECT timezone FROM school WHERE id = :school), created_at)), count(*)
        FROM audit_entry WHERE school_id = :school AND action = 'auth.signed_in'
        GROUP BY 2
        """
    )
    run(
        """
        INSERT INTO mail_message (school_id, category, template, subject, text_body, html_body, sensitive,
                                  created_by_id, created_at, audience_label, class_id, source_markdown)
        SELECT :school,
               CASE WHEN g % 30 = 0 THEN 'school_announcements' ELSE 'class_announcements' END,
               'announcement', 'Message ' || g, 'Text ' || g, '<p>Text ' || g || '</p>', false,
               (SELECT min(user_id) FROM membership WHERE school_id = :school AND role = 'superadmin'),
               now() - (1 - g::float / :messages) * interval '365 days', 'Everyone',
               CASE WHEN g % 30 <> 0 THEN c.ids[1 + g % cardinality(c.ids)] END, 'Text ' || g
        FROM generate_series(1, :messages) g,
             (SELECT array_agg(id ORDER BY id) AS ids FROM school_class WHERE school_id = :school) c
        ORDER BY g
        """
    )
    run(
        """
        INSERT INTO mail_delivery (message_id, user_id, to_email, address_fixed, status, attempts,
                                   created_at, updated_at, sent_at)
        SELECT mm.id, u.id, u.email, false,
               CASE WHEN u.id % 50 = 0 THEN 'failed' WHEN u.id % 37 = 0 THEN 'skipped' ELSE 'sent' END,
               1, mm.created_at, mm.created_at, mm.created_at
        FROM mail_message mm
        JOIN membership m ON m.school_id = mm.school_id AND m.status = 'approved'
        JOIN "user" u ON u.id = m.user_id
        WHERE mm.school_id = :school
          AND (mm.category = 'school_announcements' OR m.id % 100 = mm.id % 100)
        """
    )
    # Half of what reached people was opened in the app (the home feed's read marks).
    run(
        """
        INSERT INTO message_read (school_id, membership_id, message_id, read_at)
        SELECT mm.school_id, m.id, mm.id, mm.created_at
        FROM mail_delivery d
        JOIN mail_message mm ON mm.id = d.message_id
        JOIN membership m ON m.school_id = mm.school_id AND m.user_id = d.user_id
        WHERE mm.school_id = :school AND d.id % 2 = 0
        """
    )
    scalar = lambda sql: db.session.scalar(text(sql), params)  # noqa: E731
    return {
        "pending": params["pending"],
        "audit_entries": params["actions"] + params["sign_ins"],
        "messages": params["messages"],
        "deliveries": scalar(
            "SELECT count(*) FROM mail_delivery d JOIN mail_message m ON m.id = d.message_id"
            " WHERE m.school_id = :school"
        ),
    }


# -- measuring -----------------------------------------------------------------------------------------


def cpu_ticks(pid: int | str) -> int:
    """utime + stime of a process, in clock ticks (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), after pid and comm


class Meter:
    """CPU of this process and of the PostgreSQL backends it has open, and statements run."""

    def __init__(self, monitor, engine) -> None:
        from sqlalchemy import event

        self.monitor = monitor  # a separate psycopg connection, under another application_name
        self.statements = 0

        def count(*_args) -> None:
            self.statements += 1

        event.listen(engine, "before_cursor_execute", count)

    def backends(self) -> list[int]:
        rows = self.monitor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (backend_name(),)
        ).fetchall()
        return [row[0] for row in rows]

    def snapshot(self) -> tuple[int, int, dict[int, int]]:
        return cpu_ticks("self"), self.statements, {pid: cpu_ticks(pid) for pid in self.backends()}

    def since(self, before) -> tuple[float, float, int]:
        """App ms, database ms and statements since ``before``."""
        app_before, statements_before, backends_before = before
        app_now, statements_now, backends_now = self.snapshot()
        database = sum(ticks - backends_before.get(pid, 0) for pid, ticks in backends_now.items())
        to_ms = 1000 / TICK
        return (app_now - app_before) * to_ms, database * to_ms, statements_now - statements_before


def csrf_of(page: str) -> str:
    """The CSRF token a page carries in its meta tag."""
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    if found is None:
        raise RuntimeError("no CSRF token on the page")
    return found.group(1)


class Site:
    """One bench database served in this process, with a signed-in parent and admin."""

    def __init__(self, key: str, database_url: str, redis_url: str, school: School) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        self.key = key
        self.school = school
        self.app = make_app(database_url, redis_url)
        dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.monitor = psycopg.connect(dsn, autocommit=True, application_name="bench-district-monitor")
        with self.app.app_context():
            from app.extensions import db

            self.meter = Meter(self.monitor, db.engine)
        self.clients = {"parent": self.app.test_client(), "admin": self.app.test_client()}
        self.sign_in("parent", school.parent_email)
        self.sign_in("admin", school.admin_email)

    def sign_in(self, who: str, email: str) -> None:
        client = self.clients[who]
        token = csrf_of(client.get("/sign-in").get_data(as_text=True))
        answer = client.post(
            "/sign-in", data={"csrf_token": token, "email": email, "password": self.school.password}
        )
        if answer.status_code not in (302, 303):
            raise RuntimeError(f"{self.key}: signing in as {who} answered {answer.status_code}")

    def csrf_token(self, who: str, path: str) -> str:
        return csrf_of(self.clients[who].get(path).get_data(as_text=True))

    def get(self, surface: Surface) -> int:
        path = surface.path.format(
            first_class_id=self.school.first_class_id, school_message_id=self.school.school_message_id
        )
        response = self.clients[surface.who].get(path, headers=surface.headers)
        if response.status_code != 200:
            raise RuntimeError(f"{self.key}: {path} answered {response.status_code}")
        return len(response.get_data())

    def measure(self, surface: Surface, requests: int) -> dict:
        """``requests`` GETs in a row: CPU ms (app, database) and statements per request."""
        before = self.meter.snapshot()
        for _ in range(requests):
            self.get(surface)
        app_ms, db_ms, statements = self.meter.since(before)
        return {"requests": requests, "app_ms": app_ms, "db_ms": db_ms, "statements": statements}

    def close(self) -> None:
        self.monitor.close()
        with self.app.app_context():
            from app.extensions import db

            db.engine.dispose()


def measure_surfaces(sites: dict[str, Site], requests: int, rounds: int, surfaces=SURFACES) -> dict:
    """Every surface on every site, in interleaved rounds; per request CPU and statements."""
    totals: dict[str, dict[str, dict]] = {s.name: {} for s in surfaces}
    for site in sites.values():  # warm caches, pools and PostgreSQL's buffers
        for surface in surfaces:
            for _ in range(2):
                site.get(surface)
    for round_number in range(rounds):
        print(f"  round {round_number + 1} of {rounds}", flush=True)
        for surface in surfaces:
            n = max(2, requests // 4) if not surface.paged else requests
            for key, site in sites.items():
                measured = site.measure(surface, n)
                total = totals[surface.name].setdefault(key, {"requests": 0, "app_ms": 0.0, "db_ms": 0.0})
                total["requests"] += measured["requests"]
                total["app_ms"] += measured["app_ms"]
                total["db_ms"] += measured["db_ms"]
                total["statements"] = measured["statements"] / measured["requests"]
    result: dict = {}
    for name, per_site in totals.items():
        result[name] = {
            key: {
                "app_ms": t["app_ms"] / t["requests"],
                "db_ms": t["db_ms"] / t["requests"],
                "cpu_ms": (t["app_ms"] + t["db_ms"]) / t["requests"],
                "statements": t["statements"],
                "requests": t["requests"],
            }
            for key, t in per_site.items()
        }
    return result


# -- export memory and first byte ------------------------------------------------------------------------


def export_profile(site: Site, repeats: int = 3) -> dict:
    """The CSV export: time to first byte and in all (medians), and its peak memory.

    The memory is tracemalloc's peak of Python allocations during one more export, read to the
    end: the process's RSS would not show it, since the heap left by building the data is reused.
    """
    import gc
    import tracemalloc

    client = site.clients["admin"]

    def one() -> tuple[float, float, int]:
        started = time.perf_counter()
        response = client.get("/directory/export.csv", buffered=False)
        chunks = iter(response.response)
        first = next(chunks, b"")
        first_byte = time.perf_counter() - started
        size = len(first) + sum(len(chunk) for chunk in chunks)
        response.close()
        return first_byte, time.perf_counter() - started, size

    runs = [one() for _ in range(repeats)]
    gc.collect()
    tracemalloc.start()
    size = one()[2]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "peak_memory_mb": peak / 2**20,
        "first_byte_s": statistics.median(r[0] for r in runs),
        "total_s": statistics.median(r[1] for r in runs),
        "bytes": size,
    }


# -- compose against INSERT ... SELECT ------------------------------------------------------------------


def compose_profile(site: Site, grow_to: int = 10) -> dict:
    """A school-wide message composed through the form, in the 20k school and in that school
    grown ``grow_to`` times (its people cloned into it), each against a bare INSERT ... SELECT."""
    from sqlalchemy import text

    from app.extensions import db

    result = {"30k": compose_once(site)}
    with site.app.app_context():
        db.session.execute(text("SET session_replication_role = replica"))
        grow_school(site.school.school_id, grow_to - 1)
        db.session.execute(text("SET session_replication_role = DEFAULT"))
        db.session.commit()
        with db.engine.connect() as conn:
            conn.execute(text('ANALYZE "user", membership, mail_delivery, mail_message'))
            conn.commit()
    result["300k"] = compose_once(site)
    return result


def compose_once(site: Site) -> dict:
    """POST /messages/new (the fan-out queued, as in production), then the worker's fan-out run
    here, then the bare INSERT ... SELECT of the same rows; each timed in wall and CPU."""
    from sqlalchemy import func, select, text

    from app import tenancy
    from app.extensions import db
    from app.messages.fanout import fan_out
    from app.models import MailDelivery, MailMessage
    from app.models.base import rowcount

    client = site.clients["admin"]
    token = site.csrf_token("admin", "/messages/new?kind=school")
    form = {
        "csrf_token": token,
        "subject": "District bench",
        "body": "A message to **everyone**.",
        "send_at": "",
        "action": "send",
    }
    before = site.meter.snapshot()
    started = time.perf_counter()
    answer = client.post("/messages/new?kind=school", data=form)
    wall = time.perf_counter() - started
    app_ms, db_ms, statements = site.meter.since(before)
    if answer.status_code not in (302, 303):
        raise RuntimeError(f"compose answered {answer.status_code}")
    message_id = int(answer.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    with site.app.app_context():
        in_request = db.session.scalar(
            select(func.count(MailDelivery.id)).where(MailDelivery.message_id == message_id)
        )
        with tenancy.acting_for(site.school.school_id):
            size = db.session.scalar(select(MailMessage.audience_size).where(MailMessage.id == message_id))
        before = site.meter.snapshot()
        fan_started = time.perf_counter()
        with tenancy.acting_for(site.school.school_id):
            fan_out(message_id)
        fan_wall = time.perf_counter() - fan_started
        fan_app_ms, fan_db_ms, fan_statements = site.meter.since(before)
        recipients = db.session.scalar(
            select(func.count(MailDelivery.id)).where(MailDelivery.message_id == message_id)
        )
        bare_sql = text(
            """
            INSERT INTO mail_delivery (message_id, user_id, to_email, address_fixed, status, attempts,
                                       created_at, updated_at)
            SELECT :message, u.id, u.email, false, 'pending', 0, now(), now()
            FROM membership m JOIN "user" u ON u.id = m.user_id
            WHERE m.school_id = :school AND m.status = 'approved' AND u.active
            """
        )
        before = site.meter.snapshot()
        bare_started = time.perf_counter()
        inserted = db.session.execute(bare_sql, {"message": message_id, "school": site.school.school_id})
        db.session.commit()
        bare_wall = time.perf_counter() - bare_started
        bare_app_ms, bare_db_ms, _ = site.meter.since(before)
        bare_rows = rowcount(inserted)
        db.session.execute(text("DELETE FROM mail_message WHERE id = :id"), {"id": message_id})
        db.session.commit()
    return {
        "recipients": recipients,
        "audience_size": size,
        "written_in_request": in_request,
        "bare_rows": bare_rows,
        "wall_s": wall,
        "cpu_ms": app_ms + db_ms,
        "app_ms": app_ms,
        "db_ms": db_ms,
        "statements": statements,
        "fanout_wall_s": fan_wall,
        "fanout_cpu_ms": fan_app_ms + fan_db_ms,
        "fanout_statements": fan_statements,
        "bare_wall_s": bare_wall,
        "bare_cpu_ms": bare_app_ms + bare_db_ms,
    }


def grow_school(school_id: int, copies: int) -> None:
    """The school's people ``copies`` more times over in the same school (accounts and
    memberships copied by INSERT ... SELECT, ids shifted by each table's span, emails prefixed)."""
    from sqlalchemy import text

    from app.extensions import db

    if copies < 1:
        return
    span = {name: db.session.scalar(text(f'SELECT max(id) FROM "{name}"')) for name in ("user", "membership")}  # noqa: S608
    special = {
        ("user", "email"): "'g' || k || '.' || t.email",
        ("user", "mail_key"): "md5(random()::text || t.id || '.' || k)",
        ("membership", "school_id"): "t.school_id",
        # The kept search text (app/models/listings.py) holds the email, which a copy prefixes.
        ("membership", "search_text"): (
            "(SELECT lower(u.name) || chr(10) || lower('g' || k || '.' || u.email) "
            'FROM "user" u WHERE u.id = t.user_id)'
        ),
    }
    wheres = {
        "user": "t.id IN (SELECT user_id FROM membership WHERE school_id = :school)",
        "membership": "t.school_id = :school AND t.id <= :membership_span",
    }
    params = {"school": school_id, "copies": copies, "membership_span": span["membership"]}
    for name in ("user", "membership"):
        _copy_rows(name, special, span, wheres[name], params)


def _copy_rows(name: str, special: dict, span: dict, where: str, params: dict) -> None:
    """INSERT ... SELECT ``:copies`` copies of a table's rows picked by ``where``: ids shifted
    by each table's span, foreign keys into copied tables with them, ``special`` columns as given."""
    from sqlalchemy import text

    from app.extensions import db

    columns, values = [], []
    for column in db.Model.metadata.tables[name].columns:
        columns.append(f'"{column.name}"')
        targets = [fk.column.table.name for fk in column.foreign_keys]
        if (name, column.name) in special:
            values.append(special[(name, column.name)])
        elif column.primary_key:
            values.append(f"t.id + k * {span[name]}")
        elif targets and targets[0] in span:
            values.append(f't."{column.name}" + k * {span[targets[0]]}')
        else:
            values.append(f't."{column.name}"')
    db.session.execute(
        text(
            f'INSERT INTO "{name}" ({", ".join(columns)}) SELECT {", ".join(values)} '  # noqa: S608
            f'FROM "{name}" t, generate_series(1, :copies) k WHERE {where}'
        ),
        params,
    )
    db.session.execute(
        text(
            f"SELECT setval(pg_get_serial_sequence('\"{name}\"', 'id'), (SELECT max(id) FROM \"{name}\"))"  # noqa: S608
        )
    )


# -- the run ---------------------------------------------------------------------------------------------


def run(args) -> dict:
    from redis import Redis

    urls = database_urls(args.server, args.prefix)
    Redis.from_url(args.redis_url).flushdb()
    plans = {"2k": (1, 2000), "20k": (1, args.big), "50x2k": (args.schools, 2000)}
    built: dict[str, list[School]] = {}
    build_seconds: dict[str, float] = {}
    for key, (schools, families) in plans.items():
        print(f"Building {args.prefix}_{key}: {schools} x {families:,} families ...", flush=True)
        built[key], build_seconds[key] = build(urls[key], args.redis_url, schools, families)
        print(f"  {build_seconds[key]:.1f} s; first school: {built[key][0].counts}", flush=True)
    sites = {key: Site(key, urls[key], args.redis_url, built[key][0]) for key in plans}
    try:
        print("Measuring ...", flush=True)
        chosen = [s for s in SURFACES if not args.only or any(o in s.name for o in args.only)]
        surfaces = measure_surfaces(sites, args.requests, args.rounds, chosen)
        exports = {key: export_profile(sites[key]) for key in ("2k", "20k")}
        compose = compose_profile(sites["20k"])
    finally:
        for site in sites.values():
            site.close()
        Redis.from_url(args.redis_url).flushdb()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "build_s": build_seconds,
        "schools": {
            key: [s.counts for s in schools[:1]] + [{"schools": len(schools)}]
            for key, schools in built.items()
        },
        "surfaces": surfaces,
        "export": exports,
        "compose": compose,
    }


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def report(result: dict) -> tuple[str, bool]:
    """The table and the targets; False if any target is not met."""
    lines = [
        f"District benchmark, {result['date']}, PostgreSQL, {result['machine']['cpus']} CPUs, "
        f"load {result['machine']['load'][0]:.1f}",
        "build: " + ", ".join(f"{k} {v:.0f} s" for k, v in result["build_s"].items()),
        "",
        "CPU ms per request (app + PostgreSQL backend), SQL statements per request",
        "",
        "| surface | 2,000 families | 20,000 families | 50 schools x 2,000 | 20k / 2k | 50 schools / 1 "
        "| statements 2k / 20k / 50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    all_met = True
    checks = []
    for surface in SURFACES:
        if surface.name not in result["surfaces"]:  # left out by --only
            continue
        per = result["surfaces"][surface.name]
        small, big, host = per["2k"]["cpu_ms"], per["20k"]["cpu_ms"], per["50x2k"]["cpu_ms"]
        growth, spread = big / small, host / small
        statements = [per[k]["statements"] for k in ("2k", "20k", "50x2k")]
        growth_cell = f"{growth:.2f}x"
        if surface.paged:
            ok = growth <= PAGED_TARGET
            all_met &= ok
            growth_cell += f" ({verdict(ok)})"
            checks.append((f"{surface.name}: 20k / 2k = {growth:.2f}x (target <= {PAGED_TARGET}x)", ok))
        else:
            growth_cell += " (linear)"
        ok = spread <= HOST_TARGET
        all_met &= ok
        checks.append((f"{surface.name}: 50 schools / 1 = {spread:.2f}x (target <= {HOST_TARGET}x)", ok))
        constant = len({round(s, 1) for s in statements}) == 1
        if surface.paged:
            all_met &= constant
            checks.append((f"{surface.name}: statements {statements} constant", constant))
        lines.append(
            f"| {surface.name} | {small:,.1f} | {big:,.1f} | {host:,.1f} | {growth_cell} "
            f"| {spread:.2f}x ({verdict(ok)}) | {' / '.join(f'{s:g}' for s in statements)} |"
        )
    export = result["export"]
    memory_growth = export["20k"]["peak_memory_mb"] - export["2k"]["peak_memory_mb"]
    ok = memory_growth < EXPORT_MEMORY_TARGET_MB
    all_met &= ok
    checks.append((f"CSV export peak memory growth 2k -> 20k = {memory_growth:.1f} MB (target < 20 MB)", ok))
    first_byte_ok = export["20k"]["first_byte_s"] < 1.0
    all_met &= first_byte_ok
    checks.append(
        (
            f"CSV export first byte at 20k = {export['20k']['first_byte_s']:.3f} s (target < 1 s)",
            first_byte_ok,
        )
    )
    lines += [
        "",
        "| CSV export | peak memory | first byte | whole export | size |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in ("2k", "20k"):
        e = export[key]
        lines.append(
            f"| {key} | {e['peak_memory_mb']:.1f} MB | {e['first_byte_s'] * 1000:.0f} ms "
            f"| {e['total_s'] * 1000:.0f} ms | {e['bytes'] / 1e6:.1f} MB |"
        )
    lines += [
        "",
        "| compose, school-wide | recipients | in request | request CPU ms | request wall s "
        "| statements | worker fan-out CPU ms | fan-out wall s | bare INSERT ... SELECT CPU ms "
        "| bare wall s | request / bare CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, c in result["compose"].items():
        ratio = c["cpu_ms"] / c["bare_cpu_ms"]
        ok = ratio <= COMPOSE_TARGET and c["wall_s"] < COMPOSE_SECONDS
        all_met &= ok
        checks.append(
            (
                f"compose to {c['recipients']:,} ({key}): {ratio:.2f}x the bare INSERT ... SELECT (target <= "
                f"{COMPOSE_TARGET}x), {c['wall_s']:.2f} s (target < {COMPOSE_SECONDS:g} s)",
                ok,
            )
        )
        lines.append(
            f"| {key} | {c['recipients']:,} | {c['written_in_request']:,} | {c['cpu_ms']:,.0f} "
            f"| {c['wall_s']:.2f} | {c['statements']} | {c['fanout_cpu_ms']:,.0f} | {c['fanout_wall_s']:.2f} "
            f"| {c['bare_cpu_ms']:,.0f} | {c['bare_wall_s']:.2f} | {ratio:.2f}x |"
        )
    lines += [
        "",
        "Targets:",
    ]
    lines += [f"  {verdict(ok):>7}  {text}" for text, ok in checks]
    return "\n".join(lines), all_met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help="PostgreSQL server; bench_district_* are DROPPED"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="jobs are queued here (FLUSHED)")
    parser.add_argument("--requests", type=int, default=20, help="requests per paged surface per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--schools", type=int, default=50)
    parser.add_argument("--big", type=int, default=20000, help="families of the big school")
    parser.add_argument("--prefix", default="bench_district", help="names of the databases (DROPPED)")
    parser.add_argument(
        "--only", action="append", default=[], help="measure only surfaces whose name contains this"
    )
    args = parser.parse_args()
    result = run(args)
    text, all_met = report(result)
    print("\n" + text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
