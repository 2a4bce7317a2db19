"""Fixtures: the app on a real database (SQLite file, or PostgreSQL via TEST_DATABASE_URL),
an htmx-aware client that always sends CSRF tokens, factories and a sign-in helper."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import pytest
import time_machine
from flask import Flask
from flask.globals import _cv_app
from flask.testing import FlaskClient
from sqlalchemy import event

from app import create_app, jobs, tenancy
from app.auth.passwords import hash_password
from app.extensions import db, limiter
from app.mail import queue_email
from app.models import (
    Category,
    ClassHelper,
    ClassRole,
    MailMessage,
    Membership,
    MembershipStatus,
    PermissionChange,
    Role,
    School,
    SchoolClass,
    User,
    listings,
)
from app.models.base import utcnow
from app.models.calendar import Event
from app.models.support import SupportGrant
from config import TestConfig

PASSWORD = "correct horse battery"
_HASH = hash_password(PASSWORD)  # hashing is slow on purpose; do it once for the suite
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def require_service(name: str, available: bool, how: str) -> None:
    """Skip when a service is missing on a laptop; fail under CI, where a skip would hide it."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required when CI=true: {how}")
    pytest.skip(f"{name} not available: {how}")


@pytest.fixture
def loopback_only(monkeypatch):
    """Refuse to resolve any host but loopback, so a misrouted request fails loudly.

    For tests that talk to a fake service (tests/fakes/): no test may ever reach the real one.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("loopback_only")``.
    """
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in LOOPBACK_HOSTS:
            raise AssertionError(f"test tried to reach {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post_to_fake(
    url: str,
    body: bytes,
    *,
    user: str,
    password: str,
    content_type: str,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict, Message]:
    """POST straight to a fake service with Basic auth: its status, JSON body and headers."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Basic {token}", "Content-Type": content_type, **(headers or {})},
    )
    try:
        with _NO_PROXY.open(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}"), response.headers
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"{}"), error.headers


def fake_get(url: str) -> dict:
    """GET one of a fake service's control endpoints (``/_fake/...``): its JSON answer."""
    with _NO_PROXY.open(url, timeout=5) as response:
        return json.loads(response.read())


def fake_stats(base_url: str) -> dict:
    """A fake service's ``GET /_fake/stats``."""
    return fake_get(f"{base_url}/_fake/stats")


