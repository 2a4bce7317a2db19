"""Directory speed: search partial, class roster and CSV export against the framework's floor,
and the CSV export against PostgreSQL's own COPY of the same rows.

    python -m bench.directory [--database-url URL] [--requests 400] [--clients 4]

1. Recreates the PostgreSQL database (default ``bench_directory``: it is DROPPED first), creates
   the tables and builds the reference set (app/reference_data.py: 2,000 families, 3,000
   students, 60 classes) plus a second school of 5,000 families for the export comparison.
2. Serves the app with gunicorn (the project's gunicorn.conf.py: 2 workers, 4 threads each) on
   127.0.0.1, through ``bench/directory_app.py``, which adds one bare route: the floor.
3. Signs in through the real form and measures, side by side in one run, with a few client
   threads on keep-alive connections: the floor, the directory search partial (as a parent),
   the class roster (as a parent) and the CSV export (as staff): requests per second, p50 and
   p95 latency, each as a ratio to the floor.
4. Times the 5,000-family CSV export over HTTP (and in-process) against
   ``COPY (SELECT ...) TO STDOUT WITH CSV`` of the same rows through psycopg.

Targets: search partial p95 within 10x the floor's p95; CSV export within 3x of COPY.
Writes bench/results/directory.json. Traffic goes to 127.0.0.1 only, and every loop is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

from bench.mail_fanout import Process, drop_postgres_database, ensure_postgres_database

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "directory.json"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_directory"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
HOST = "127.0.0.1"
SEARCH_TARGET = 10.0  # search partial p95 at most this many times the floor's p95
EXPORT_TARGET = 3.0  # CSV export at most this many times PostgreSQL's COPY of the same rows
INHERITED = ("TEST_", "FLASK_", "RQ_", "MAIL", "REDIS_", "DATABASE_", "PUBLIC_URL", "APP_ENV", "DYNO", "PORT")

# Same rows as app/directory/export.py writes for a viewer who sees every field: one row per
# approved, active guardian; children as "Name (Class, Class)" joined by "; ", by first name.
COPY_SQL = """
COPY (
  SELECT f.name, u.name, u.email, coalesce(m.phone, ''), coalesce(m.address, ''),
         coalesce(kids.children, '')
  FROM family f
  JOIN guardian g ON g.family_id = f.id
  JOIN membership m ON m.id = g.membership_id
  JOIN "user" u ON u.id = m.user_id
  LEFT JOIN LATERAL (
    SELECT string_agg(s.first_name || ' (' || coalesce(places.names, '') || ')', '; '
                      ORDER BY s.first_name) AS children
    FROM student s
    LEFT JOIN LATERAL (
      SELECT string_agg(c.name, ', ') AS names
      FROM enrollment e JOIN school_class c ON c.id = e.class_id
      WHERE e.student_id = s.id
    ) places ON true
    WHERE s.family_id = f.id
  ) kids ON true
  WHERE f.school_id = {school_id} AND m.status = 'approved' AND u.active
  ORDER BY f.name, f.id, g.id
) TO STDOUT WITH (FORMAT csv, HEADER)
"""


# -- data -------------------------------------------------------------------------------------------


def bench_env(database_url: str, port: int, secret_key: str, redis_url: str) -> dict[str, str]:
    """The environment of a production app on the bench database (mail kept in memory).

    Production refuses an http:// PUBLIC_URL and a missing REDIS_URL, so both are given: the
    https address only goes into links in emails (none are sent), and the client here, which
    keeps its cookie itself, sends the Secure session cookie back over plain HTTP to 127.0.0.1.
    Redis holds the rate limits' counters (nothing is flushed) and any job, never run.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}
    env.update(
        APP_ENV="production",
        DATABASE_URL=database_url,
        SECRET_KEY=secret_key,
        MAIL_BACKEND="memory",
        PUBLIC_URL=f"https://{HOST}:{port}",
        REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
    )
    return env


