"""Fixtures for the job and mail layer against real services: Redis, a real RQ worker process.

Redis comes from TEST_REDIS_URL (use a database of its own, e.g. redis://127.0.0.1:6379/15):
it is flushed before and after every test, so no test sees another's jobs. Without it the
Redis tests skip on a laptop and fail under CI=true.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select

from app import create_app
from app.extensions import db
from app.models import DeliveryStatus, DevMail, MailDelivery
from tests.conftest import HtmxClient, make_config, require_service
from tests.integration.processes import (  # re-exported: the worker tests import them from here
    WORKER_SECRET_KEY,
    ProcessFailed,
    WorkerProcess,
    park_sweeper,
    redis_answers,
    wait_until,
    worker_is_idle,
)

REDIS_HOW = "set TEST_REDIS_URL=redis://127.0.0.1:6379/15 (a database number of its own: it is flushed)"
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused
WORKER_START_TIMEOUT = 20.0
RESET_LINK = re.compile(r"http://localhost(/password/reset/[\w\-.~%]+)")


def _redis_client(url: str):
    from redis import Redis

    return Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """TEST_REDIS_URL, answering PING, flushed before and after the test."""
    url = os.environ.get("TEST_REDIS_URL", "")
    if url and not redis_answers(url):
        require_service("Redis", False, f"TEST_REDIS_URL={url} does not answer PING")
    require_service("Redis", bool(url), REDIS_HOW)
    client = _redis_client(url)
    try:
        client.flushdb()
        yield url
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def redis_conn(redis_url):
    """A client on the test Redis, for looking at queues and jobs."""
    client = _redis_client(redis_url)
    yield client
    client.close()


def make_app(database_url: str, **overrides) -> Flask:
    """A test app on the suite's database with some settings changed; pair with close_app()."""
    app = create_app(make_config(database_url, **overrides))
    app.test_client_class = HtmxClient
    return app


def close_app(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def make_redis_app(app, database_url) -> Iterator[Callable[..., Flask]]:
    """make_redis_app(redis_url, **overrides) -> an app whose jobs go to RQ at that Redis.

    Depends on the base ``app`` fixture, so the tables are emptied after the test. The new
    app's own engine is disposed at teardown.
    """
    made: list[Flask] = []

    def make(url: str, **overrides) -> Flask:
        settings = {"REDIS_URL": url, "REDIS_OPTIONS": {}, "MAIL_BACKEND": "memory", **overrides}
        made.append(make_app(database_url, **settings))
        return made[-1]

    yield make
    for made_app in made:
        close_app(made_app)


@pytest.fixture
def redis_app(make_redis_app, redis_url) -> Iterator[Flask]:
    """An app with REDIS_URL set, its context pushed for the test.

    MAIL_BACKEND is ``memory``: anything this process sent itself would land in its list,
    so a test can tell that the mail went through the worker (DevMail rows) and not inline.
    """
    app = make_redis_app(redis_url)
    with app.app_context():
        yield app
        db.session.remove()


@pytest.fixture
def redis_app_client(redis_app) -> HtmxClient:
    return redis_app.test_client()


def wait_for(
    predicate: Callable[[], object], *, timeout: float, what: str, worker: WorkerProcess | None = None
):
    """Poll ``predicate`` until it returns something truthy; fail with the worker's log if not."""
    try:
        return wait_until(predicate, timeout=timeout, what=what, process=worker)
    except ProcessFailed as failure:
        pytest.fail(str(failure))


@pytest.fixture
def start_worker(
    redis_url, redis_conn, database_url, tmp_path, app
) -> Iterator[Callable[..., WorkerProcess]]:
    """start_worker(sweeper=False, **env) -> a running worker.py, idle and listening; stopped at teardown.

    ``env`` adds or overrides environment variables of that worker (WORKER_HEARTBEAT_SECONDS=...).

    Depends on ``app`` so the schema exists and the tables are emptied after the worker stops.
    """
    started: list[WorkerProcess] = []
    instance = tmp_path / "worker-instance"
    instance.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "FLASK_", "RQ_"))}
    env.update(
        APP_ENV="development",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        MAIL_BACKEND="devmailbox",
        SECRET_KEY=WORKER_SECRET_KEY,
        INSTANCE_PATH=str(instance),
        PUBLIC_URL="http://localhost",  # the site as the test client knows it (SERVER_NAME)
        PYTHONUNBUFFERED="1",
    )

    def start(*, sweeper: bool = False, **extra: str) -> WorkerProcess:
        if not sweeper:
            park_sweeper(redis_conn)
        worker = WorkerProcess({**env, **extra}, tmp_path / f"worker-{len(started) + 1}.log")
        started.append(worker)
        wait_for(
            lambda: worker_is_idle(redis_conn, worker),
            timeout=WORKER_START_TIMEOUT,
            what="the worker to register and go idle",
            worker=worker,
        )
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def worker_process(start_worker) -> WorkerProcess:
    """A real worker.py, running for the whole test."""
    return start_worker()


def fresh(query):
    """Run a read in a new transaction, so rows the worker committed are visible."""
    db.session.rollback()
    return db.session.execute(query)


def devmail_count(email: str) -> int:
    return fresh(select(func.count(DevMail.id)).where(DevMail.to_email == email)).scalar_one()


def devmails(email: str) -> list[DevMail]:
    return list(fresh(select(DevMail).where(DevMail.to_email == email)).scalars())


def deliveries_to(email: str) -> list[MailDelivery]:
    return list(fresh(select(MailDelivery).where(MailDelivery.to_email == email)).scalars())


def all_sent(email: str) -> bool:
    """Every delivery to this address is sent (and there is at least one)."""
    deliveries = deliveries_to(email)
    return bool(deliveries) and all(d.status == DeliveryStatus.SENT for d in deliveries)
