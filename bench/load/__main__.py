"""Load: concurrent clients on the signed-in directory, its search partial and sign-in.

    python -m bench.load [--duration 30] [--clients 8] [--database-url URL] [--redis-url URL]

1. Drops and recreates the PostgreSQL database of --database-url (default ``bench_load``) and
   fills it with the reference data set (app/reference_data.py, as ``flask reference-data``:
   one school, 2,000 families, 3,000 students, about 3,300 guardians).
2. Serves it with gunicorn and the project's gunicorn.conf.py (2 workers, 4 threads each),
   production settings, on 127.0.0.1 (bench/load/app.py raises the per-IP sign-in limit, as
   every client here shares one address). Production needs Redis: the rate limits count in
   --redis-url (default redis://127.0.0.1:6379/6; that database is FLUSHED).
3. Each client thread signs in as its own parent, then for --duration seconds loops over a
   mix: the directory page (GET /directory/), the live-search partial (htmx GET with a search
   term) and, one request in ten, a whole sign-in (GET the form, POST it) as another parent.
   Every request is timed; any status other than the expected one counts as an error.
4. Reads the resident memory (RSS) of gunicorn's processes after a warm-up and at the end.

Prints a table, writes bench/results/load.json and bench/results/load.png (latency over time).
Traffic goes to 127.0.0.1 only; the run stops by itself after --duration seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.integration.processes import process_tree

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_load"
INHERITED = ("TEST_", "FLASK_", "RQ_", "MAIL", "REDIS_", "DATABASE_", "PUBLIC_URL", "APP_ENV", "DYNO", "PORT")
SEARCH_TERMS = ("ada", "ben", "cleo", "dev", "ezra", "fay", "gus", "hana", "kai", "lia", "mi", "ro")
RSS_GROWTH_LIMIT = 0.10
WARMUP_REQUESTS = 200


# -- data and server ------------------------------------------------------------------------------


def build_reference_data(database_url: str, redis_url: str) -> tuple[list[str], str, dict]:
    """A fresh database with the reference set; the parents' emails and their password."""
    from bench.mail_fanout import drop_postgres_database, ensure_postgres_database

    drop_postgres_database(database_url)
    ensure_postgres_database(database_url)
    os.environ.update(server_env(database_url, 0, redis_url))
    from sqlalchemy import select, text

    from app import create_app, tenancy
    from app.extensions import db
    from app.models import Membership, MembershipStatus, Role, User
    from app.reference_data import generate

    app = create_app()
    with app.app_context():
        db.create_all()
        started = time.perf_counter()
        built = generate()
        db.session.commit()
        seconds = time.perf_counter() - started
        with tenancy.bound(built.school_id):
            parents = list(
                db.session.scalars(
                    select(User.email)
                    .join(Membership, Membership.user_id == User.id)
                    .where(Membership.role == Role.PARENT, Membership.status == MembershipStatus.APPROVED)
                    .order_by(User.id)
                )
            )
        with db.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
        db.engine.dispose()
    return parents, built.password, {"counts": built.counts, "build_seconds": round(seconds, 2)}


