"""Email fan-out: one newsletter to N people, batched against one provider call per recipient.

    python -m bench.mail_fanout [--recipients 20000] [--database-url URL] [--redis-url URL]

Everything is real except Mailgun: a database of its own (an SQLite file in a temporary
directory, or --database-url for PostgreSQL: its tables are dropped and created again), Redis
(the --redis-url database is FLUSHED), the fake Mailgun of tests/fakes/mailgun.py as a separate
process on 127.0.0.1, and real ``python worker.py`` processes. One run measures:

1. batched: queue_email() + commit for N recipients, then the time from enqueueing the send
   job until the worker has marked every delivery sent (the Mailgun backend puts up to 1,000
   recipients in one HTTP call). The benchmark enqueues app.mail.jobs.send_message itself,
   with a job timeout that fits the run: the job queue_email() pushes gets RQ's default of
   180 s, which the per-recipient run below exceeds;
2. per recipient: the same N through the same worker code with max_batch = 1
   (bench/per_recipient_worker.py), so N HTTP calls;
3. compose: writing the N-recipient outbox in-process (queue_email + commit, nothing sent)
   against a bare SQLAlchemy Core insert() of the same N MailDelivery rows.

It prints a table and writes bench/results/mail_fanout.json (one entry per database kind).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import queue
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from tests.integration.processes import process_tree, signal_each

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "mail_fanout.json"
KEY = "key-bench-" + secrets.token_hex(8)
DOMAIN = "mg.bench.example"
PUBLIC_URL = "https://127.0.0.1:5000"  # production refuses http://; only links in emails use it
TEMPLATE = "email_change_notice"  # any email template; the category makes it a newsletter
BATCH_TARGET = 20.0  # batched must send at least this many times faster than per recipient
COMPOSE_TARGET = 3.0  # writing the outbox may take at most this many times a bare bulk insert
INHERITED = ("TEST_", "FLASK_", "RQ_", "MAIL", "REDIS_", "DATABASE_", "PUBLIC_URL", "APP_ENV", "DYNO")
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


# -- processes ------------------------------------------------------------------------------------


class Process:
    """A child process in its own session, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (RQ's warm shutdown); SIGKILL the whole tree if it lingers."""
        if self.alive():
            try:  # before SIGTERM: the work horse is the worker's child only while the worker lives
                tree = process_tree(self.pid)
            except OSError:  # no /proc: the main process alone
                tree = [self.pid]
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                signal_each(tree, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


class FakeMailgunProcess:
    """``python -m tests.fakes.mailgun`` on a free loopback port, driven over HTTP."""

    def __init__(self, log_path: Path, lifetime: float) -> None:
        self._stderr = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.mailgun", "--port", "0", "--key", KEY, "--domain", DOMAIN]
            + ["--lifetime", str(int(lifetime))],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.base_url = ""
        deadline = time.monotonic() + 30
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic())).strip()
            except queue.Empty:
                raise RuntimeError("the fake Mailgun did not start within 30 s") from None
            if line.startswith("listening "):
                self.base_url = line.split(" ", 1)[1]
            elif line == "ready":
                break
        if not self.base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the fake Mailgun is not on loopback: {self.base_url!r}")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)

    def _call(self, path: str, data: bytes | None = None) -> dict:
        with self._opener.open(f"{self.base_url}{path}", data=data, timeout=30) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, int]:
        return self._call("/_fake/stats")

    def reset(self) -> None:
        self._call("/_fake/reset", data=b"")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._stderr.close()


# -- the app side ---------------------------------------------------------------------------------


