"""Scale-out: two gunicorn web instances and two ``python worker.py`` on one PostgreSQL and one Redis.

Real processes throughout, as on a host with several dynos:
- a person signs in on instance 1 and carries on (and signs out) on instance 2;
- rate limits are counted in Redis, so attempts spread over both instances add up;
- a 20,000-recipient send is shared by both workers, and the fake Mailgun (a real HTTP server on
  loopback, in this process) receives every recipient exactly once: no duplicates, no gaps;
- one worker SIGKILLed mid-send loses nothing and doubles nothing: ``flask jobs sweep`` hands the
  rest to the other, which asks Mailgun about the batch the victim had in flight.

PostgreSQL is needed (several processes write at once); the test skips on the SQLite run, which
CI follows with a PostgreSQL run. Redis comes from TEST_REDIS_URL (a skip on a laptop, a
failure under CI=true). The processes come from tests/integration/processes.py, which
bench/scale_out.py also uses to measure the same scenario.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job
from sqlalchemy import update

from app.mail.jobs import send_message
from app.models import DeliveryStatus, MailDelivery, Role
from app.models.base import utcnow
from tests.conftest import PASSWORD, ROOT
from tests.integration.conftest import (
    WORKER_START_TIMEOUT,
    WorkerProcess,
    fresh,
    park_sweeper,
    wait_for,
    worker_is_idle,
)
from tests.integration.processes import (
    Browser,
    ProcessFailed,
    WebInstance,
    child_env,
    kill_worker_tree,
    sent_per_worker,
)
from tests.integration.test_mail_reliability import (
    BATCH,
    DOMAIN,
    KEY,
    PUBLIC_URL,
    TimedFakeMailgun,
    make_users,
    status_counts,
    write_announcement,
)

pytestmark = pytest.mark.redis

RECIPIENTS = 20_000
SEND_TIMEOUT = 90.0


@pytest.fixture(autouse=True)
def _postgresql_only(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("scale-out runs on PostgreSQL (TEST_DATABASE_URL); CI's PostgreSQL run has it")


@pytest.fixture
def fake() -> Iterator[TimedFakeMailgun]:
    with TimedFakeMailgun(api_key=KEY, domain=DOMAIN) as server:
        yield server


@pytest.fixture
def outbox_app(make_redis_app, redis_url):
    """The test's own view of the app: writes messages whose send jobs go to the test Redis."""
    from app.extensions import db

    app = make_redis_app(redis_url, SWEEP_PENDING_AFTER=timedelta(0))
    with app.app_context():
        yield app
        db.session.remove()


@pytest.fixture
def workers(redis_url, redis_conn, database_url, tmp_path, app, fake) -> Iterator[Callable[[int], list]]:
    """workers(n) -> n running worker.py processes whose Mailgun is the fake; stopped at teardown."""
    assert fake.base_url.startswith("http://127.0.0.1:")
    started: list[WorkerProcess] = []
    instance = tmp_path / "workers"
    instance.mkdir()
    env = child_env(
        database_url,
        redis_url,
        instance,
        public_url=PUBLIC_URL,
        MAIL_BACKEND="mailgun",
        MAILGUN_API_KEY=fake.api_key,
        MAILGUN_DOMAIN=fake.domain,
        MAILGUN_BASE_URL=fake.base_url,
        MAILGUN_TIMEOUT="10",
        # Longer than the scripted 0.5 s delay: the victim's batch in flight may reach the fake
        # only after its claim is swept (the test ages the lease by hand), so wait for its events.
        MAILGUN_EVENTS_LAG_SECONDS="2",
    )

    def start(count: int) -> list[WorkerProcess]:
        park_sweeper(redis_conn)  # the test sweeps when it chooses to
        new = [WorkerProcess(env, tmp_path / f"worker-{len(started) + i + 1}.log") for i in range(count)]
        started.extend(new)
        for worker in new:
            wait_for(
                lambda worker=worker: worker_is_idle(redis_conn, worker),
                timeout=WORKER_START_TIMEOUT,
                what="a worker to register and go idle",
                worker=worker,
            )
        return new

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def web(redis_url, database_url, tmp_path, app) -> Iterator[list[WebInstance]]:
    """Two web instances on the same database and Redis (rate limits live in Redis)."""
    instance = tmp_path / "web"
    instance.mkdir()
    env = child_env(database_url, redis_url, instance, public_url=PUBLIC_URL, MAIL_BACKEND="devmailbox")
    instances = [WebInstance(env, tmp_path / f"web-{n}.log") for n in (1, 2)]
    try:
        for one in instances:
            try:
                one.wait_ready()
            except ProcessFailed as failure:
                pytest.fail(str(failure))
        yield instances
    finally:
        for one in instances:
            one.stop()


# -- the web side ----------------------------------------------------------------------------------


def test_a_session_started_on_one_instance_carries_on_on_the_other(web, make_school, make_member):
    member = make_member(make_school(name="Twin School"), role=Role.ADMIN, email="twin@example.org")
    first, second = web
    person = Browser()
    status, _, headers = person.post(
        f"{first.url}/sign-in",
        {"email": member.user.email, "password": PASSWORD, "csrf_token": person.csrf(first.url)},
    )
    assert status == 303, status
    status, page, _ = person.get(f"{second.url}/account")
    assert status == 200 and "twin@example.org" in page  # signed in on the other instance
    # A form from one instance's page is accepted by the other (the CSRF secret is in the session).
    token = person.csrf(first.url)
    status, _, _ = person.post(f"{second.url}/sign-out", {"csrf_token": token})
    assert status == 303
    status, _, headers = person.get(f"{first.url}/account")
    assert status == 302 and headers["Location"].startswith("/sign-in")  # signed out everywhere