def server_env(database_url: str, port: int, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}
    env.update(
        APP_ENV="production",
        DATABASE_URL=database_url,
        SECRET_KEY="bench-load-secret-" + str(os.getpid()),
        MAIL_BACKEND="memory",
        # Production refuses an http:// address; it only goes into links in emails (none are
        # sent), and the clients here send the Secure session cookie back over plain HTTP.
        PUBLIC_URL=f"https://{HOST}:{port}",
        REDIS_URL=redis_url,
        PYTHONPATH=str(ROOT),
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(database_url: str, redis_url: str, log_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [gunicorn, "--config", "gunicorn.conf.py", "--bind", f"{HOST}:{port}", "bench.load.app:app"],
        cwd=ROOT,
        env=server_env(database_url, port, redis_url),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited:\n" + log_path.read_text(errors="replace")[-4000:])
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gunicorn did not answer /health within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def rss_bytes(root: int) -> int:
    """Resident memory of a process and its descendants (gunicorn's master and workers)."""
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


# -- clients ---------------------------------------------------------------------------------------


class Session:
    """One person's keep-alive connection, session cookie and CSRF token."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)
        self.cookie = ""

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        all_headers = {"Cookie": self.cookie} if self.cookie else {}
        if body is not None:
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        all_headers.update(headers or {})
        try:
            self.conn.request(method, path, body=body, headers=all_headers)
            response = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # a dropped keep-alive connection: reconnect once
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
            self.conn.request(method, path, body=body, headers=all_headers)
            response = self.conn.getresponse()
        data = response.read()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie" and value.startswith("session="):
                self.cookie = value.split(";", 1)[0]
        return response.status, data

    def sign_in(self, email: str, password: str) -> tuple[int, float]:
        """GET the form (token and cookie), POST it; the POST's status and seconds."""
        _, page = self.request("GET", "/sign-in")
        token = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1).decode()
        body = urllib.parse.urlencode({"email": email, "password": password, "csrf_token": token}).encode()
        started = time.perf_counter()
        status, _ = self.request("POST", "/sign-in", body=body)
        return status, time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


@dataclass
class Sample:
    at: float  # seconds since the run started
    endpoint: str
    seconds: float
    ok: bool


@dataclass
class Shared:
    parents: list[str]
    password: str
    started: float = 0.0
    stop_at: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_parent: int = 0

    def parent(self) -> str:
        with self.lock:
            self.next_parent = (self.next_parent + 1) % len(self.parents)
            return self.parents[self.next_parent]


def client_loop(port: int, shared: Shared, seed: int, record: bool, until: float) -> None:
    rng = random.Random(seed)  # noqa: S311 - a request mix, not a secret
    me = Session(port)
    status, _ = me.sign_in(shared.parent(), shared.password)
    if status != 303:
        raise RuntimeError(f"sign-in for the client failed: {status}")
    try:
        while time.monotonic() < until:
            roll = rng.random()
            if roll < 0.1:
                visitor = Session(port)
                status, seconds = visitor.sign_in(shared.parent(), shared.password)
                visitor.close()
                endpoint, ok = "sign-in", status == 303
            elif roll < 0.55:
                started = time.perf_counter()
                status, _ = me.request("GET", "/directory/")
                endpoint, seconds, ok = "directory", time.perf_counter() - started, status == 200
            else:
                term = urllib.parse.quote(rng.choice(SEARCH_TERMS))
                headers = {"HX-Request": "true", "HX-Target": "directory-results"}
                started = time.perf_counter()
                status, body = me.request("GET", f"/directory/?q={term}", headers=headers)
                seconds = time.perf_counter() - started
                endpoint, ok = "search partial", status == 200 and not body.lstrip().startswith(b"<!doctype")
            if record:
                with shared.lock:
                    shared.samples.append(Sample(time.monotonic() - shared.started, endpoint, seconds, ok))
    finally:
        me.close()


def run_clients(port: int, shared: Shared, clients: int, seconds: float, record: bool) -> None:
    shared.started = time.monotonic()
    until = shared.started + seconds
    threads = [
        threading.Thread(target=client_loop, args=(port, shared, n, record, until), daemon=True)
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)


# -- report ----------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summarise(samples: list[Sample], duration: float) -> dict:
    rows = {}
    for endpoint in ("directory", "search partial", "sign-in", "all"):
        chosen = [s for s in samples if endpoint == "all" or s.endpoint == endpoint]
        if not chosen:
            continue
        times = [s.seconds * 1000 for s in chosen]
        rows[endpoint] = {
            "requests": len(chosen),
            "per_second": round(len(chosen) / duration, 1),
            "p50_ms": round(percentile(times, 0.50), 1),
            "p95_ms": round(percentile(times, 0.95), 1),
            "p99_ms": round(percentile(times, 0.99), 1),
            "mean_ms": round(statistics.fmean(times), 1),
            "errors": sum(not s.ok for s in chosen),
        }
    return rows


def table(result: dict) -> str:
    lines = [
        f"{'endpoint':<16}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}",
    ]
    for name, row in result["endpoints"].items():
        lines.append(
            f"{name:<16}{row['requests']:>9}{row['per_second']:>8}{row['p50_ms']:>9}"
            f"{row['p95_ms']:>9}{row['p99_ms']:>9}{row['errors']:>8}"
        )
    rss = result["rss"]
    lines.append(
        f"web RSS: {rss['start_mb']} MB after warm-up, {rss['end_mb']} MB at the end "
        f"({rss['growth_percent']:+.1f}%, limit +{RSS_GROWTH_LIMIT * 100:.0f}%)"
    )
    return "\n".join(lines)


def plot(samples: list[Sample], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 5), dpi=110)
    colours = {"directory": "#1d4ed8", "search partial": "#059669", "sign-in": "#b45309"}
    for endpoint, colour in colours.items():
        chosen = [s for s in samples if s.endpoint == endpoint]
        if not chosen:
            continue
        axis.scatter(
            [s.at for s in chosen], [s.seconds * 1000 for s in chosen], s=3, alpha=0.35, color=colour
        )
        # p95 per one-second window, so a trend over the run stands out from the scatter.
        windows: dict[int, list[float]] = {}
        for s in chosen:
            windows.setdefault(int(s.at), []).append(s.seconds * 1000)
        xs = sorted(windows)
        axis.plot(
            [x + 0.5 for x in xs],
            [percentile(windows[x], 0.95) for x in xs],
            color=colour,
            label=f"{endpoint} (p95 per second)",
        )
    axis.set_xlabel("seconds into the run")
    axis.set_ylabel("latency (ms)")
    axis.set_yscale("log")
    axis.set_title(title)
    axis.legend(loc="upper right")
    axis.grid(True, which="both", alpha=0.2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measured load (at most 600)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (at most 64)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE, help="PostgreSQL database; it is DROPPED")
    # Production needs Redis (REDIS_URL), so there is always one: the rate limits count there.
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/6", help="rate limits in this Redis database (FLUSHED)"
    )
    args = parser.parse_args()
    duration = min(max(args.duration, 1.0), 600.0)
    clients = min(max(args.clients, 1), 64)
    from redis import Redis

    Redis.from_url(args.redis_url).flushdb()
    RESULTS.mkdir(parents=True, exist_ok=True)

    print("building the reference data set ...", flush=True)
    parents, password, data = build_reference_data(args.database_url, args.redis_url)
    server, port = start_server(args.database_url, args.redis_url, RESULTS / "load-gunicorn.log")
    try:
        shared = Shared(parents=parents, password=password)
        print(f"warming up ({WARMUP_REQUESTS}+ requests) ...", flush=True)
        run_clients(port, shared, clients, max(3.0, WARMUP_REQUESTS / 100), record=False)
        rss_start = rss_bytes(server.pid)
        print(f"measuring: {clients} clients for {duration:.0f} s ...", flush=True)
        run_clients(port, shared, clients, duration, record=True)
        rss_end = rss_bytes(server.pid)
    finally:
        stop_server(server)
    samples = shared.samples
    growth = (rss_end - rss_start) / rss_start if rss_start else 0.0
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],  # other work on the machine
        },
        "database": "postgresql",
        "rate_limit_storage": "redis",
        "clients": clients,
        "duration_seconds": duration,
        "data": data,
        "endpoints": summarise(samples, duration),
        "rss": {
            "start_mb": round(rss_start / 2**20, 1),
            "end_mb": round(rss_end / 2**20, 1),
            "growth_percent": round(growth * 100, 1),
        },
    }
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    title = f"bench/load: {clients} clients, {duration:.0f} s, reference data set on PostgreSQL"
    plot(samples, RESULTS / "load.png", title)
    print(table(result))
    print(f"wrote {RESULTS / 'load.json'} and {RESULTS / 'load.png'}")
    errors = result["endpoints"].get("all", {}).get("errors", 1)
    ok = errors == 0 and growth <= RSS_GROWTH_LIMIT
    if not ok:
        print(f"FAILED: {errors} errors, RSS growth {growth * 100:.1f}%", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