def make_app(database_url: str, secret_key: str):
    """The web side of the app on the bench database, without Redis: nothing it writes is sent
    unless the benchmark enqueues the send job itself (and its own mail backend is memory)."""
    from app import create_app
    from config import DevelopmentConfig, engine_options

    class BenchConfig(DevelopmentConfig):
        def fallback_secret_key(self) -> str:
            return secret_key

    config = BenchConfig()
    config.SECRET_KEY = secret_key
    config.SQLALCHEMY_DATABASE_URI = database_url
    config.SQLALCHEMY_ENGINE_OPTIONS = engine_options(database_url)
    config.REDIS_URL = None  # queue_email's job is only kept in the session, never run
    config.REDIS_OPTIONS = {}
    config.RATELIMIT_STORAGE_URI = "memory://"
    config.MAIL_BACKEND = "memory"
    config.PUBLIC_URL = PUBLIC_URL
    app = create_app(config)
    logging.getLogger().setLevel(logging.WARNING)
    return app


def ensure_postgres_database(url: str) -> bool:
    """Create the PostgreSQL database named in ``url`` if it is missing; True if created."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return False
    engine = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database}
            ).scalar()
            if found:
                return False
            name = conn.dialect.identifier_preparer.quote(parsed.database)
            conn.execute(text("CREATE DATABASE " + name))
            return True
    finally:
        engine.dispose()


def drop_postgres_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    engine = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            name = conn.dialect.identifier_preparer.quote(parsed.database)
            conn.execute(text("DROP DATABASE IF EXISTS " + name))
    finally:
        engine.dispose()


def build_schema_and_users(app, recipients: int) -> None:
    from sqlalchemy import insert, text

    from app.extensions import db
    from app.models import User

    with app.app_context():
        db.drop_all()
        db.create_all()
        with db.engine.begin() as conn:
            conn.execute(
                insert(User.__table__),
                [
                    {
                        "email": f"parent{n:06d}@families.example",
                        "name": f"Parent {n}",
                        "password_hash": "!",
                        "mail_key": secrets.token_hex(16),
                    }
                    for n in range(recipients)
                ],
            )
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
        db.session.remove()


def load_users(db):
    from sqlalchemy import select

    from app.models import User

    return list(db.session.scalars(select(User).order_by(User.id)))


def clear_outbox(app) -> None:
    from app.extensions import db
    from app.models import MailDelivery, MailMessage

    with app.app_context(), db.engine.begin() as conn:
        conn.execute(MailDelivery.__table__.delete())
        conn.execute(MailMessage.__table__.delete())


def queue_newsletter(users):
    from app.mail import queue_email
    from app.models import Category

    return queue_email(TEMPLATE, users, category=Category.NEWSLETTERS, name="families")


def status_counts(app, message_id: int) -> dict[str, int]:
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import MailDelivery

    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(
            select(MailDelivery.status, func.count())
            .where(MailDelivery.message_id == message_id)
            .group_by(MailDelivery.status)
        ).all()
    return {str(getattr(status, "value", status)): count for status, count in rows}


# -- (3) compose ----------------------------------------------------------------------------------


class SqlTimer:
    """Time spent inside cursor.execute()/executemany() on an engine."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.seconds = 0.0
        self.statements = 0
        self._started: list[float] = []

    def _before(self, *args) -> None:
        self._started.append(time.perf_counter())

    def _after(self, *args) -> None:
        self.seconds += time.perf_counter() - self._started.pop()
        self.statements += 1

    def __enter__(self) -> SqlTimer:
        from sqlalchemy import event

        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


def time_queue_email(app) -> dict[str, float]:
    """queue_email + commit for every user; where the time goes."""
    from app.extensions import db
    from app.mail.outbox import render_email

    with app.app_context():
        users = load_users(db)
        render_started = time.perf_counter()
        render_email(TEMPLATE, name="families", unsubscribe_url="x", preferences_url="y")
        render = time.perf_counter() - render_started
        with SqlTimer(db.engine) as sql:
            started = time.perf_counter()
            queue_newsletter(users)
            queued = time.perf_counter()
        with SqlTimer(db.engine) as commit_sql:
            db.session.commit()
            committed = time.perf_counter()
        db.session.info.pop("ready_jobs", None)  # no Redis: the job waits in the session; drop it
        db.session.remove()
    call = queued - started
    return {
        "seconds": committed - started,
        "queue_email_seconds": call,
        "render_seconds": render,
        "sql_seconds": sql.seconds,
        "python_seconds": max(0.0, call - sql.seconds - render),
        "statements": sql.statements + commit_sql.statements,
        "commit_seconds": committed - queued,
    }