@contextmanager
def fake_process(module: str, *options: str, lifetime: float = 60) -> Iterator[str]:
    """``python -m <module> --port 0 <options>`` (a fake from tests/fakes/); yields its base URL.

    Checks that it prints "listening <url>" then "ready", and that it exits 0 when terminated.
    """
    command = [sys.executable, "-m", module, "--port", "0", *options, "--lifetime", str(lifetime)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        listening = process.stdout.readline().split()
        assert listening[0] == "listening"
        assert process.stdout.readline().strip() == "ready"
        yield listening[1]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
            process.stdout.close()
    assert process.returncode == 0


# The suite's "now" for tests on the clock fixture: a fixed Monday morning (winter in the
# northern hemisphere), so every date a test writes reads the same on any day the suite runs.
# Dates in tests are written at or after it, or relative to ``clock.now()``.
CLOCK_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class Clock:
    """The controlled clock (time_machine underneath): frozen until a test moves it."""

    def __init__(self, traveller: time_machine.Traveller):
        self._traveller = traveller

    def now(self) -> datetime:
        """The clock's current moment, in UTC."""
        return datetime.now(UTC)

    def shift(self, delta: timedelta | None = None, **parts: float) -> datetime:
        """Move forward by ``delta`` (or timedelta(**parts)); returns the new now."""
        self._traveller.shift(delta if delta is not None else timedelta(**parts))
        return self.now()

    def move_to(self, moment: datetime) -> datetime:
        """Jump to ``moment`` (an aware datetime); returns it."""
        self._traveller.move_to(moment)
        return self.now()


@pytest.fixture
def clock() -> Iterator[Clock]:
    """Time in this process stands at CLOCK_START until the test shifts it.

    The app reads the time through ``datetime.now`` (app.models.base.utcnow) and itsdangerous
    through ``time.time``; time_machine moves both. It does not move other processes (RQ
    worker, live server): tests across processes pass dates relative to the real now instead.
    """
    with time_machine.travel(CLOCK_START, tick=False) as traveller:
        yield Clock(traveller)


@pytest.fixture(autouse=True)
def _clock_before_data(request) -> None:
    """A test that asks for the clock has it before any fixture writes a row, whatever the order."""
    if "clock" in request.fixturenames:
        request.getfixturevalue("clock")


# Read once, at start: make_config() rewrites the variable for each app it builds (the worker and
# live-server processes read it), so a test building an app on a scratch SQLite file before any
# test asked for the suite's database would otherwise turn a PostgreSQL run into an SQLite one.
GIVEN_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """TEST_DATABASE_URL, or an SQLite file that other processes (worker, live server) can open."""
    url = GIVEN_DATABASE_URL
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


def make_config(database_url: str, **overrides) -> TestConfig:
    """A TestConfig on the suite's database, with overrides for one test's needs."""
    os.environ["TEST_DATABASE_URL"] = database_url
    config = TestConfig()
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture(scope="session")
def _schema(database_url):
    app = create_app(make_config(database_url))
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


@pytest.fixture
def app(database_url, _schema) -> Flask:
    """A fresh app per test, on empty tables."""
    app = create_app(make_config(database_url))
    with app.app_context():
        yield app
        db.session.remove()
        stale = _stale_listings()
        _empty_tables()
        db.engine.dispose()
    limiter.reset()
    assert not stale, f"kept search columns not refreshed by some write path: {stale}"


@pytest.fixture
def build_app(database_url, _schema):
    """build_app(**overrides) or build_app(config) -> an extra app, its engine closed after the test."""
    built: list[Flask] = []

    def build(config=None, **overrides) -> Flask:
        extra = create_app(config or make_config(database_url, **overrides))
        built.append(extra)
        return extra

    yield build
    for extra in built:
        with extra.app_context():
            db.engine.dispose()


def _stale_listings() -> list[tuple[str, int]]:
    """Rows whose kept ``listed`` / ``search_text`` / ``sort_name`` differ from a recomputation."""
    with db.engine.connect() as conn:
        return listings.stale_rows(conn)


def _empty_tables() -> None:
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())


class HtmxClient(FlaskClient):
    """A test client that finds and sends the CSRF token, as a browser (or htmx) would.

    Each request runs in its own app context, as in production: Flask would otherwise reuse
    the test's context, sharing ``g`` and the database session (and its identity map)
    between the test and the request, which would hide scoping bugs.
    """

    def open(self, *args, **kwargs):
        token = _cv_app.set(None)
        try:
            return super().open(*args, **kwargs)
        finally:
            _cv_app.reset(token)

    def csrf_token(self) -> str:
        page = self.get("/privacy").get_data(as_text=True)
        match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
        assert match, "every page carries a CSRF token in its meta tag"
        return match.group(1)

    def form(self, url: str, data: dict | None = None, **kwargs):
        """POST a form with its hidden csrf_token field filled in."""
        data = dict(data or {})
        data.setdefault("csrf_token", self.csrf_token())
        return self.post(url, data=data, **kwargs)

    def htmx(self, url: str, data: dict | None = None, *, target: str, method: str = "POST", **kwargs):
        """What htmx sends: HX headers and the token in X-CSRFToken (no form field)."""
        headers = {"HX-Request": "true", "HX-Target": target, "X-CSRFToken": self.csrf_token()}
        headers.update(kwargs.pop("headers", {}))
        return self.open(url, method=method, data=data or {}, headers=headers, **kwargs)


# Every app built in the suite hands out the htmx-aware client.
Flask.test_client_class = HtmxClient


@pytest.fixture
def client(app) -> HtmxClient:
    return app.test_client()


