"""Scale-out: two worker.py and two gunicorn instances on one PostgreSQL and one Redis.

    python -m bench.scale_out [--recipients 20000] [--provider-delay 0.2] [--attempts 15]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_scale]
        [--redis-url redis://127.0.0.1:6379/12]

The --database-url database is DROPPED and created again (and left behind for a look
afterwards); the --redis-url database is FLUSHED at the start and at the end. Everything is
real except Mailgun: ``python worker.py`` and ``gunicorn`` processes started as the scale-out
test starts them (tests/integration/processes.py), and the fake Mailgun of
tests/fakes/mailgun.py served on 127.0.0.1 by this process, so it can tell who received what.
One run measures, side by side:

1. one newsletter to N people through ONE worker, then through TWO (two send jobs for the
   same message, as the sweeper would hand out a second one): the time from enqueueing until
   the jobs are done, recipients/second, the two/one ratio, each worker's share, and the
   duplicates and gaps at the provider (both must be 0). Twice: with the fake answering at
   once (the machine's cores are the limit) and with it holding every call --provider-delay
   seconds, as a provider's round trip would (two workers overlap those waits);
2. two workers, one SIGKILLed (with its scheduler and work horse) once about a third of the
   recipients reached the provider; its claimed batch's lease is run out as the scale-out
   test does, ``flask jobs sweep`` runs (the survivor asks the fake's Events API about the
   batch the victim had in flight), and the time from the kill until every delivery is sent
   is measured, with duplicates and gaps at the provider (both must be 0);
3. two gunicorn instances: signed in on one, signed in on the other; wrong passwords spread
   over both are refused at the same attempt as on one instance (the count is in Redis).

It prints a table and writes bench/results/scale_out.json. The times are figures, not
targets: it exits 1 only on a correctness failure (a duplicate or a gap where none may be, a
delivery left unsent, a session or a rate limit not shared). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from bench.mail_fanout import (
    build_schema_and_users,
    clear_outbox,
    drop_postgres_database,
    ensure_postgres_database,
    load_users,
    make_app,
    queue_newsletter,
    run_facts,
    status_counts,
)
from tests.integration.processes import (
    Browser,
    ProcessFailed,
    WebInstance,
    WorkerProcess,
    child_env,
    kill_worker_tree,
    park_sweeper,
    rq_worker_name,
    sent_per_worker,
    wait_until,
    worker_is_idle,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "scale_out.json"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_scale"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
KEY = "key-bench-" + secrets.token_hex(8)
DOMAIN = "mg.bench.example"
PUBLIC_URL = "http://127.0.0.1:5000"
BATCH = 1000  # MailgunBackend.max_batch: recipients per provider call
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WORKER_START_TIMEOUT = 60.0
ACCOUNT_EMAIL = "twin@bench.example"
WRONG_PASSWORD = "not the password at all"  # noqa: S105 - deliberately wrong


@dataclass
class Bench:
    """What every phase shares: the bench's own app, Redis, the fake Mailgun and where logs go."""

    app: object
    redis: object
    fake: object
    database_url: str
    redis_url: str
    secret_key: str
    tmp: Path
    recipients: int
    emails: frozenset[str]
    timeout: float

    def env(self, name: str, **extra: str) -> dict[str, str]:
        """A child's environment on the bench database and Redis, with an instance folder of its own."""
        instance = self.tmp / f"instance-{name}"
        instance.mkdir(exist_ok=True)
        return child_env(
            self.database_url,
            self.redis_url,
            instance,
            public_url=PUBLIC_URL,
            secret_key=self.secret_key,
            **extra,
        )

    def worker_env(self) -> dict[str, str]:
        """A worker whose Mailgun is the fake on loopback."""
        return self.env(
            "workers",
            MAIL_BACKEND="mailgun",
            MAILGUN_API_KEY=KEY,
            MAILGUN_DOMAIN=DOMAIN,
            MAILGUN_BASE_URL=self.fake.base_url,
            MAILGUN_TIMEOUT="30",
            # Longer than any --provider-delay: the lease is run out by hand, so the batch in
            # flight may reach the fake after its claim is swept; its events are waited for.
            MAILGUN_EVENTS_LAG_SECONDS="12",
        )


# -- setup ----------------------------------------------------------------------------------------