def build_data(database_url: str, export_families: int, redis_url: str) -> dict:
    """Fresh database, tables from the models, the reference set and a large school for the export."""
    drop_postgres_database(database_url)
    ensure_postgres_database(database_url)
    os.environ.update(bench_env(database_url, 0, "bench-build-only", redis_url))
    from sqlalchemy import text

    from app import create_app
    from app.extensions import db
    from app.reference_data import generate

    app = create_app()
    with app.app_context():
        db.create_all()
        started = time.perf_counter()
        reference = generate()
        db.session.commit()
        reference_seconds = time.perf_counter() - started
        large = generate(families=export_families, classes=60, students=export_families * 3 // 2, seed=5)
        db.session.commit()
        with db.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
        db.engine.dispose()
    return {"reference": reference, "large": large, "reference_seconds": reference_seconds}


# -- HTTP ----------------------------------------------------------------------------------------------


class Browser:
    """One signed-in person over http.client: a session cookie and the CSRF token."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def request(self, path: str, *, method: str = "GET", body: bytes | None = None, headers=None, conn=None):
        own = conn is None
        conn = conn or http.client.HTTPConnection(HOST, self.port, timeout=60)
        all_headers = {"Cookie": self.cookie} if self.cookie else {}
        all_headers.update(headers or {})
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith("session="):
                self.cookie = value.split(";", 1)[0]
        if own:
            conn.close()
        return response.status, data

    def sign_in(self, email: str, password: str) -> None:
        status, page = self.request("/sign-in")
        token = re.search(rb'<meta name="csrf-token" content="([^"]+)"', page).group(1).decode()
        form = urllib.parse.urlencode({"csrf_token": token, "email": email, "password": password}).encode()
        status, _ = self.request(
            "/sign-in",
            method="POST",
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if status != 303:
            raise RuntimeError(f"signing in as {email} answered {status}")


def load(browser: Browser, path: str, *, requests: int, clients: int, headers=None) -> dict:
    """``requests`` GETs of ``path`` from ``clients`` threads on keep-alive connections."""
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    remaining = iter(range(requests))

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, browser.port, timeout=60)
        mine = []
        while True:
            with lock:
                if next(remaining, None) is None:
                    break
            started = time.perf_counter()
            try:
                status, _ = browser.request(path, headers=headers, conn=conn)
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection(HOST, browser.port, timeout=60)
                status = 0
            mine.append(time.perf_counter() - started)
            if status != 200:
                with lock:
                    failures.append(status)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{path}: {len(failures)} of {requests} requests failed ({sorted(set(failures))})")
    latencies.sort()
    return {
        "requests": requests,
        "clients": clients,
        "rps": requests / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_ready(port: int, server: Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError("gunicorn exited:\n" + server.output())
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/_bench/floor")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer in time:\n" + server.output())


# -- CSV against COPY ----------------------------------------------------------------------------------


def time_copy(database_url: str, school_id: int, repeats: int) -> tuple[float, int]:
    """Median seconds of psycopg's COPY of the export's rows, and its number of lines."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    times, lines = [], 0
    with psycopg.connect(dsn) as conn:
        for _ in range(repeats):
            started = time.perf_counter()
            out = bytearray()
            with conn.cursor().copy(COPY_SQL.format(school_id=int(school_id))) as copy:
                for chunk in copy:
                    out += chunk
            times.append(time.perf_counter() - started)
            lines = out.count(b"\n")
    return statistics.median(times), lines


def time_http_export(browser: Browser, repeats: int) -> tuple[float, int]:
    """Median seconds of GET /directory/export.csv over HTTP, and its number of lines."""
    times, lines = [], 0
    conn = http.client.HTTPConnection(HOST, browser.port, timeout=120)
    for _ in range(repeats):
        started = time.perf_counter()
        status, body = browser.request("/directory/export.csv", conn=conn)
        times.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"export answered {status}")
        lines = body.count(b"\n")
    conn.close()
    return statistics.median(times), lines


def time_inprocess_export(school_id: int, staff_email: str, repeats: int) -> dict[str, float]:
    """The export's own work without HTTP: loading the cards, then writing the CSV (medians)."""
    from sqlalchemy import select

    from app import create_app, tenancy
    from app.directory import services
    from app.directory.export import to_csv
    from app.directory.visibility import Viewer
    from app.extensions import db
    from app.models import Membership, User

    app = create_app()
    load_times, write_times = [], []
    with app.test_request_context(), tenancy.bound(school_id):
        member_id = db.session.scalar(
            select(Membership.id).join(User, User.id == Membership.user_id).where(User.email == staff_email)
        )
        viewer = Viewer(membership_id=member_id, class_ids=frozenset(), sees_all=True)
        for _ in range(repeats):
            started = time.perf_counter()
            cards = services.everything(services.DirectoryQuery(), viewer)
            loaded = time.perf_counter()
            to_csv(cards)
            load_times.append(loaded - started)
            write_times.append(time.perf_counter() - loaded)
            db.session.expunge_all()
        db.engine.dispose()
    return {"load_s": statistics.median(load_times), "write_s": statistics.median(write_times)}


# -- the run -------------------------------------------------------------------------------------------