@pytest.fixture
def make_school(app) -> Callable[..., School]:
    """make_school(name=..., code=...) -> a committed School."""
    counter = {"n": 0}

    def make(name: str | None = None, code: str | None = None) -> School:
        counter["n"] += 1
        n = counter["n"]
        school = School(name=name or f"School {n}", slug=f"school-{n}", invite_code=code or f"CODE-{n}")
        db.session.add(school)
        db.session.commit()
        return school

    return make


@pytest.fixture
def make_member(app) -> Callable[..., Membership]:
    """make_member(school, role=..., status=..., email=..., name=...) -> a committed Membership."""
    counter = {"n": 0}

    def make(
        school: School,
        role: Role = Role.PARENT,
        status: MembershipStatus = MembershipStatus.APPROVED,
        email: str | None = None,
        name: str | None = None,
        user: User | None = None,
    ) -> Membership:
        counter["n"] += 1
        n = counter["n"]
        if user is None:
            user = User(
                email=email or f"person{n}@example.org",
                name=name or f"Person Number{n}",
                password_hash=_HASH,
            )
            db.session.add(user)
            db.session.flush()
        with tenancy.bound(school.id):
            membership = Membership(user_id=user.id, role=role, status=status)
            db.session.add(membership)
            db.session.commit()
        return membership

    return make


@dataclass(frozen=True)
class MadeFamily:
    """Ids of a family built by ``make_family`` (plain ints: the rows are of another scope)."""

    id: int
    student_ids: tuple[int, ...]


@pytest.fixture
def make_family(app) -> Callable[..., MadeFamily]:
    """make_family(school, guardians, name=..., children=[(first, last, class_ids)]) -> MadeFamily.

    One family in the school: the guardian memberships, and each child enrolled in its classes.
    """

    def make(
        school: School,
        guardians: list[Membership],
        name: str = "Family",
        children: list[tuple[str, str, list[int]]] = (),
    ) -> MadeFamily:
        from app.models import Enrollment, Family, Guardian, Student

        with tenancy.bound(school.id):
            family = Family(name=name)
            db.session.add(family)
            db.session.flush()
            db.session.add_all(Guardian(family_id=family.id, membership_id=m.id) for m in guardians)
            student_ids = []
            for first, last, class_ids in children:
                student = Student(family_id=family.id, first_name=first, last_name=last)
                db.session.add(student)
                db.session.flush()
                db.session.add_all(Enrollment(student_id=student.id, class_id=c) for c in class_ids)
                student_ids.append(student.id)
            made = MadeFamily(family.id, tuple(student_ids))
            db.session.commit()
        return made

    return make


@pytest.fixture
def make_class(app) -> Callable[..., SchoolClass]:
    """make_class(school, name=..., grade=..., school_year=..., helpers=[(membership, ClassRole)])."""

    def make(
        school: School,
        name: str = "Hazel",
        grade: str = "Grade 3",
        school_year: str = "2026-27",
        helpers: Iterable[tuple[Membership, ClassRole]] = (),
    ) -> SchoolClass:
        with tenancy.bound(school.id):
            school_class = SchoolClass(name=name, grade=grade, school_year=school_year)
            db.session.add(school_class)
            db.session.flush()
            db.session.add_all(
                ClassHelper(class_id=school_class.id, membership_id=m.id, role=role) for m, role in helpers
            )
            db.session.commit()
        return school_class

    return make


@pytest.fixture
def make_event(app) -> Callable[..., Event]:
    """make_event(school, title, school_class=..., creator=..., start=..., hours=...) -> an Event.

    It starts three days from now unless told otherwise (now is the clock fixture's, if used).
    """

    def make(
        school: School,
        title: str = "Bake sale",
        *,
        school_class: SchoolClass | None = None,
        creator: Membership | None = None,
        start: datetime | None = None,
        hours: float = 1,
        **extra,
    ) -> Event:
        start = start or utcnow() + timedelta(days=3)
        with tenancy.bound(school.id):
            made = Event(
                title=title,
                class_id=school_class.id if school_class else None,
                starts_at=start,
                ends_at=start + timedelta(hours=hours),
                created_by_id=creator.id if creator else None,
                **extra,
            )
            db.session.add(made)
            db.session.commit()
        return made

    return make