def loopback_problem(url: str, what: str) -> str | None:
    """Why ``url`` may not be used (it is not on this machine), or None."""
    host = urlsplit(url.replace("+psycopg", "")).hostname
    if host not in LOOPBACK:
        return f"{what} must be on 127.0.0.1 (the bench drops or flushes it), not {host!r}"
    return None


def recreate_database(url: str) -> None:
    """DROP the bench database and create it empty."""
    drop_postgres_database(url)
    ensure_postgres_database(url)


def start_fake():
    """The fake Mailgun, served on loopback by a thread of this process."""
    from tests.fakes.mailgun import FakeMailgun

    fake = FakeMailgun(api_key=KEY, domain=DOMAIN).start()
    if not fake.base_url.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"the fake Mailgun is not on loopback: {fake.base_url}")
    return fake


def all_emails(app) -> frozenset[str]:
    """Every account's address: the newsletter goes to all of them."""
    from app.extensions import db

    with app.app_context():
        emails = frozenset(user.email for user in load_users(db))
        db.session.remove()
    return emails


# -- workers --------------------------------------------------------------------------------------


def queues_quiet(redis) -> bool:
    """Nothing waiting on the workers' queues (with the workers idle: their start-up jobs are done)."""
    from rq import Queue

    return all(Queue(name, connection=redis).count == 0 for name in ("mail", "default"))


def start_workers(bench: Bench, count: int, label: str) -> list[WorkerProcess]:
    """``count`` fresh worker.py processes, registered, idle, their start-up jobs done."""
    park_sweeper(bench.redis)  # the bench sweeps when it chooses to
    env = bench.worker_env()
    workers = [WorkerProcess(env, bench.tmp / f"{label}-worker-{n + 1}.log") for n in range(count)]
    for worker in workers:
        wait_until(
            lambda worker=worker: worker_is_idle(bench.redis, worker) and queues_quiet(bench.redis),
            timeout=WORKER_START_TIMEOUT,
            what="a worker to register and go idle",
            process=worker,
        )
    return workers


def stop_workers(workers: list[WorkerProcess]) -> None:
    """Warm shutdown of every worker still running."""
    for worker in workers:
        worker.stop()


def worker_names(bench: Bench, workers: list[WorkerProcess]) -> list[str | None]:
    """RQ's name for each worker, in order, to read the jobs' ``worker_name`` by."""
    return [rq_worker_name(bench.redis, worker) for worker in workers]


# -- sending --------------------------------------------------------------------------------------


def write_newsletter(bench: Bench) -> int:
    """A newsletter to every account, committed; its own send job is dropped (the bench enqueues)."""
    from app.extensions import db

    with bench.app.app_context():
        message = queue_newsletter(load_users(db))
        db.session.commit()
        message_id = message.id
        db.session.info.pop("ready_jobs", None)  # the bench app has no Redis: the job waits here
        db.session.remove()
    return message_id


def enqueue_sends(bench: Bench, message_id: int, count: int) -> list:
    """``count`` send jobs for the same message on the mail queue, as the app would enqueue one."""
    from rq import Queue

    from app.mail.jobs import send_message

    queue = Queue("mail", connection=bench.redis)
    return [
        queue.enqueue(send_message, message_id, job_timeout=int(bench.timeout), result_ttl=3600)
        for _ in range(count)
    ]


def wait_for_jobs(bench: Bench, jobs: list, workers: list[WorkerProcess]) -> None:
    """Until every job finished; a failed job, a dead worker or the timeout raises."""
    from rq.job import JobStatus

    deadline = time.perf_counter() + bench.timeout
    # Redis is cheap to ask; counting rows every few milliseconds would load the database measured.
    while not all(job.get_status(refresh=True) == JobStatus.FINISHED for job in jobs):
        for job in jobs:
            if job.get_status() in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                result = job.latest_result()
                raise RuntimeError(f"a send job {job.get_status()}:\n{result.exc_string if result else ''}")
        for worker in workers:
            if worker.proc.poll() is not None:
                raise ProcessFailed(f"a worker exited:\n{worker.output()[-4000:]}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the send ran over {bench.timeout:.0f} s")
        time.sleep(0.02)


