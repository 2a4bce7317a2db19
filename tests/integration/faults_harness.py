"""The fault matrix: one announcement (or a batch of support requests) per fault, real processes only.

Shared by tests/integration/test_fault_matrix.py (small N, one test per scenario) and
bench/faults.py (N = 3,000 and 20,000, a table). No pytest here: what goes wrong in the set-up
raises :class:`~tests.integration.processes.ProcessFailed`; what a scenario observed comes
back as an :class:`Outcome`, which the caller judges (``outcome.problems()``).

Every scenario runs on real PostgreSQL and Redis with real ``python worker.py`` processes and
the stand-ins of tests/fakes/ as their own processes (``python -m tests.fakes.serve``), which
count every recipient (every ticket) they accept:

1. the users and one school announcement to N of them are written (or M support requests);
2. the stand-in is scripted so that the fault lands on one provider call in the middle of the
   send (``fault_call``): held for a while, answered 500 or 429, hung past the client's timeout,
   or taken and the connection dropped;
3. once that call has reached the stand-in, the scenario's fault is injected (a worker
   SIGKILLed with its work horse and scheduler, SIGTERMed, Redis or PostgreSQL restarted);
4. the workers run under a supervisor that restarts a worker that exited, as a platform
   restarts a crashed dyno or starts the new release on a deploy (a worker the scenario
   *retires* stays down: the other one must take over);
5. nothing is driven by hand: no sweep is run, no lease is aged. The outcome is read from the
   database (every delivery sent) and from the stand-in (who received it how many times).

A scenario passes with 0 missing, 0 duplicates and everything sent within ``bound`` seconds
of the fault (60 s plus the provider's own delay: the hold, the Retry-After).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.integration.processes import (
    NO_PROXY,
    ROOT,
    ProcessFailed,
    WorkerProcess,
    child_env,
    kill_worker_tree,
    process_tree,
    redis_answers,
    signal_each,
    wait_until,
    worker_is_idle,
)

KEY = "key-faults-" + secrets.token_hex(6)
DOMAIN = "mg.faults.example"
ZENDESK_EMAIL = "agent@support.example"
ZENDESK_TOKEN = "zd-faults-" + secrets.token_hex(6)  # noqa: S105 - the stand-in's, loopback only
PUBLIC_URL = "http://127.0.0.1:5000"
BATCH = 1000  # MailgunBackend.max_batch: recipients per provider call
PRIVATE_PORTS = range(16300, 16400)  # private redis-server and PostgreSQL clusters live here
PLATFORM_GRACE = 30.0  # a platform SIGKILLs a worker this long after its SIGTERM (Heroku: 30 s)
RESTART_AFTER = 1.0  # the supervisor restarts an exited worker after this long
SETTLE = 3.0  # after all are sent: anything still on its way to the stand-in shows by then
START_TIMEOUT = 60.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Settings:
    """What the workers run with: production's defaults but for shorter provider timeouts.

    MAIL_LEASE_SECONDS and SWEEP_EVERY_SECONDS are production's. The Events lag is longer than
    the client's timeout plus how long a hanging call may still be taken after it
    (``hang_past_timeout``) plus the stand-in's event delay, as a real configuration must be.
    """

    mailgun_timeout: float = 8.0
    events_lag: float = 15.0
    events_delay: float = 2.0  # the stand-in shows an accepted event this late (eventual consistency)
    lease: float = 10.0
    sweep_every: int = 10
    retry_base: float = 3.0
    support_retry_base: float = 2.0
    zendesk_timeout: float = 3.0
    hold: float = 3.0  # a call the fault lands in is held this long, then taken
    slow: float = 10.0  # "a slow provider call" during a deploy's SIGTERM
    hang_past_timeout: float = 2.0
    retry_after: int = 3
    zendesk_down_for: float = 8.0
    zendesk_unanswered: int = 5  # tickets made and left unanswered (each costs the client its timeout)
    crash_bound: float = 60.0

    def worker_env(self) -> dict[str, str]:
        """The settings as a worker's environment."""
        return {
            "MAILGUN_TIMEOUT": str(self.mailgun_timeout),
            "MAILGUN_EVENTS_LAG_SECONDS": str(self.events_lag),
            "MAIL_LEASE_SECONDS": str(self.lease),
            "SWEEP_EVERY_SECONDS": str(self.sweep_every),
            "MAIL_RETRY_BASE_SECONDS": str(self.retry_base),
            "SUPPORT_RETRY_BASE_SECONDS": str(self.support_retry_base),
            "ZENDESK_TIMEOUT": str(self.zendesk_timeout),
        }