def run(args) -> dict:
    print(f"Building {args.database_url.rsplit('/', 1)[-1]} ...", flush=True)
    data = build_data(args.database_url, args.export_families, args.redis_url)
    reference, large = data["reference"], data["large"]
    print(f"  reference set ({reference.counts}) built in {data['reference_seconds']:.1f} s", flush=True)
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-directory-"))
    server = Process(
        "gunicorn",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "gunicorn.conf.py",
            "--bind",
            f"{HOST}:{port}",
            "--workers",
            str(args.workers),
            "bench.directory_app:app",
        ],
        bench_env(args.database_url, port, secrets.token_hex(32), args.redis_url),
        tmp / "gunicorn.log",
    )
    try:
        wait_ready(port, server)
        parent, staff, big_staff = Browser(port), Browser(port), Browser(port)
        parent.sign_in(reference.parent_email, reference.password)
        staff.sign_in(reference.staff_email, reference.password)
        big_staff.sign_in(large.staff_email, large.password)
        partial = {"HX-Request": "true", "HX-Target": "directory-results"}
        surfaces = [
            ("floor", parent, "/_bench/floor", None, args.requests),
            ("search partial", parent, "/directory/?q=an", partial, args.requests),
            ("class roster", parent, f"/classes/{reference.first_class_id}", None, args.requests),
            (
                "csv export (2,000 families)",
                staff,
                "/directory/export.csv",
                None,
                max(20, args.requests // 20),
            ),
        ]
        for _name, who, path, headers, _n in surfaces:  # warm both workers' caches and pools
            load(who, path, requests=4 * args.clients, clients=args.clients, headers=headers)
        measured = {}
        for name, who, path, headers, n in surfaces:
            measured[name] = load(who, path, requests=n, clients=args.clients, headers=headers)
            print(
                f"  {name:<28} {measured[name]['rps']:8.1f} req/s  p95 {measured[name]['p95_ms']:7.1f} ms",
                flush=True,
            )
        http_s, http_lines = time_http_export(big_staff, args.export_repeats)
    finally:
        server.stop()
    copy_s, copy_lines = time_copy(args.database_url, large.school_id, args.export_repeats)
    inprocess = time_inprocess_export(large.school_id, large.staff_email, args.export_repeats)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "database": "postgresql",
        "reference": reference.counts,
        "reference_build_s": data["reference_seconds"],
        "surfaces": measured,
        "export": {
            "families": args.export_families,
            "http_s": http_s,
            "http_lines": http_lines,
            "copy_s": copy_s,
            "copy_lines": copy_lines,
            **inprocess,
        },
    }


def report(result: dict) -> str:
    floor = result["surfaces"]["floor"]
    lines = [
        f"Directory benchmark, {result['date']}, PostgreSQL, {result['machine']['cpus']} CPUs",
        f"reference set: {result['reference']} (built in {result['reference_build_s']:.1f} s)",
        "",
        f"{'surface':<28} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p95/floor':>10} {'rps/floor':>10}",
    ]
    for name, m in result["surfaces"].items():
        lines.append(
            f"{name:<28} {m['rps']:8.1f} {m['p50_ms']:8.1f} {m['p95_ms']:8.1f} "
            f"{m['p95_ms'] / floor['p95_ms']:9.1f}x {m['rps'] / floor['rps']:9.3f}x"
        )
    export = result["export"]
    ratio = export["http_s"] / export["copy_s"]
    search_ratio = result["surfaces"]["search partial"]["p95_ms"] / floor["p95_ms"]
    lines += [
        "",
        f"CSV export of {export['families']:,} families: "
        f"HTTP {export['http_s']:.3f} s ({export['http_lines']:,} lines) "
        f"against COPY {export['copy_s']:.3f} s ({export['copy_lines']:,} lines): {ratio:.2f}x",
        f"  in-process: loading the cards {export['load_s']:.3f} s, "
        f"writing the CSV {export['write_s']:.3f} s",
        "",
        f"search partial p95 / floor p95 = {search_ratio:.1f}x (target <= {SEARCH_TARGET:g}x): "
        + ("met" if search_ratio <= SEARCH_TARGET else "MISSED"),
        f"CSV export / COPY = {ratio:.2f}x (target <= {EXPORT_TARGET:g}x): "
        + ("met" if ratio <= EXPORT_TARGET else "MISSED"),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE, help="PostgreSQL; DROPPED and recreated")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="rate limits' counters (not flushed)")
    parser.add_argument("--requests", type=int, default=400, help="requests per surface (the export: 1/20)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--export-families", type=int, default=5000)
    parser.add_argument("--export-repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.database_url.startswith("postgresql"):
        parser.error("the benchmark compares against PostgreSQL's COPY: give a postgresql:// URL")
    result = run(args)
    text = report(result)
    print("\n" + text)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