def script_provider(fake, delay: float, recipients: int) -> None:
    """Forget what the fake received; make it hold each call ``delay`` seconds (0: answer at once)."""
    fake.reset()
    if delay > 0:
        calls = math.ceil(recipients / BATCH)
        fake.queue_responses([{"delay": delay}] * (2 * calls + 2))  # room for a resent batch


def provider_tally(bench: Bench) -> dict:
    """Who the fake received, against who should have: duplicates and gaps."""
    received = Counter(bench.fake.recipients())
    twice = {address for address, copies in received.items() if copies > 1}
    return {
        "calls": len(bench.fake.accepted()),
        "received": sum(received.values()),
        "duplicates": len(twice),
        "max_copies": max(received.values(), default=0),
        "gaps": len(bench.emails - set(received)),
        "unexpected": len(set(received) - bench.emails),
        "duplicates_are_one_call": bool(twice) and _one_call(bench.fake, twice),
    }


def _one_call(fake, addresses: set[str]) -> bool:
    """Whether ``addresses`` are exactly the recipients of one accepted call (a batch sent twice)."""
    return any(set(request.recipients) == addresses for request in fake.accepted())


def send_run(bench: Bench, count: int, delay: float) -> dict:
    """One newsletter through ``count`` workers: time from enqueueing until the jobs are done."""
    workers = start_workers(bench, count, f"send-{count}w-{delay:g}s")
    try:
        names = worker_names(bench, workers)
        message_id = write_newsletter(bench)
        script_provider(bench.fake, delay, bench.recipients)
        started = time.perf_counter()
        jobs = enqueue_sends(bench, message_id, count)
        wait_for_jobs(bench, jobs, workers)
        seconds = time.perf_counter() - started
        statuses = status_counts(bench.app, message_id)
        per_worker = sent_per_worker(bench.redis, message_id)
        tally = provider_tally(bench)
    finally:
        stop_workers(workers)
    clear_outbox(bench.app)
    return {
        "workers": count,
        "provider_delay": delay,
        "seconds": seconds,
        "recipients_per_second": bench.recipients / seconds,
        "statuses": statuses,
        "shares": [per_worker.get(name, 0) for name in names],
        **tally,
    }


def throughput_phase(bench: Bench, delays: list[float]) -> list[dict]:
    """For each provider delay: one worker, then two; the two/one throughput ratio."""
    rows = []
    for delay in delays:
        pair = {}
        for count in (1, 2):
            print(f"(1) {count} worker(s), provider delay {delay:g} s ...", flush=True)
            pair[count] = send_run(bench, count, delay)
        ratio = pair[2]["recipients_per_second"] / pair[1]["recipients_per_second"]
        rows.append({"provider_delay": delay, "one": pair[1], "two": pair[2], "ratio": ratio})
    return rows


# -- a worker killed mid-send ---------------------------------------------------------------------


def recipients_at_provider(fake) -> int:
    """Recipients in the calls the fake accepted so far (one ``to`` field per recipient: cheap)."""
    return sum(len(request.fields.get("to", ())) for request in fake.accepted())


def age_stuck(bench: Bench, message_id: int) -> int:
    """Run out the lease on the message's "sending" rows, as if its time had passed."""
    from sqlalchemy import update

    from app.extensions import db
    from app.models import DeliveryStatus, MailDelivery
    from app.models.base import utcnow

    with bench.app.app_context(), db.engine.begin() as conn:
        aged = conn.execute(
            update(MailDelivery)
            .where(MailDelivery.message_id == message_id, MailDelivery.status == DeliveryStatus.SENDING)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        ).rowcount
    return aged