def time_core_insert(app) -> dict[str, float]:
    """The same rows with a bare Core insert() (one message row, N deliveries, one commit)."""
    from sqlalchemy import insert

    from app.extensions import db
    from app.mail.outbox import render_email
    from app.models import Category, MailDelivery, MailMessage

    with app.app_context():
        users = load_users(db)
        pairs = [(user.id, user.email) for user in users]
        rendered = render_email(TEMPLATE, name="families", unsubscribe_url="x", preferences_url="y")
        subject, text, html = rendered
        db.session.remove()
        with SqlTimer(db.engine) as sql:
            started = time.perf_counter()
            with db.engine.begin() as conn:
                message_id = conn.execute(
                    insert(MailMessage.__table__)
                    .values(
                        category=Category.NEWSLETTERS,
                        template=TEMPLATE,
                        subject=subject,
                        text_body=text,
                        html_body=html,
                    )
                    .returning(MailMessage.__table__.c.id)
                ).scalar_one()
                conn.execute(
                    insert(MailDelivery.__table__),
                    [{"message_id": message_id, "user_id": uid, "to_email": email} for uid, email in pairs],
                )
            finished = time.perf_counter()
    return {"seconds": finished - started, "sql_seconds": sql.seconds, "statements": sql.statements}


def compose_phase(app, recipients: int, repeats: int) -> dict:
    runs: dict[str, list[dict]] = {"queue_email": [], "core_insert": []}
    for _ in range(repeats):
        runs["queue_email"].append(time_queue_email(app))
        clear_outbox(app)
        runs["core_insert"].append(time_core_insert(app))
        clear_outbox(app)

    def median(kind: str) -> dict[str, float]:
        keys = runs[kind][0].keys()
        return {key: statistics.median(run[key] for run in runs[kind]) for key in keys}

    orm, core = median("queue_email"), median("core_insert")
    return {
        "repeats": repeats,
        "queue_email": orm,
        "core_insert": core,
        "ratio": orm["seconds"] / core["seconds"],
        "queue_email_rows_per_second": recipients / orm["seconds"],
        "core_insert_rows_per_second": recipients / core["seconds"],
        "all_runs": runs,
    }


# -- (1) and (2) sending --------------------------------------------------------------------------


def worker_env(database_url: str, redis_url: str, fake: FakeMailgunProcess, tmp: Path, secret_key: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}
    instance = tmp / "worker-instance"
    instance.mkdir(exist_ok=True)
    env.update(
        APP_ENV="production",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY=secret_key,
        PUBLIC_URL=PUBLIC_URL,
        INSTANCE_PATH=str(instance),
        PYTHONUNBUFFERED="1",
        MAIL_BACKEND="mailgun",
        MAILGUN_API_KEY=KEY,
        MAILGUN_DOMAIN=DOMAIN,
        MAIL_FROM=f"Bench School <no-reply@{DOMAIN}>",  # production asks for a sender aligned with it
        MAILGUN_BASE_URL=fake.base_url,
    )
    return env


def wait_until_idle(redis, worker: Process, timeout: float = 60.0) -> None:
    """The worker registered, ran its start-up jobs (sweepers) and waits for work."""
    from rq import Queue, Worker
    from rq.registry import StartedJobRegistry

    deadline = time.monotonic() + timeout
    quiet_since = None
    while True:
        if not worker.alive():
            raise RuntimeError(f"{worker.name} exited:\n{worker.output()}")
        idle = any(w.pid == worker.pid and w.get_state() == "idle" for w in Worker.all(connection=redis))
        empty = all(
            Queue(name, connection=redis).count == 0 and StartedJobRegistry(name, connection=redis).count == 0
            for name in ("mail", "default")
        )
        if idle and empty:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.5:
                return
        else:
            quiet_since = None
        if time.monotonic() > deadline:
            raise RuntimeError(f"{worker.name} did not go idle within {timeout:.0f}s:\n{worker.output()}")
        time.sleep(0.1)