# -- what a scenario is, and what it observed ------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One fault: how the stand-in answers the fault call, and what is done once it is in flight."""

    key: str
    title: str
    kind: str = "mail"  # "mail": an announcement to N; "support": support requests to Zendesk
    workers: int = 1
    fault_answer: Callable[[Settings], dict | list] | None = None  # the stand-in's answer to the fault call
    inject: Callable[[Run], None] | None = None  # done once the fault call is in flight
    private_redis: bool = False
    private_postgres: bool = False
    provider_delay: Callable[[Settings], float] = lambda settings: 0.0  # the provider's own part of the bound
    needs: str = ""  # a change this scenario relies on, for the report when it fails without it

    def bound(self, settings: Settings) -> float:
        """Everything sent within this many seconds of the fault."""
        return settings.crash_bound + self.provider_delay(settings)


@dataclass
class Outcome:
    """What one scenario observed."""

    scenario: str
    title: str
    expected: int
    delivered: int = 0
    duplicates: int = 0
    missing: int = 0
    seconds: float | None = None  # from the fault until all were sent; None: not within the wait
    bound: float = 0.0
    total_seconds: float | None = None  # from writing the announcement
    statuses: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    needs: str = ""

    def problems(self) -> list[str]:
        """Why this scenario failed (empty when it passed)."""
        found = []
        if self.missing:
            found.append(f"{self.missing} of {self.expected} never reached the stand-in")
        if self.duplicates:
            found.append(f"{self.duplicates} received twice (or more)")
        if self.seconds is None:
            found.append(f"not all sent within {self.bound:.0f} s of the fault: {self.statuses}")
        elif self.seconds > self.bound:
            found.append(f"all sent {self.seconds:.1f} s after the fault, over the {self.bound:.0f} s bound")
        return found

    @property
    def passed(self) -> bool:
        return not self.problems()

    def describe(self) -> str:
        """One paragraph for a failure message or a log."""
        took = "never" if self.seconds is None else f"{self.seconds:.1f} s"
        lines = [
            f"{self.scenario}: expected {self.expected}, delivered {self.delivered}, duplicates "
            f"{self.duplicates}, missing {self.missing}, all sent after {took} (bound {self.bound:.0f} s); "
            f"statuses {self.statuses}",
            *self.problems(),
            *self.notes,
        ]
        if self.needs and not self.passed:
            lines.append(f"relies on: {self.needs}")
        return "\n".join(lines)


# -- stand-ins, private Redis and PostgreSQL ---------------------------------------------------------