def test_rate_limits_are_counted_across_both_instances(web, make_school, make_member):
    """Failed passwords are counted in Redis: five free ones in all, then the pair is slowed on
    both instances. Each instance counting in its own memory would have seen only three."""
    from app.auth.throttle import FREE_FAILURES

    member = make_member(make_school(), email="limited@example.org")
    first, second = web
    person = Browser()
    answers = []
    for attempt in range(FREE_FAILURES + 1):
        base = (first, second)[attempt % 2].url
        fields = {
            "email": member.user.email,
            "password": "not the password at all",
            "csrf_token": person.csrf(base),
        }
        answers.append(person.post(f"{base}/sign-in", fields)[0])
    assert answers == [400] * FREE_FAILURES + [429]  # the sixth, on the second instance: slowed
    status, page, _ = person.post(
        f"{first.url}/sign-in",
        {"email": member.user.email, "password": PASSWORD, "csrf_token": person.csrf(first.url)},
    )
    assert status == 429, "the other instance knows of the wait: the count is shared"
    assert "Too many attempts from here" in page


# -- the workers -----------------------------------------------------------------------------------


def _enqueue_second_send(redis_conn, message_id: int) -> Job:
    """As the sweeper would: another send job for the same message, for the other worker."""
    return Queue("mail", connection=redis_conn).enqueue(send_message, message_id, job_timeout=600)


def _wait_all_sent(message_id: int, total: int, alive: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + SEND_TIMEOUT
    while status_counts(message_id)[DeliveryStatus.SENT] < total:
        for worker in alive:
            if worker.proc.poll() is not None:
                pytest.fail(f"worker exited:\n{worker.output()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"after {SEND_TIMEOUT:.0f}s: {dict(status_counts(message_id))}")
        time.sleep(0.25)


def test_a_20000_recipient_send_is_shared_by_two_workers_each_recipient_once(
    outbox_app, fake, workers, redis_conn
):
    emails = make_users(RECIPIENTS, "shared-")
    fake.queue_responses([{"delay": 0.2}] * 4)  # a slower start, so the second job finds work left
    workers(2)
    message_id = write_announcement("shared-")  # its send job goes to Redis on commit
    _enqueue_second_send(redis_conn, message_id)
    _wait_all_sent(message_id, RECIPIENTS, [])
    received = Counter(fake.recipients())
    assert len(received) == RECIPIENTS and set(received) == set(emails), "no gaps"
    assert max(received.values()) == 1, "no duplicates"
    assert fake.stats()["requests"] == RECIPIENTS // BATCH
    wait_for(
        lambda: len(sent_per_worker(redis_conn, message_id)) == 2, timeout=10, what="both jobs to finish"
    )
    shares = sent_per_worker(redis_conn, message_id)
    assert sum(shares.values()) == RECIPIENTS and min(shares.values()) > 0, shares


def test_a_worker_killed_mid_send_loses_nothing(
    outbox_app, fake, workers, redis_conn, database_url, tmp_path
):
    emails = make_users(RECIPIENTS, "killed-")
    # Slow batches, so the kill lands mid-send with a batch of the victim's in flight.
    fake.queue_responses([{"delay": 0.5}] * 8)
    victim, survivor = workers(2)
    message_id = write_announcement("killed-")
    _enqueue_second_send(redis_conn, message_id)
    wait_for(lambda: fake.attempts >= 4, timeout=SEND_TIMEOUT, what="four batches to reach the provider")
    kill_worker_tree(victim)

    # The survivor finishes what is pending; the victim's claimed batch stays "sending" until its
    # lease runs out. Run the lease out now, then sweep with the real command.
    from app.extensions import db

    db.session.execute(
        update(MailDelivery)
        .where(MailDelivery.message_id == message_id, MailDelivery.status == DeliveryStatus.SENDING)
        .values(lease_until=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()
    flask = str(Path(sys.executable).with_name("flask"))
    env = child_env(
        database_url, os.environ["TEST_REDIS_URL"], tmp_path, public_url=PUBLIC_URL, MAIL_BACKEND="devmailbox"
    )
    env["FLASK_APP"] = "app:create_app"
    swept = subprocess.run(
        [flask, "jobs", "sweep"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert swept.returncode == 0, swept.stderr
    _wait_all_sent(message_id, RECIPIENTS, [survivor])
    time.sleep(1.0)  # a request in flight at the kill may still be finishing its scripted delay

    received = Counter(fake.recipients())
    assert set(received) == set(emails), "nothing lost"
    assert [email for email, count in received.items() if count > 1] == [], "nothing sent twice"
    assert sorted(d.to_email for d in fresh_deliveries(message_id)) == sorted(emails)


def fresh_deliveries(message_id: int) -> list[MailDelivery]:
    from sqlalchemy import select

    return list(fresh(select(MailDelivery).where(MailDelivery.message_id == message_id)).scalars())