def _log_time(line: str) -> float | None:
    match = _LOG_LINE.match(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def worker_timeline(log_text: str, message_id: int) -> dict[str, float | int | None]:
    """From the worker's log: when the send job started and ended, and the provider calls between."""
    started = finished = None
    calls: list[float] = []
    for line in log_text.splitlines():
        stamp = _log_time(line)
        if stamp is None:
            continue
        if f"send_message({message_id})" in line and "mail:" in line and started is None:
            started = stamp
        elif "mailgun batch" in line and "queued as" in line:
            calls.append(stamp)
        elif f"message {message_id}:" in line and "'sent'" in line:
            finished = stamp
    job = (finished - started) if started is not None and finished is not None else None
    gaps = [b - a for a, b in zip([started, *calls[:-1]], calls, strict=True)] if started and calls else []
    tenth = max(1, len(gaps) // 10)
    return {
        "job_seconds": job,
        "logged_calls": len(calls),
        "mean_seconds_per_call": statistics.mean(gaps) if gaps else None,
        # A per-call cost that grows through the send shows work proportional to what was sent.
        "mean_seconds_per_call_first_tenth": statistics.mean(gaps[:tenth]) if gaps else None,
        "mean_seconds_per_call_last_tenth": statistics.mean(gaps[-tenth:]) if gaps else None,
        "first_call_after_seconds": (calls[0] - started) if started and calls else None,
    }


def send_phase(
    name: str,
    command: list[str],
    app,
    env: dict[str, str],
    redis,
    fake: FakeMailgunProcess,
    recipients: int,
    tmp: Path,
    timeout: float,
) -> dict:
    """Write the newsletter, hand its send job to a fresh worker, time it until every row is sent."""
    from rq import Queue
    from rq.job import JobStatus

    from app.extensions import db
    from app.mail.jobs import send_message

    worker = Process(name, command, env, tmp / f"worker-{name}.log")
    try:
        wait_until_idle(redis, worker)
        fake.reset()
        with app.app_context():
            users = load_users(db)
            started = time.perf_counter()
            message = queue_newsletter(users)
            db.session.commit()
            committed = time.perf_counter()
            message_id = message.id
            db.session.info.pop("ready_jobs", None)
            db.session.remove()
        # The job queue_email() would push after the commit carries RQ's default job timeout
        # (180 s), which one call per recipient for 20,000 people exceeds: RQ would kill the job
        # and leave the rest to the sweeper (a finding of this benchmark; app/jobs.py now allows 30 minutes).
        # So the app's job function is enqueued here, the same way, with room to finish.
        job = Queue("mail", connection=redis).enqueue(
            send_message, message_id, job_timeout=int(timeout), result_ttl=3600
        )
        enqueued = time.perf_counter()
        deadline = enqueued + timeout
        # Watch the job in Redis (cheap) rather than counting rows every few milliseconds: on
        # 2 CPUs that polling would slow the worker and the database being measured.
        while (status := job.get_status(refresh=True)) != JobStatus.FINISHED:
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                result = job.latest_result()
                detail = result.exc_string if result is not None else ""
                raise RuntimeError(f"{name}: the send job {status}:\n{detail[-3000:]}")
            if not worker.alive():
                raise RuntimeError(f"{name} worker exited:\n{worker.output()}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{name}: the send job ran over {timeout:.0f}s\n{worker.output()}")
            time.sleep(0.02)
        done = time.perf_counter()
        counts = status_counts(app, message_id)
        if counts != {"sent": recipients}:
            raise RuntimeError(f"{name}: the job ended with {counts} ({job.return_value()})")
        stats = fake.stats()
        time.sleep(0.2)  # the log line of the job's end
        timeline = worker_timeline(worker.log_path.read_text(errors="replace"), message_id)
    finally:
        worker.stop()
    clear_outbox(app)
    send_seconds = done - enqueued
    return {
        "compose_seconds": committed - started,
        "send_seconds": send_seconds,
        "end_to_end_seconds": done - started,
        "recipients_per_second": recipients / send_seconds,
        "http_calls": stats["requests"],
        "http_attempts": stats["attempts"],
        "recipients_at_provider": stats["recipients"],
        "statuses": counts,
        "job_result": job.return_value(),
        "worker": timeline,
    }


# -- report ---------------------------------------------------------------------------------------


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def report(result: dict) -> str:
    n = result["recipients"]
    batched, single, compose = result["batched"], result["per_recipient"], result["compose"]
    orm, core = compose["queue_email"], compose["core_insert"]
    expected_batched = math.ceil(n / 1000)
    lines = [
        f"Mail fan-out: {n:,} recipients on {result['database']} "
        f"({result['cpus']} CPUs, {result['date']}, commit {result['git_commit']}; "
        f"load {result['load_average_before']} -> {result['load_average_after']})",
        "",
        f"{'':38}{'batched (1,000/call)':>24}{'per recipient (1/call)':>26}",
        f"{'HTTP calls to the fake':38}{batched['http_calls']:>24,}{single['http_calls']:>26,}",
        f"{'  expected':38}{expected_batched:>24,}{n:>26,}",
        f"{'send time (job enqueued -> all sent)':38}{_fmt_s(batched['send_seconds']):>24}"
        f"{_fmt_s(single['send_seconds']):>26}",
        f"{'recipients / second':38}{batched['recipients_per_second']:>24,.0f}"
        f"{single['recipients_per_second']:>26,.1f}",
        f"{'worker time per provider call':38}"
        f"{_ms(batched['worker']['mean_seconds_per_call']):>24}{_ms(single['worker']['mean_seconds_per_call']):>26}",
        f"{'  first / last tenth of the calls':38}"
        f"{_tenths(batched['worker']):>24}{_tenths(single['worker']):>26}",
        f"{'queue_email + commit before it':38}{_fmt_s(batched['compose_seconds']):>24}"
        f"{_fmt_s(single['compose_seconds']):>26}",
        "",
        f"batched / per recipient: {result['send_ratio']:.1f}x  (target >= {BATCH_TARGET:.0f}x: "
        f"{'met' if result['send_ratio'] >= BATCH_TARGET else 'MISSED'})",
        "",
        f"Outbox write, median of {compose['repeats']}:",
        f"  queue_email + commit   {_fmt_s(compose['queue_email']['seconds']):>9}  "
        f"({compose['queue_email_rows_per_second']:,.0f} rows/s)",
        f"  bare Core insert()     {_fmt_s(compose['core_insert']['seconds']):>9}  "
        f"({compose['core_insert_rows_per_second']:,.0f} rows/s)",
        f"  ratio {compose['ratio']:.2f}x  (target <= {COMPOSE_TARGET:.0f}x: "
        f"{'met' if compose['ratio'] <= COMPOSE_TARGET else 'MISSED'})",
        f"  queue_email() {orm['queue_email_seconds']:.2f} s = render {orm['render_seconds']:.2f} s"
        f" + SQL {orm['sql_seconds']:.2f} s + Python {orm['python_seconds']:.2f} s; "
        f"commit {orm['commit_seconds']:.2f} s; {orm['statements']:.0f} statements",
        f"  Core insert(): SQL {core['sql_seconds']:.2f} s in {core['statements']:.0f} statements",
    ]
    return "\n".join(lines)


def _tenths(timeline: dict) -> str:
    first, last = timeline["mean_seconds_per_call_first_tenth"], timeline["mean_seconds_per_call_last_tenth"]
    if first is None or last is None:
        return "-"
    return f"{first * 1000:.0f} / {last * 1000:.0f} ms"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def run_facts(load_before: tuple[float, float, float]) -> dict:
    """When, where and on what code a benchmark ran, for its results file and its heading."""
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        # Other work on the machine slows every figure: the 1-minute load around the run.
        "load_average_before": round(load_before[0], 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_results(path: Path, result: dict) -> None:
    """Keep one entry per database kind, so an SQLite and a PostgreSQL run sit side by side."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = json.loads(path.read_text())
        runs = existing.get("runs", {}) if isinstance(existing, dict) else {}
    except (OSError, ValueError):
        runs = {}
    runs[result["database"]] = result
    path.write_text(json.dumps({"benchmark": "mail_fanout", "runs": runs}, indent=2, default=str) + "\n")


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20000)
    parser.add_argument("--database-url", help="PostgreSQL URL (default: an SQLite file in a temp dir)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13", help="FLUSHED before the run")
    parser.add_argument("--repeats", type=int, default=3, help="outbox write measurements (median)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per send phase")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.recipients < 1:
        parser.error("--recipients must be at least 1")

    from redis import Redis

    from config import database_url as normalise

    tmp = Path(tempfile.mkdtemp(prefix="bench-mail-"))
    secret_key = secrets.token_urlsafe(32)
    url = normalise(args.database_url) if args.database_url else f"sqlite:///{tmp / 'bench.db'}"
    created_database = ensure_postgres_database(url)
    redis = Redis.from_url(args.redis_url, socket_timeout=10, socket_connect_timeout=5)
    redis.ping()
    redis.flushdb()
    load_before = os.getloadavg()
    fake = app = None
    try:
        fake = FakeMailgunProcess(tmp / "fake-mailgun.log", lifetime=args.timeout * 2 + 600)
        app = make_app(url, secret_key)
        print(f"building {args.recipients:,} users on {url.split(':', 1)[0]} ...", flush=True)
        build_schema_and_users(app, args.recipients)
        print("(3) outbox write: queue_email + commit against a bare Core insert ...", flush=True)
        compose = compose_phase(app, args.recipients, args.repeats)
        env = worker_env(url, args.redis_url, fake, tmp, secret_key)
        phases = {}
        for key, command, label in (
            ("batched", [sys.executable, "worker.py"], "(1) batched send through worker.py"),
            (
                "per_recipient",
                [sys.executable, "-m", "bench.per_recipient_worker"],
                "(2) one call per recipient through bench/per_recipient_worker.py",
            ),
        ):
            print(f"{label} ...", flush=True)
            phases[key] = send_phase(key, command, app, env, redis, fake, args.recipients, tmp, args.timeout)
        with app.app_context():
            from app.extensions import db

            database = db.engine.dialect.name
        result = {
            **run_facts(load_before),
            "database": database,
            "recipients": args.recipients,
            "batched": phases["batched"],
            "per_recipient": phases["per_recipient"],
            "send_ratio": phases["batched"]["recipients_per_second"]
            / phases["per_recipient"]["recipients_per_second"],
            "compose": compose,
            "targets": {"send_ratio_at_least": BATCH_TARGET, "compose_ratio_at_most": COMPOSE_TARGET},
        }
        expected = {"batched": math.ceil(args.recipients / 1000), "per_recipient": args.recipients}
        result["http_calls_as_expected"] = all(phases[k]["http_calls"] == v for k, v in expected.items())
        print()
        print(report(result))
        if not result["http_calls_as_expected"]:
            print(f"\nWARNING: HTTP calls differ from the expected {expected}")
        write_results(args.output, result)
        print(f"\nresults: {args.output}")
        return 0
    finally:
        if app is not None:
            from app.extensions import db

            with app.app_context():
                if not created_database:
                    db.drop_all()
                db.session.remove()
                db.engine.dispose()
        if fake is not None:
            fake.stop()
        redis.flushdb()
        redis.close()
        if created_database:
            drop_postgres_database(url)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