def _http(url: str, payload: object | None = None) -> dict:
    """GET (or POST JSON to) a stand-in's control endpoint on loopback."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.build_opener(NO_PROXY).open(request, timeout=5) as response:
        return json.loads(response.read() or b"{}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def private_port() -> int:
    """A port of PRIVATE_PORTS that nothing listens on now (tried in random order: two runs at once
    rarely reach for the same one)."""
    for port in random.sample(PRIVATE_PORTS, len(PRIVATE_PORTS)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ProcessFailed(f"no free port in {PRIVATE_PORTS}")


class StandIn:
    """``python -m tests.fakes.serve <kind>`` on a loopback port, as its own process."""

    def __init__(self, kind: str, options: list[str], log_path: Path, port: int | None = None) -> None:
        self.kind, self.options, self.log_path = kind, options, log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> StandIn:
        """Start it and wait for "ready"."""
        log = self.log_path.open("ab")
        command = [sys.executable, "-m", "tests.fakes.serve", self.kind, "--port", str(self.port)]
        command += [*self.options, "--lifetime", "3600"]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        assert self.proc.stdout is not None
        first, second = self.proc.stdout.readline().split(), self.proc.stdout.readline().strip()
        if not first or first[0] != "listening" or second != "ready":
            raise ProcessFailed(f"the {self.kind} stand-in did not start: {first} {second}")
        if first[1] != self.url:
            raise ProcessFailed(f"the {self.kind} stand-in listens on {first[1]}, not {self.url}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def get(self, path: str) -> dict:
        return _http(self.url + path)

    def post(self, path: str, payload: object) -> dict:
        return _http(self.url + path, payload)

    def stats(self) -> dict:
        return self.get("/_fake/stats")


def _as_postgres_user() -> list[str]:
    """The command prefix running a PostgreSQL binary as a non-root user (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ProcessFailed("running as root and there is no postgres user to run initdb as") from None
    return ["runuser", "-u", "postgres", "--"]


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are (PG_BINDIR, pg_config, or /usr/lib/postgresql/<newest>/bin)."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        found = Path(
            subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, check=True, text=True
            ).stdout.strip()
        )
        if (found / "initdb").exists():
            return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb under a temp dir), to restart mid-send."""

    def __init__(self, workdir: Path) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise ProcessFailed("PostgreSQL's initdb/pg_ctl not found (set PG_BINDIR)")
        self.bindir = bindir
        self.port = private_port()
        # Not under the caller's workdir: the postgres user must reach it (pytest's tmp dirs are 0700).
        self.dir = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/faults"
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str) -> None:
        command = [*_as_postgres_user(), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise ProcessFailed(f"{' '.join(args[:2])} failed: {result.stderr[-2000:]}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            action,
            *extra,
        )

    def start(self) -> PrivatePostgres:
        """initdb (trust on loopback), start, create database ``faults``."""
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"
        )
        self._ctl("start")
        self._run(
            str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "faults"
        )
        return self

    def stop_fast(self) -> None:
        """Stop now (fast: every connection is cut, nothing lost)."""
        self._ctl("stop", "-m", "fast")

    def start_again(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        with contextlib.suppress(ProcessFailed):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server of its own with no persistence: a restart comes back EMPTY."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise ProcessFailed("redis-server not found on PATH")
        self.port = private_port()
        self.dir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> PrivateRedis:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        command += ["--dir", str(self.dir), "--protected-mode", "no"]
        log = (self.dir / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(self.answers, timeout=15, what="the private redis-server to answer PING")
        if self.proc.poll() is not None:  # another server took the port meanwhile: it answered, not ours
            raise ProcessFailed(f"redis-server could not listen on {self.port}")
        return self

    def answers(self) -> bool:
        """The private server answers PING."""
        return redis_answers(self.url, timeout=1)

    def kill(self) -> None:
        """SIGKILL: gone at once, with everything it held."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()


# -- workers under a supervisor -------------------------------------------------------------------------


class Fleet:
    """The worker processes, restarted when one exits (a platform restarts a dead dyno)."""

    def __init__(self, env: dict[str, str], workdir: Path, redis_url: str) -> None:
        self.env, self.workdir, self.redis_url = env, workdir, redis_url
        self.workers: list[WorkerProcess] = []
        self.retired: set[int] = set()  # pids the scenario keeps down
        self.terminated: dict[int, float] = {}  # pid -> when it was sent SIGTERM
        self.exited_at: dict[int, float] = {}  # pid -> when the supervisor saw it gone
        self.replaced: set[int] = set()
        self.restarts = 0
        self._started = 0

    def _spawn(self) -> WorkerProcess:
        self._started += 1
        worker = WorkerProcess(self.env, self.workdir / f"worker-{self._started}.log")
        self.workers.append(worker)
        return worker

    def start(self, count: int, redis) -> None:
        """``count`` workers, each registered and idle."""
        for _ in range(count):
            worker = self._spawn()
            wait_until(
                lambda worker=worker: worker_is_idle(redis, worker),
                timeout=START_TIMEOUT,
                what="a worker to register and go idle",
                process=worker,
            )

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.proc.poll() is None]

    def kill(self, worker: WorkerProcess, *, retire: bool = False) -> list[int]:
        """SIGKILL the worker, its scheduler and work horse; ``retire``: do not restart it."""
        if retire:
            self.retired.add(worker.pid)
        return kill_worker_tree(worker)

    def terminate(self, worker: WorkerProcess) -> None:
        """SIGTERM, as a platform does on a deploy (SIGKILL follows PLATFORM_GRACE later)."""
        self.terminated[worker.pid] = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)

    def supervise(self) -> None:
        """SIGKILL what outlived its grace; restart what exited (unless retired)."""
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.proc.poll() is None:
                since = self.terminated.get(worker.pid)
                if since is not None and now - since > PLATFORM_GRACE:
                    signal_each(process_tree(worker.pid), signal.SIGKILL)
                continue
            if worker.pid in self.retired or worker.pid in self.replaced:
                continue
            if now - self.exited_at.setdefault(worker.pid, now) >= RESTART_AFTER:
                self.replaced.add(worker.pid)
                self.restarts += 1
                self._spawn()

    def stop(self) -> None:
        """Warm shutdown of every worker still running (killed after 15 s)."""
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.stop()
            with contextlib.suppress(Exception):
                signal_each(process_tree(worker.pid)[1:], signal.SIGKILL)