@pytest.fixture
def grant_permissions(app) -> Callable[..., None]:
    """grant_permissions(membership, *permissions, granted=True): per-member changes to the role's set."""

    def grant(membership: Membership, *permissions: str, granted: bool = True) -> None:
        with tenancy.bound(membership.school_id):
            db.session.add_all(
                PermissionChange(membership_id=membership.id, permission=p, granted=granted)
                for p in permissions
            )
            db.session.commit()

    return grant


@pytest.fixture
def make_support_grant(app) -> Callable[..., SupportGrant]:
    """make_support_grant(school, hours=2, start=now) -> the school's access grant to platform staff."""

    def make(school: School, hours: float = 2, start: datetime | None = None) -> SupportGrant:
        start = start or utcnow()
        with tenancy.bound(school.id):
            grant = SupportGrant(starts_at=start, expires_at=start + timedelta(hours=hours))
            db.session.add(grant)
            db.session.commit()
        return grant

    return make


@pytest.fixture
def send_email(app) -> Callable[..., MailMessage]:
    """send_email(users, category=..., school=..., template=..., **context) -> the sent MailMessage.

    Written to the outbox and sent as the app does it: queued, committed, then the jobs run.
    """

    def send(
        users: list[User],
        category: Category = Category.SCHOOL_ANNOUNCEMENTS,
        *,
        school: School | None = None,
        template: str = "email_change_notice",
        **context,
    ) -> MailMessage:
        context.setdefault("name", "Families")
        # A school's mail is written bound to that school, as its routes do (tenancy refuses a
        # row for a school that is not bound); platform mail is written unbound.
        with tenancy.bound(school.id) if school else nullcontext():
            message = queue_email(
                template, users, category=category, school_id=school.id if school else None, **context
            )
            db.session.commit()
        jobs.run_ready_jobs()
        return message

    return send


_CSRF_TOKENS = re.compile(
    r'(<meta name="csrf-token" content="|<input[^>]*name="(?:csrf_token|submission_key)"[^>]*value=")[^"]*"'
)


def without_csrf_tokens(page: str) -> str:
    """The page with every CSRF token (meta tag and form fields) and one-time submission key
    masked: tokens carry a timestamp, keys are new at every rendering."""
    return _CSRF_TOKENS.sub(r'\1…"', page)


def sign_in(client: HtmxClient, email: str, password: str = PASSWORD):
    """Sign in through the real form; returns the response."""
    return client.form("/sign-in", {"email": email, "password": password})


@pytest.fixture
def sent_mail(app):
    """The memory backend's list of envelopes sent in this test."""
    backend = app.extensions["mail_backend"]
    backend.sent.clear()
    return backend.sent


@contextmanager
def count_queries():
    """Count SQL statements run inside the block (session store included)."""
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def queries_per_page(requests) -> dict[str, int]:
    """GET each (client, url) and count its SQL statements; every page must answer 200."""
    counts = {}
    for client, url in requests:
        with count_queries() as statements:
            assert client.get(url).status_code == 200, url
        counts[url] = len(statements)
    return counts


def assert_constant_queries(requests, grow) -> None:
    """The pages run as many queries after ``grow(190, 10)`` as at 10 rows (after one warm-up)."""
    grow(10, 0)
    queries_per_page(requests)  # warm-up: first requests fill caches
    small = queries_per_page(requests)
    grow(190, 10)
    assert queries_per_page(requests) == small


ROOT = Path(__file__).resolve().parent.parent


def publish_material(*, email=True, notice=True, summary="We now keep sign-in records for 90 days."):
    """Post a material policy version now (after the placeholder version 1), as the admin page would."""
    from app.consent import policy
    from app.jobs import run_ready_jobs

    policy.ensure_placeholder()
    draft = policy.create_draft(
        body="New text", summary=summary, material=True, email=email, notice=notice, by=None
    )
    policy.publish(draft)
    db.session.commit()
    run_ready_jobs()  # the send job, as after a request
    return draft