def run_sweep(bench: Bench) -> tuple[float, str]:
    """``flask jobs sweep`` as an operator (or the worker's schedule) would run it; seconds, output."""
    flask = str(Path(sys.executable).with_name("flask"))
    env = bench.env("sweep", MAIL_BACKEND="devmailbox", FLASK_APP="app:create_app")
    started = time.perf_counter()
    swept = subprocess.run(
        [flask, "jobs", "sweep"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if swept.returncode != 0:
        raise RuntimeError(f"flask jobs sweep failed:\n{swept.stderr[-4000:]}")
    return time.perf_counter() - started, swept.stdout.strip()


def wait_all_sent(bench: Bench, message_id: int, survivor: WorkerProcess) -> None:
    """Until every delivery of the message is sent (the killed worker's job never finishes)."""
    deadline = time.perf_counter() + bench.timeout
    while status_counts(bench.app, message_id).get("sent", 0) < bench.recipients:
        if survivor.proc.poll() is not None:
            raise ProcessFailed(f"the surviving worker exited:\n{survivor.output()[-4000:]}")
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"not all sent after {bench.timeout:.0f} s: {status_counts(bench.app, message_id)}"
            )
        time.sleep(0.1)


def kill_when_a_third_is_out(
    bench: Bench, victim: WorkerProcess, survivor: WorkerProcess
) -> tuple[int, float]:
    """Wait for a third of the recipients at the provider, then SIGKILL the victim's whole tree.

    Returns how many processes died (worker, scheduler, work horse) and when the kill began.
    """
    third = math.ceil(bench.recipients / 3)
    wait_until(
        lambda: recipients_at_provider(bench.fake) >= third,
        timeout=bench.timeout,
        what="a third of the recipients to reach the provider",
        process=survivor,
    )
    started = time.perf_counter()
    # The test suite's killer (SIGSTOP the tree, then SIGKILL it): RQ's work horse leaves the
    # worker's process group, so killpg alone would let it finish the send.
    return len(kill_worker_tree(victim)), started


def kill_run(bench: Bench, delay: float) -> dict:
    """Two workers on one send; kill one a third of the way; sweep; time until every row is sent."""
    from rq import Queue

    workers = start_workers(bench, 2, "kill")
    victim, survivor = workers
    try:
        names = worker_names(bench, workers)
        message_id = write_newsletter(bench)
        script_provider(bench.fake, delay, bench.recipients)
        enqueue_sends(bench, message_id, 2)
        processes, killed = kill_when_a_third_is_out(bench, victim, survivor)
        at_provider = recipients_at_provider(bench.fake)
        at_kill = status_counts(bench.app, message_id)
        aged = age_stuck(bench, message_id)
        sweep_seconds, swept = run_sweep(bench)
        wait_all_sent(bench, message_id, survivor)
        recovered = time.perf_counter() - killed
        # A call in flight at the kill may still be in its scripted delay; let the fake finish it.
        time.sleep(delay + 1.0)
        wait_until(
            lambda: (
                worker_is_idle(bench.redis, survivor) and Queue("mail", connection=bench.redis).count == 0
            ),
            timeout=bench.timeout,
            what="the survivor's jobs to finish",
            process=survivor,
        )
        survivor_sent = sent_per_worker(bench.redis, message_id).get(names[1], 0)
        statuses = status_counts(bench.app, message_id)
        tally = provider_tally(bench)
    finally:
        stop_workers(workers)
    clear_outbox(bench.app)
    return {
        "provider_delay": delay,
        "killed_processes": processes,
        "recipients_at_provider_at_kill": at_provider,
        "statuses_at_kill": at_kill,
        "rows_aged": aged,
        "sweep_seconds": sweep_seconds,
        "sweep_output": swept,
        "kill_to_all_sent_seconds": recovered,
        "victim_sent": bench.recipients - survivor_sent,  # every other row went through the survivor's jobs
        "survivor_sent": survivor_sent,
        "statuses": statuses,
        **tally,
    }


# -- two web instances ----------------------------------------------------------------------------


def make_account(bench: Bench) -> str:
    """A school admin with a real password hash; returns the password."""
    from app import tenancy
    from app.auth.passwords import hash_password
    from app.extensions import db
    from app.models import Membership, MembershipStatus, Role, School, User

    password = secrets.token_urlsafe(12)
    with bench.app.app_context():
        school = School(name="Twin School", slug="twin-school", invite_code="TWIN-1")
        user = User(email=ACCOUNT_EMAIL, name="Twin Admin", password_hash=hash_password(password))
        db.session.add_all([school, user])
        db.session.flush()
        with tenancy.bound(school.id):
            db.session.add(Membership(user_id=user.id, role=Role.ADMIN, status=MembershipStatus.APPROVED))
            db.session.commit()
        db.session.remove()
    return password


def session_shared(first: WebInstance, second: WebInstance, password: str) -> dict:
    """Sign in on the first, carry on on the second, sign out there: the statuses seen."""
    person = Browser()
    sign_in, _, _ = person.post(
        f"{first.url}/sign-in",
        {"email": ACCOUNT_EMAIL, "password": password, "csrf_token": person.csrf(first.url)},
    )
    account, page, _ = person.get(f"{second.url}/account")
    token = person.csrf(first.url)  # a token from one instance's page, posted to the other
    sign_out, _, _ = person.post(f"{second.url}/sign-out", {"csrf_token": token})
    after, _, headers = person.get(f"{first.url}/account")
    return {
        "sign_in_on_1": sign_in,
        "account_on_2": account,
        "signed_in_on_2": sign_in == 303 and account == 200 and ACCOUNT_EMAIL in page,
        "sign_out_on_2": sign_out,
        "account_on_1_after": after,
        "signed_out_on_1": after == 302 and headers.get("Location", "").startswith("/sign-in"),
    }


def clear_rate_limits(redis) -> int:
    """Delete the rate-limit counters (the limits library's keys start LIMITS:), so counts start at 0."""
    keys = list(redis.scan_iter(match="LIMITS:*"))
    if keys:
        redis.delete(*keys)
    return len(keys)


def first_refusal(bases: list[str], attempts: int) -> dict:
    """Wrong passwords, taking the instances in turn: at which attempt the first 429 came."""
    person = Browser()
    statuses = []
    for attempt in range(attempts):
        base = bases[attempt % len(bases)]
        fields = {"email": ACCOUNT_EMAIL, "password": WRONG_PASSWORD, "csrf_token": person.csrf(base)}
        statuses.append(person.post(f"{base}/sign-in", fields)[0])
    first = next((n + 1 for n, status in enumerate(statuses) if status == 429), None)
    before = statuses[: (first or attempts + 1) - 1]
    return {"statuses": statuses, "first_429": first, "all_400_before": all(s == 400 for s in before)}


def web_phase(bench: Bench, attempts: int) -> dict:
    """Two gunicorn instances: is the session shared, is the sign-in limit counted together?"""
    from config import Config

    password = make_account(bench)
    env = bench.env("web", MAIL_BACKEND="devmailbox")
    instances = [WebInstance(env, bench.tmp / f"web-{n}.log") for n in (1, 2)]
    try:
        for instance in instances:
            instance.wait_ready()
        first, second = instances
        print("(3) a session across the two instances ...", flush=True)
        session = session_shared(first, second, password)
        clear_rate_limits(bench.redis)
        print(f"(3) {attempts} wrong passwords on one instance, then on both in turn ...", flush=True)
        one = first_refusal([first.url], attempts)
        one["limiter_keys_in_redis"] = clear_rate_limits(bench.redis)
        both = first_refusal([first.url, second.url], attempts)
        both["limiter_keys_in_redis"] = clear_rate_limits(bench.redis)
    finally:
        for instance in instances:
            instance.stop()
    shared = one["first_429"] is not None and one["first_429"] == both["first_429"]
    return {"limit": Config.RATELIMIT_SIGN_IN, "session": session, "one": one, "both": both, "shared": shared}


# -- verdict and report ---------------------------------------------------------------------------


def failures(result: dict) -> list[str]:
    """Correctness failures only; no time is a failure."""
    found = []
    n = result["recipients"]
    for row in result["throughput"]:
        for run in (row["one"], row["two"]):
            label = f"(1) {run['workers']} worker(s), delay {run['provider_delay']:g} s"
            if run["duplicates"] or run["gaps"] or run["unexpected"] or run["statuses"] != {"sent": n}:
                found.append(
                    f"{label}: {run['duplicates']} duplicates, {run['gaps']} gaps, {run['statuses']}"
                )
            if sum(run["shares"]) != n:
                found.append(f"{label}: the jobs report {sum(run['shares'])} sent, not {n}")
    kill = result["kill"]
    # The batch in flight at the kill is looked up with the provider, not sent again.
    if kill["gaps"] or kill["statuses"] != {"sent": n} or kill["duplicates"]:
        found.append(f"(2) kill: {kill['gaps']} gaps, {kill['duplicates']} duplicates, {kill['statuses']}")
    web = result["web"]
    if not (web["session"]["signed_in_on_2"] and web["session"]["signed_out_on_1"]):
        found.append(f"(3) the session is not shared: {web['session']}")
    if not (web["shared"] and web["one"]["all_400_before"] and web["both"]["all_400_before"]):
        found.append(
            f"(3) the rate limit is not shared: {web['one']['statuses']} / {web['both']['statuses']}"
        )
    return found


def _yes(flag: bool) -> str:
    """yes or NO, the failure in capitals."""
    return "yes" if flag else "NO"


def _share(run: dict) -> str:
    """Each worker's share of the recipients, in percent."""
    total = sum(run["shares"]) or 1
    return " / ".join(f"{100 * sent / total:.0f}%" for sent in run["shares"])


def _counts(run: dict) -> str:
    """How many recipients each worker's jobs sent."""
    return " / ".join(f"{sent:,}" for sent in run["shares"])


def _row(label: str, one: str, two: str, ratio: str = "") -> str:
    """One line of the throughput table: a label, the 1-worker and 2-worker cells, the ratio."""
    return f"    {label:38}{one:>18}{two:>18}{ratio:>9}".rstrip()


def report_throughput(result: dict) -> list[str]:
    """The one-worker / two-worker table, one block per provider delay."""
    lines = [f"(1) one newsletter to {result['recipients']:,} recipients"]
    lines.append(_row("", "1 worker", "2 workers", "2 / 1"))
    for row in result["throughput"]:
        one, two, delay = row["one"], row["two"], row["provider_delay"]
        lines += [
            f"  provider {'answers at once' if delay == 0 else f'holds each call {delay:g} s'}",
            _row("send time (enqueued -> jobs done)", f"{one['seconds']:.2f} s", f"{two['seconds']:.2f} s"),
            _row(
                "recipients / second",
                f"{one['recipients_per_second']:,.0f}",
                f"{two['recipients_per_second']:,.0f}",
                f"{row['ratio']:.2f}x",
            ),
            _row("recipients per worker", _counts(one), _counts(two)),
            _row("share per worker", _share(one), _share(two)),
            _row("provider calls", f"{one['calls']:,}", f"{two['calls']:,}"),
            _row(
                "duplicates / gaps at the provider",
                f"{one['duplicates']} / {one['gaps']}",
                f"{two['duplicates']} / {two['gaps']}",
            ),
        ]
    return lines


def report_kill(result: dict) -> list[str]:
    """The killed-worker run."""
    kill, n = result["kill"], result["recipients"]
    at_kill = kill["statuses_at_kill"]
    duplicates = f"{kill['duplicates']:,}"
    if kill["duplicates"]:
        how = "one whole call" if kill["duplicates_are_one_call"] else "not one call"
        duplicates += f" ({how}: a batch was sent again although the provider had accepted it)"
    return [
        f"(2) one of two workers SIGKILLed ({kill['killed_processes']} processes) once "
        f"{kill['recipients_at_provider_at_kill']:,} of {n:,} recipients were at the provider "
        f"(provider holds each call {kill['provider_delay']:g} s)",
        f"    at the kill: sent {at_kill.get('sent', 0):,}, sending {at_kill.get('sending', 0):,}, "
        f"pending {at_kill.get('pending', 0):,}; claims whose lease was run out: {kill['rows_aged']:,}",
        f"    flask jobs sweep: {kill['sweep_seconds']:.2f} s ({kill['sweep_output']})",
        f"    kill -> every delivery sent: {kill['kill_to_all_sent_seconds']:.2f} s "
        "(in production add the lease, MAILGUN_TIMEOUT + MAIL_LEASE_SECONDS, and up to one "
        "SWEEP_EVERY_SECONDS)",
        f"    sent by the killed worker: {kill['victim_sent']:,}; by the survivor: {kill['survivor_sent']:,}",
        f"    gaps at the provider: {kill['gaps']}; duplicates: {duplicates}",
    ]


def report_web(result: dict) -> list[str]:
    """The two-instance facts."""
    web = result["web"]
    session, one, both = web["session"], web["one"], web["both"]
    return [
        "(3) two gunicorn instances on one PostgreSQL and one Redis",
        f"    signed in on instance 1 ({session['sign_in_on_1']}), signed-in page on instance 2 "
        f"({session['account_on_2']}): {_yes(session['signed_in_on_2'])}",
        f"    signed out on instance 2 ({session['sign_out_on_2']}), signed out on instance 1 "
        f"({session['account_on_1_after']}): {_yes(session['signed_out_on_1'])}",
        f"    sign-in limit {web['limit']}; first 429 on one instance at attempt {one['first_429']}, "
        f"across both in turn at attempt {both['first_429']}: shared {_yes(web['shared'])}",
        f"    limiter keys in Redis after each: {one['limiter_keys_in_redis']}"
        f" / {both['limiter_keys_in_redis']}",
    ]


def report(result: dict) -> str:
    """The whole printed report."""
    head = (
        f"Scale-out: {result['recipients']:,} recipients, PostgreSQL + Redis on 127.0.0.1 "
        f"({result['cpus']} CPUs, {result['date']}, commit {result['git_commit']}; "
        f"load {result['load_average_before']} -> {result['load_average_after']})"
    )
    blocks = [[head], report_throughput(result), report_kill(result), report_web(result)]
    return "\n\n".join("\n".join(block) for block in blocks)


def write_results(path: Path, result: dict) -> None:
    """bench/results/scale_out.json (git-ignored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": "scale_out", **result}, indent=2, default=str) + "\n")


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; refuses anything not on this machine, as the bench drops and flushes."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0]
        + " The --database-url database is DROPPED and recreated; the --redis-url database is FLUSHED."
    )
    parser.add_argument("--recipients", type=int, default=20000, help="at least 3,000 (default 20,000)")
    parser.add_argument(
        "--provider-delay", type=float, default=0.2, help="seconds the fake holds each call (second pass)"
    )
    parser.add_argument("--attempts", type=int, default=15, help="wrong passwords per rate-limit run")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE, help="PostgreSQL; DROPPED and recreated")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="this Redis database is FLUSHED")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per send")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.recipients < 3 * BATCH:
        parser.error("--recipients must be at least 3000 (the kill comes after a third, in whole calls)")
    if not 0 < args.provider_delay <= 10:
        parser.error("--provider-delay must be above 0 and at most 10 seconds")
    if args.attempts < 2:
        parser.error("--attempts must be at least 2")
    if not args.database_url.startswith("postgresql"):
        parser.error("several processes write at once: give a postgresql:// URL")
    for url, what in ((args.database_url, "--database-url"), (args.redis_url, "--redis-url")):
        if problem := loopback_problem(url, what):
            parser.error(problem)
    return args


def run(args: argparse.Namespace, bench: Bench) -> dict:
    """The three phases, and the machine they ran on."""
    load_before = os.getloadavg()
    throughput = throughput_phase(bench, [0.0, args.provider_delay])
    print("(2) a worker killed mid-send ...", flush=True)
    kill = kill_run(bench, args.provider_delay)
    web = web_phase(bench, args.attempts)
    return {
        **run_facts(load_before),
        "recipients": args.recipients,
        "throughput": throughput,
        "kill": kill,
        "web": web,
    }


def main(argv: list[str] | None = None) -> int:
    """Build the database, run the phases, print and save; 1 on a correctness failure."""
    args = parse_args(argv)
    from redis import Redis

    from config import database_url as normalise

    url = normalise(args.database_url)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    redis = Redis.from_url(args.redis_url, socket_timeout=10, socket_connect_timeout=5)
    redis.ping()
    redis.flushdb()
    fake = app = None
    finished = False
    try:
        recreate_database(url)
        fake = start_fake()
        secret_key = secrets.token_urlsafe(32)
        app = make_app(url, secret_key)
        print(f"building {args.recipients:,} users in {url.rsplit('/', 1)[-1]} ...", flush=True)
        build_schema_and_users(app, args.recipients)
        bench = Bench(
            app,
            redis,
            fake,
            url,
            args.redis_url,
            secret_key,
            tmp,
            args.recipients,
            all_emails(app),
            args.timeout,
        )
        result = run(args, bench)
        print("\n" + report(result))
        write_results(args.output, result)
        print(f"\nresults: {args.output}")
        found = failures(result)
        for failure in found:
            print(f"CORRECTNESS FAILURE: {failure}", file=sys.stderr)
        finished = True
        return 1 if found else 0
    finally:
        if app is not None:
            from app.extensions import db

            with app.app_context():
                db.session.remove()
                db.engine.dispose()
        if fake is not None:
            fake.stop()
        redis.flushdb()
        redis.close()
        if finished:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"the processes' logs are kept in {tmp}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