def busy_worker(redis, workers: list[WorkerProcess]) -> WorkerProcess | None:
    """The one of ``workers`` RQ shows working a job, if any."""
    from rq import Worker

    busy = {w.pid for w in Worker.all(connection=redis) if w.get_state() == "busy"}
    return next((w for w in workers if w.pid in busy and w.proc.poll() is None), None)


def scheduler_holder(redis) -> str | None:
    """The RQ worker name holding the scheduler lock of the "mail" queue, if any."""
    from rq.scheduler import RQScheduler

    value = redis.get(RQScheduler.get_locking_key("mail"))
    return value.decode() if value else None


# -- the app side: writing the announcement, reading the outbox ---------------------------------------


def make_app(database_url: str, redis_url: str | None):
    """The web side of the app on this database and Redis (its own mail backend sends nothing)."""
    from app import create_app
    from config import DevelopmentConfig, engine_options
    from config import database_url as normalise

    config = DevelopmentConfig()
    config.SQLALCHEMY_DATABASE_URI = normalise(database_url)
    config.SQLALCHEMY_ENGINE_OPTIONS = engine_options(config.SQLALCHEMY_DATABASE_URI)
    config.REDIS_URL, config.REDIS_OPTIONS = redis_url, {}
    config.RATELIMIT_STORAGE_URI = "memory://"
    config.MAIL_BACKEND = "memory"
    config.SECRET_KEY = "faults-" + secrets.token_hex(16)
    config.PUBLIC_URL = PUBLIC_URL
    config.SHOW_DEMO_ACCOUNTS = False
    config.DEV_MAILBOX = False
    return create_app(config)


def reset_schema(app) -> None:
    """Every table dropped and created again, empty."""
    from app.extensions import db

    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.create_all()
        db.session.remove()


def make_users(app, count: int, prefix: str) -> list[str]:
    """Insert ``count`` accounts in one statement; their addresses."""
    from sqlalchemy import insert

    from app.extensions import db
    from app.models import User

    emails = [f"{prefix}{n:06d}@families.example" for n in range(count)]
    rows = [
        {"email": e, "name": f"Parent {n}", "password_hash": "!", "mail_key": secrets.token_hex(16)}
        for n, e in enumerate(emails)
    ]
    with app.app_context():
        db.session.execute(insert(User), rows)
        db.session.commit()
        db.session.remove()
    return emails


def write_announcement(app, prefix: str) -> int:
    """A school announcement to every account whose address starts with ``prefix``, committed (its
    send job goes to Redis at the commit)."""
    from sqlalchemy import select

    from app.extensions import db
    from app.mail import queue_email
    from app.models import Category, User

    with app.app_context():
        users = db.session.scalars(select(User).where(User.email.like(f"{prefix}%")).order_by(User.id)).all()
        message = queue_email(
            "email_change_notice", users, category=Category.SCHOOL_ANNOUNCEMENTS, name="families"
        )
        db.session.commit()
        message_id = message.id
        db.session.remove()
    return message_id


def submit_support_requests(app, count: int, prefix: str) -> list[str]:
    """``count`` contact-form messages, committed (each forwarding job goes to Redis); their references."""
    from app.extensions import db
    from app.support.services import submit_contact

    references = []
    with app.app_context():
        for n in range(count):
            made = submit_contact(
                user_id=None,
                name=f"Parent {n}",
                email=f"{prefix}{n:05d}@families.example",
                message=f"Question {n}",
            )
            db.session.commit()
            references.append(made.reference)
        db.session.remove()
    return references


def _read(app, query) -> list | None:
    """Run a read on a fresh transaction; None while the database does not answer."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from app.extensions import db

    with app.app_context():
        try:
            return list(db.session.execute(query))
        except (OperationalError, DBAPIError):
            db.session.rollback()
            db.engine.dispose()
            return None
        finally:
            db.session.remove()


def delivery_statuses(app, message_id: int) -> dict[str, int] | None:
    from sqlalchemy import func, select

    from app.models import MailDelivery

    query = (
        select(MailDelivery.status, func.count())
        .where(MailDelivery.message_id == message_id)
        .group_by(MailDelivery.status)
    )
    found = _read(app, query)
    return None if found is None else {status.value: count for status, count in found}


def support_statuses(app, references: list[str]) -> dict[str, int] | None:
    from sqlalchemy import func, select

    from app.models import SupportRequest

    query = (
        select(SupportRequest.status, func.count())
        .where(SupportRequest.reference.in_(references))
        .group_by(SupportRequest.status)
    )
    found = _read(app, query)
    return None if found is None else {status.value: count for status, count in found}


# -- one run -------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one scenario's run holds: services, workers, stand-ins, timers."""

    scenario: Scenario
    settings: Settings
    app: object
    redis: object
    redis_url: str
    fleet: Fleet
    private_redis: PrivateRedis | None = None
    private_postgres: PrivatePostgres | None = None
    mailgun: StandIn | None = None
    zendesk: StandIn | None = None
    later: list[tuple[float, Callable[[], None]]] = field(default_factory=list)  # (at, action)
    notes: list[str] = field(default_factory=list)
    fault_at: float = 0.0

    def after(self, seconds: float, action: Callable[[], None]) -> None:
        """Do ``action`` this many seconds after the fault."""
        self.later.append((self.fault_at + seconds, action))

    def due_actions(self) -> None:
        now = time.monotonic()
        for item in [item for item in self.later if item[0] <= now]:
            self.later.remove(item)
            item[1]()


class Matrix:
    """Runs scenarios on a database and (unless private) a Redis, with N recipients each."""

    def __init__(
        self,
        database_url: str,
        redis_url: str | None,
        workdir: Path,
        recipients: int,
        support_requests: int,
        settings: Settings | None = None,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        for url in (database_url, redis_url or "redis://127.0.0.1"):
            host = urlsplit(url.replace("+psycopg", "")).hostname
            if host not in LOOPBACK:
                raise ProcessFailed(f"the fault matrix runs on loopback only, not {host!r}")
        self.database_url, self.redis_url = database_url, redis_url
        self.workdir, self.recipients, self.support_requests = workdir, recipients, support_requests
        self.settings = settings or Settings()
        self.log = log
        self._apps: dict[tuple[str, str | None], object] = {}

    def app_for(self, database_url: str, redis_url: str | None):
        key = (database_url, redis_url)
        if key not in self._apps:
            self._apps[key] = make_app(database_url, redis_url)
        return self._apps[key]

    def close(self) -> None:
        from app.extensions import db

        for app in self._apps.values():
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
        self._apps.clear()

    def fault_call(self) -> int:
        """Which provider call (1-based) the fault lands on: the middle one of the send."""
        calls = -(-self.recipients // BATCH)
        return max(1, (calls + 1) // 2)

    def run(self, scenario: Scenario) -> Outcome:
        """Run one scenario from empty services to its outcome; everything started is stopped."""
        workdir = Path(tempfile.mkdtemp(prefix=f"{scenario.key}-", dir=self.workdir))
        with self._services(scenario, workdir) as run:
            outcome = self._support(run) if scenario.kind == "support" else self._mail(run)
        outcome.notes = run.notes + outcome.notes
        self.log(outcome.describe())
        return outcome

    @contextlib.contextmanager
    def _services(self, scenario: Scenario, workdir: Path) -> Iterator[Run]:
        from redis import Redis

        stack = contextlib.ExitStack()
        with stack:
            private_redis = private_postgres = None
            if scenario.private_redis or self.redis_url is None:
                private_redis = PrivateRedis(workdir).start()
                stack.callback(private_redis.stop)
            redis_url = private_redis.url if private_redis else self.redis_url
            assert redis_url is not None
            redis = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
            stack.callback(redis.close)
            redis.flushdb()
            database_url = self.database_url
            if scenario.private_postgres:
                private_postgres = PrivatePostgres(workdir).start()
                stack.callback(private_postgres.stop)
                database_url = private_postgres.url
            app = self.app_for(database_url, redis_url)
            # Empty tables: a message an earlier scenario left unsent would be swept into this one.
            reset_schema(app)
            if private_postgres is not None or private_redis is not None:
                # An app per private service: its connections go with the service.
                stack.callback(self._forget_app, database_url, redis_url)
            mailgun = StandIn(
                "mailgun",
                ["--key", KEY, "--domain", DOMAIN, "--events-delay", str(self.settings.events_delay)],
                workdir / "mailgun.log",
            ).start()
            stack.callback(mailgun.stop)
            zendesk = StandIn(
                "zendesk", ["--email", ZENDESK_EMAIL, "--token", ZENDESK_TOKEN], workdir / "zendesk.log"
            )
            stack.callback(zendesk.stop)
            env = child_env(
                database_url,
                redis_url,
                workdir / "instance",
                public_url=PUBLIC_URL,
                MAIL_BACKEND="mailgun",
                MAILGUN_API_KEY=KEY,
                MAILGUN_DOMAIN=DOMAIN,
                MAILGUN_BASE_URL=mailgun.url,
                ZENDESK_SUBDOMAIN="faults",
                ZENDESK_EMAIL=ZENDESK_EMAIL,
                ZENDESK_API_TOKEN=ZENDESK_TOKEN,
                ZENDESK_BASE_URL=zendesk.url,
                **self.settings.worker_env(),
            )
            (workdir / "instance").mkdir()
            fleet = Fleet(env, workdir, redis_url)
            stack.callback(fleet.stop)
            fleet.start(scenario.workers, redis)
            yield Run(
                scenario,
                self.settings,
                app,
                redis,
                redis_url,
                fleet,
                private_redis,
                private_postgres,
                mailgun,
                zendesk,
            )

    def _forget_app(self, database_url: str, redis_url: str | None) -> None:
        from app.extensions import db

        app = self._apps.pop((database_url, redis_url), None)
        if app is not None:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()

    # -- an announcement ------------------------------------------------------------------------------

    def _mail(self, run: Run) -> Outcome:
        scenario, settings = run.scenario, self.settings
        assert run.mailgun is not None
        k = self.fault_call()
        answer = scenario.fault_answer(settings) if scenario.fault_answer else {"delay": 0}
        run.mailgun.post("/_fake/script", [{"delay": 0}] * (k - 1) + [answer])
        prefix = f"{scenario.key.replace('-', '')}{secrets.token_hex(2)}-"
        emails = make_users(run.app, self.recipients, prefix)
        written_at = time.monotonic()
        message_id = write_announcement(run.app, prefix)
        wait_until(
            lambda: run.mailgun.stats()["attempts"] >= k,
            timeout=START_TIMEOUT,
            what=f"provider call {k} to reach the stand-in",
        )
        run.fault_at = time.monotonic()
        run.notes.append(f"fault on provider call {k} of {-(-self.recipients // BATCH)}")
        if scenario.inject is not None:
            scenario.inject(run)
        bound = scenario.bound(settings)
        sent_at = self._wait(
            run, lambda: _all_of(delivery_statuses(run.app, message_id), "sent", len(emails)), bound
        )
        time.sleep(SETTLE)
        counts = Counter(run.mailgun.get("/_fake/recipients")["counts"])
        stats = run.mailgun.stats()
        unexpected = set(counts) - set(emails)
        if unexpected:
            run.notes.append(f"{len(unexpected)} addresses at the stand-in that were never written")
        run.notes.append(
            f"stand-in: {stats['requests']} calls taken, {stats['attempts']} made, "
            f"{stats['dropped']} dropped, "
            f"{stats['event_requests']} Events API requests; worker restarts {run.fleet.restarts}"
        )
        statuses = delivery_statuses(run.app, message_id) or {}
        return _outcome(run, emails, counts, (written_at, sent_at), bound, statuses)

    # -- support requests -----------------------------------------------------------------------------

    def _support(self, run: Run) -> Outcome:
        scenario, settings = run.scenario, self.settings
        assert run.zendesk is not None
        count = self.support_requests
        if scenario.fault_answer is None:  # Zendesk down: nothing listens until it comes back
            written_at = run.fault_at = time.monotonic()
            references = submit_support_requests(run.app, count, f"{scenario.key}-")
            run.after(settings.zendesk_down_for, run.zendesk.start)
            run.notes.append(f"Zendesk not listening for the first {settings.zendesk_down_for:.0f} s")
        else:
            run.zendesk.start()
            faults = scenario.fault_answer(settings)
            run.zendesk.post("/_fake/faults", faults)
            written_at = run.fault_at = time.monotonic()
            references = submit_support_requests(run.app, count, f"{scenario.key}-")
        bound = scenario.bound(settings)
        done_at = self._wait(
            run, lambda: _all_of(support_statuses(run.app, references), "forwarded", count), bound
        )
        time.sleep(SETTLE)
        counts = Counter(run.zendesk.get("/_fake/tickets")["counts"]) if run.zendesk.proc else Counter()
        stats = run.zendesk.stats() if run.zendesk.proc else {}
        run.notes.append(f"Zendesk stand-in: {stats}; worker restarts {run.fleet.restarts}")
        statuses = support_statuses(run.app, references) or {}
        return _outcome(run, references, counts, (written_at, done_at), bound, statuses)

    def _wait(self, run: Run, done: Callable[[], bool], bound: float) -> float | None:
        """Supervise until ``done()`` or a little past the bound; when it was done, or None."""
        deadline = run.fault_at + bound + 5
        while time.monotonic() < deadline:
            run.due_actions()
            run.fleet.supervise()
            if done():
                return time.monotonic()
            time.sleep(0.2)
        for _, action in list(run.later):  # a service still to come back must be back for the read
            with contextlib.suppress(Exception):
                action()
        return None


def _outcome(
    run: Run,
    expected: list[str],
    counts: Counter,
    times: tuple[float, float | None],
    bound: float,
    statuses: dict[str, int],
) -> Outcome:
    """What a scenario came to: each expected key counted at the stand-in, and how long it took."""
    written_at, done_at = times
    return Outcome(
        scenario=run.scenario.key,
        title=run.scenario.title,
        expected=len(expected),
        delivered=sum(1 for key in expected if counts.get(key)),
        duplicates=sum(n - 1 for n in counts.values() if n > 1),
        missing=sum(1 for key in expected if not counts.get(key)),
        seconds=None if done_at is None else done_at - run.fault_at,
        total_seconds=None if done_at is None else done_at - written_at,
        bound=bound,
        statuses=statuses,
        needs=run.scenario.needs,
    )


def _all_of(statuses: dict[str, int] | None, wanted: str, total: int) -> bool:
    return statuses is not None and statuses.get(wanted, 0) == total


# -- the scenarios -----------------------------------------------------------------------------------


def _held(settings: Settings) -> dict:
    """The fault call is held a while (the fault lands in it), then taken."""
    return {"delay": settings.hold}


def _kill_and_restart(run: Run) -> None:
    """SIGKILL the worker making the call (work horse and scheduler too); the supervisor restarts it."""
    victim = busy_worker(run.redis, run.fleet.alive())
    if victim is None:
        raise ProcessFailed("no worker is busy with the send")
    holder = scheduler_holder(run.redis)
    killed = run.fleet.kill(victim)
    run.notes.append(
        f"killed {len(killed)} processes (worker, scheduler, work horse); scheduler lock held by {holder}"
    )


def _kill_busy_of_two(run: Run) -> None:
    """SIGKILL the busy one of two workers and keep it down: the other must take over."""
    victim = busy_worker(run.redis, run.fleet.alive())
    if victim is None:
        raise ProcessFailed("no worker is busy with the send")
    from tests.integration.processes import rq_worker_name

    victim_name = rq_worker_name(run.redis, victim)
    held = scheduler_holder(run.redis) == victim_name
    killed = run.fleet.kill(victim, retire=True)
    run.notes.append(
        f"killed {len(killed)} processes of the busy worker, not restarted; it "
        f"{'held' if held else 'did not hold'} "
        "RQ's scheduler lock"
    )


def _sigterm(run: Run) -> None:
    """A deploy: SIGTERM in a slow call; SIGKILL after the platform's grace; a new worker starts."""
    victim = busy_worker(run.redis, run.fleet.alive())
    if victim is None:
        raise ProcessFailed("no worker is busy with the send")
    run.fleet.terminate(victim)


def _restart_redis_empty(run: Run) -> None:
    """SIGKILL Redis while the call is held; bring it back empty after the provider's 503 came."""
    assert run.private_redis is not None
    run.private_redis.kill()
    run.after(run.settings.hold + 2.0, run.private_redis.start)
    run.notes.append(
        f"Redis SIGKILLed in the call, the call answered 503 {run.settings.hold:.0f} s later "
        "(its retry could "
        f"not be scheduled), Redis back EMPTY at {run.settings.hold + 2:.0f} s"
    )


def _restart_postgres(run: Run) -> None:
    """Stop PostgreSQL while the call is held, start it again after the provider has answered.

    The answer then comes while the database is down: the run cannot record it, and the batch
    must be found again (asked of the provider) rather than lost or sent twice.
    """
    assert run.private_postgres is not None
    started = time.monotonic()
    run.private_postgres.stop_fast()
    stopped_in = time.monotonic() - started
    back_after = run.settings.hold + 2.0
    run.after(back_after, run.private_postgres.start_again)
    run.notes.append(
        f"PostgreSQL stopped ({stopped_in:.1f} s) in the held call, started again {back_after:.0f} s "
        "after the "
        "fault (the provider answered in between)"
    )


RELIES_ON_SCHEDULE = (
    "the worker branch: repeating jobs re-registered on every heartbeat, stale scheduler lock released, "
    "sweeper every SWEEP_EVERY_SECONDS (worker.py hard-codes 120 s)"
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "sigkill-restart",
        "worker + work horse SIGKILLed mid-call, restarted",
        fault_answer=_held,
        inject=_kill_and_restart,
        provider_delay=lambda s: s.hold,
        needs="a restarted worker running the scheduler within 60 s (RQ's lock outlives its holder by 61 s); "
        + RELIES_ON_SCHEDULE,
    ),
    Scenario(
        "two-workers-one-killed",
        "two workers, the busy one SIGKILLed, not restarted",
        workers=2,
        fault_answer=_held,
        inject=_kill_busy_of_two,
        provider_delay=lambda s: s.hold,
        needs="the survivor running the scheduler when the victim held its lock; " + RELIES_ON_SCHEDULE,
    ),
    Scenario(
        "sigterm-slow-call",
        "SIGTERM (a deploy) during a slow provider call",
        fault_answer=lambda s: {"delay": s.slow},
        inject=_sigterm,
        provider_delay=lambda s: s.slow,
        needs="warm shutdown using ~25 s of the platform's 30 s grace (HerokuWorker cuts the job at 6 s); "
        + RELIES_ON_SCHEDULE,
    ),
    Scenario(
        "redis-restarted-empty",
        "Redis SIGKILLed mid-send, restarted EMPTY",
        fault_answer=lambda s: {"status": 503, "body": {"message": "Service Unavailable"}, "delay": s.hold},
        inject=_restart_redis_empty,
        private_redis=True,
        provider_delay=lambda s: s.hold + 2.0,
        needs="repeating jobs re-registered on every heartbeat (worker.py registers them at start only)",
    ),
    Scenario(
        "postgres-restarted",
        "PostgreSQL restarted mid-send",
        fault_answer=_held,
        inject=_restart_postgres,
        private_postgres=True,
        provider_delay=lambda s: s.hold + 2.0,
        needs=RELIES_ON_SCHEDULE,
    ),
    Scenario(
        "provider-500",
        "provider answers 500",
        fault_answer=lambda s: [500, {"message": "Internal Server Error"}],
    ),
    Scenario(
        "provider-429",
        "provider answers 429 with Retry-After",
        fault_answer=lambda s: [429, {"message": "Too Many Requests"}, {"Retry-After": str(s.retry_after)}],
        provider_delay=lambda s: float(s.retry_after),
    ),
    Scenario(
        "provider-hangs",
        "provider hangs past the client timeout (then takes the batch)",
        fault_answer=lambda s: {"delay": s.mailgun_timeout + s.hang_past_timeout},
        provider_delay=lambda s: s.mailgun_timeout + s.hang_past_timeout,
    ),
    Scenario(
        "provider-drops",
        "provider accepts, then drops the connection",
        fault_answer=lambda s: {"drop": True},
    ),
    Scenario(
        "zendesk-down",
        "Zendesk down (not listening), support requests filed",
        kind="support",
        provider_delay=lambda s: s.zendesk_down_for,
    ),
    Scenario(
        "zendesk-made-no-answer",
        "Zendesk makes the ticket, then does not answer (and forgets the Idempotency-Key)",
        kind="support",
        fault_answer=lambda s: {
            "no_answer": s.zendesk_unanswered,
            "hold": s.zendesk_timeout + 2.0,
            "forget_keys": True,
        },
        needs="the worker branch: Zendesk external_id lookup before a ticket whose creation went "
        "unanswered is filed again",
    ),
)

BY_KEY = {scenario.key: scenario for scenario in SCENARIOS}


def table(outcomes: list[Outcome]) -> str:
    """The matrix as a Markdown table."""
    head = "| scenario | expected | delivered | duplicates | missing | seconds until all sent (bound) | |\n"
    head += "|---|---:|---:|---:|---:|---:|---|\n"
    rows = []
    for o in outcomes:
        took = "not within the wait" if o.seconds is None else f"{o.seconds:.1f}"
        rows.append(
            f"| {o.title} | {o.expected:,} | {o.delivered:,} | {o.duplicates:,} | {o.missing:,} | "
            f"{took} ({o.bound:.0f}) | {'ok' if o.passed else 'FAIL'} |"
        )
    return head + "\n".join(rows)
