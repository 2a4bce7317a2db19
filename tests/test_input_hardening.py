"""Hostile but plausible input: Unicode digits in ids, far-off dates, a doubled Join.

Each answers with a message by the field (or a plain refusal) and never a 500.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app import tenancy
from app.extensions import db
from app.logging_setup import RequestIdFilter
from app.members import lifecycle
from app.models import Enrollment, Role, Student, User
from app.models.calendar import Event
from app.parsing import optional_id
from tests.conftest import sign_in

NEW_PASSWORD = "plum orchard lantern"
# "²" passes str.isdigit() but int() refuses it; "٣" (Arabic-Indic three) int() reads as 3.
ODD_DIGITS = ["²", "①", "٣", "３", " 1", "1 ", "+1", "1_0", "-1", "0", "1" * 13]


def _arabic_indic(number: int) -> str:
    """An id in Arabic-Indic digits: str.isdigit() and int() accept it, a strict parser doesn't."""
    return str(number).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))


def _error(page: str, field_id: str) -> str:
    """The error message shown next to a field (empty if none)."""
    match = re.search(rf'id="{re.escape(field_id)}-error">([^<]*)<', page)
    return match.group(1) if match else ""


def _school_with_class(make_school, make_class, code="ODD-1", timezone=None):
    """Odd School (on ``timezone``'s clock, if given) with its class Hazel."""
    school = make_school(name="Odd School", code=code)
    if timezone:
        school.timezone = timezone
        db.session.commit()
    return school, make_class(school, "Hazel", grade="3")


# --- the shared parser ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [*ODD_DIGITS, "", None, "1\n", b"1", 1.0, True, 0, -3, 2**31, str(2**31), "9" * 12]
)
def test_optional_id_takes_only_ascii_digits(value):
    assert optional_id(value) is None


def test_optional_id_reads_plain_ids_and_passes_parsed_ones_on():
    assert optional_id("42") == 42
    assert optional_id("000123") == 123
    assert optional_id(str(2**31 - 1)) == 2**31 - 1  # the largest value an id column holds
    assert optional_id(42) == 42  # safe to call again on an id already read


# --- Unicode digits in ids --------------------------------------------------------------


@pytest.mark.parametrize("odd", ODD_DIGITS)
def test_join_with_an_odd_class_id_says_so_by_the_class_and_keeps_the_child(
    client, make_school, odd, make_class
):
    _school_with_class(make_school, make_class)
    data = {
        "invite_code": "ODD-1",
        "name": "Nadia Newparent",
        "email": "odd@example.org",
        "password": NEW_PASSWORD,
        "accept_policy": "y",
        "children-0-first_name": "Mia",
        "children-0-last_name": "Newparent",
        "children-0-class_id": odd,
    }
    response = client.form("/join", data)
    assert response.status_code == 400, odd
    page = response.get_data(as_text=True)
    assert "Choose the child&#39;s class from the list." in _error(page, "children-0-class_id")
    assert 'value="Mia"' in page and 'value="odd@example.org"' in page
    assert db.session.scalar(select(User).where(User.email == "odd@example.org")) is None


def test_join_with_a_plain_class_id_still_enrols_the_child(client, make_school, make_class):
    school, hazel = _school_with_class(make_school, make_class)
    data = {
        "invite_code": "ODD-1",
        "name": "Nadia Newparent",
        "email": "plain@example.org",
        "password": NEW_PASSWORD,
        "accept_policy": "y",
        "children-0-first_name": "Mia",
        "children-0-last_name": "Newparent",
        "children-0-class_id": str(hazel.id),
    }
    assert client.form("/join", data).status_code == 303
    with tenancy.bound(school.id):
        assert db.session.scalar(select(func.count(Enrollment.student_id))) == 1


@pytest.fixture
def guardian_world(client, make_school, make_member, make_family, make_class):
    """Gina, signed in, guardian of a family (Mia in Hazel) in a school where guardians edit."""
    school, hazel = _school_with_class(make_school, make_class)
    school.families_edit_own = True
    db.session.commit()
    gina = make_member(school, name="Gina Guardian", email="gina@example.org")
    family = make_family(school, [gina], "Guardian family", [("Mia", "Guardian", [hazel.id])])
    sign_in(client, gina.user.email)
    return school, hazel, family.id, family.student_ids[0]


@pytest.mark.parametrize("odd", ["²", "①", "arabic", "1" * 13])
def test_an_odd_student_id_is_refused_and_changes_nobody(client, guardian_world, odd):
    school, hazel, family_id, mia_id = guardian_world
    odd = _arabic_indic(mia_id) if odd == "arabic" else odd  # Mia's own id, in other digits
    response = client.form(
        "/classes/families/mine/students",
        {
            "form_prefix": "new",
            "family_id": str(family_id),
            "new-student_id": odd,
            "new-first_name": "Renamed",
            "new-last_name": "Guardian",
            "new-classes": [str(hazel.id)],
        },
    )
    assert response.status_code in (400, 404), odd
    with tenancy.bound(school.id):
        assert db.session.scalars(select(Student.first_name)).all() == ["Mia"]


@pytest.mark.parametrize("odd", ["²", "①", "arabic"])
def test_odd_ids_in_removals_are_refused(client, guardian_world, odd):
    school, hazel, family_id, mia_id = guardian_world
    odd = _arabic_indic(mia_id) if odd == "arabic" else odd  # Mia's own id, in other digits
    removal = client.form(
        "/classes/families/mine/students/remove", {"family_id": str(family_id), "target": odd}
    )
    assert removal.status_code in (400, 404)
    assert client.form("/classes/families/mine/code", {"family_id": odd}).status_code == 404
    with tenancy.bound(school.id):
        assert db.session.scalars(select(Student.first_name)).all() == ["Mia"]


@pytest.fixture
def admin_client(client, make_school, make_member, make_class):
    school, hazel = _school_with_class(make_school, make_class)
    sign_in(client, make_member(school, role=Role.ADMIN).user.email)
    client.school = school
    return client


@pytest.mark.parametrize("odd", ODD_DIGITS)
def test_an_odd_member_id_in_the_staff_directory_is_an_error_by_the_field(admin_client, make_member, odd):
    nurse = make_member(admin_client.school, name="Nora Nurse")
    response = admin_client.form("/classes/staff", {"member": odd, "title": "School nurse"})
    assert response.status_code == 400, odd
    page = response.get_data(as_text=True)
    assert "Choose a person from the list." in _error(page, "member")
    assert 'value="School nurse"' in page  # what was typed is kept
    # The same with a second problem, so the page re-renders the submitted form by its prefix.
    row = admin_client.form(
        "/classes/staff",
        {"form_prefix": f"s{nurse.id}", f"s{nurse.id}-member": odd, f"s{nurse.id}-title": "x" * 101},
    )
    assert row.status_code == 400, odd
    assert admin_client.form("/classes/staff/remove", {"member": odd}).status_code == 400


@pytest.mark.parametrize("odd", ["²", "arabic"])
def test_switching_to_an_odd_school_id_changes_nothing(client, make_school, make_member, odd):
    first, second = make_school(name="Alder School"), make_school(name="Beech School")
    member = make_member(first)
    make_member(second, user=member.user)
    sign_in(client, member.user.email)
    odd = _arabic_indic(second.id) if odd == "arabic" else odd  # a school of theirs, in other digits
    assert client.form("/schools/switch", {"school_id": odd}).status_code == 303
    assert "<h1>Alder School</h1>" in client.get("/").get_data(as_text=True)


# --- far-off dates in the calendar -----------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "start", "end"),
    [
        ("America/Los_Angeles", "9999-12-31T23:00", "9999-12-31T23:30"),  # past year 9999 in UTC
        ("Asia/Tokyo", "0001-01-01T00:30", "0001-01-01T01:00"),  # before year 1 in UTC
        ("UTC", "1899-12-31T23:00", "1900-01-01T01:00"),
        ("UTC", "2200-12-31T23:00", "2201-01-01T01:00"),
    ],
)
def test_event_dates_far_off_are_an_error_by_the_field(
    client, make_school, make_member, timezone, start, end, make_class
):
    school, hazel = _school_with_class(make_school, make_class, timezone=timezone)
    sign_in(client, make_member(school, role=Role.STAFF).user.email)
    data = {"title": "Far off", "starts_at": start, "ends_at": end, "class_id": "", "location": "Hall"}
    response = client.form("/calendar/new", data)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "between 1900 and 2200" in _error(page, "starts_at") + _error(page, "ends_at")
    assert f'value="{start}"' in page and f'value="{end}"' in page and 'value="Far off"' in page
    with tenancy.bound(school.id):
        assert db.session.scalars(select(Event)).all() == []


def test_event_dates_at_the_edges_of_the_range_are_saved(client, make_school, make_member, make_class):
    school, hazel = _school_with_class(make_school, make_class, timezone="Pacific/Kiritimati")  # UTC+14
    sign_in(client, make_member(school, role=Role.STAFF).user.email)
    for start, end in (("1900-01-01T00:00", "1900-01-01T01:00"), ("2200-12-31T22:00", "2200-12-31T23:59")):
        data = {"title": "Edge", "starts_at": start, "ends_at": end, "class_id": ""}
        assert client.form("/calendar/new", data).status_code == 303, start
    assert client.get("/calendar/").status_code == 200
    with tenancy.bound(school.id):
        events = db.session.scalars(select(Event).order_by(Event.starts_at)).all()
    assert len(events) == 2
    edit = client.get(f"/calendar/{events[0].id}/edit").get_data(as_text=True)
    assert 'value="1900-01-01T00:00"' in edit and 'min="1900-01-01T00:00"' in edit
    feed_page = client.form("/calendar/feed").get_data(as_text=True)
    feed_url = re.search(r'id="feed-url" readonly value="([^"]+)"', feed_page).group(1)
    feed = client.get("/" + feed_url.split("/", 3)[3])
    assert feed.status_code == 200 and "DTSTART:22001231T" in feed.get_data(as_text=True)


# --- a doubled Join ---------------------------------------------------------------------


def _join_data(email="twice@example.org"):
    return {
        "invite_code": "ODD-1",
        "name": "Tess Twice",
        "email": email,
        "password": NEW_PASSWORD,
        "accept_policy": "y",
    }


def test_a_second_join_racing_the_first_gets_the_same_answer(
    client, make_school, monkeypatch, sent_mail, make_class
):
    """The second of two simultaneous joins finds no account, then meets the first one's row."""
    _school_with_class(make_school, make_class)
    assert client.form("/join", _join_data()).status_code == 303
    # Replay the race: the second request looked before the first one committed.
    real = lifecycle.find_user
    calls = []

    def not_yet(email):
        calls.append(email)
        return None if len(calls) == 1 else real(email)

    monkeypatch.setattr(lifecycle, "find_user", not_yet)
    sent_mail.clear()
    again = client.application.test_client().form("/join", _join_data("Twice@Example.org"))
    assert again.status_code == 303 and again.headers["Location"] == "/join/sent"
    assert db.session.scalar(select(func.count(User.id)).where(User.email == "twice@example.org")) == 1
    assert [m.to for m in sent_mail] == ["twice@example.org"]
    assert "already have an account" in sent_mail[0].subject


def test_a_join_that_fails_after_the_account_row_leaves_no_account(
    client, make_school, monkeypatch, make_class
):
    """All or nothing on every database: on SQLite a savepoint's RELEASE committed the account alone."""
    _school_with_class(make_school, make_class)

    def broken(*args, **kwargs):
        raise RuntimeError("the membership could not be written")

    monkeypatch.setattr(lifecycle, "add_membership", broken)
    client.application.config["PROPAGATE_EXCEPTIONS"] = False  # the error page, as in production
    assert client.form("/join", _join_data("halfway@example.org")).status_code == 500
    db.session.remove()
    assert db.session.scalar(select(func.count(User.id)).where(User.email == "halfway@example.org")) == 0


LEAKS = ("leaky", "example.org", "DETAIL", "duplicate key", "secret-token-value")


# Kept off the lines that raise: a traceback quotes those lines, and they must not hold the data.
_DRIVER_MESSAGE = "duplicate key\nDETAIL:  Key (email)=(leaky@example.org) already exists."
_PARAMETERS = {"email": "leaky@example.org"}


def _unique_violation() -> IntegrityError:
    """What a unique violation looks like: parameters, and the driver's error with DETAIL as cause."""
    try:
        try:
            raise ValueError(_DRIVER_MESSAGE)
        except ValueError as driver_error:
            raise IntegrityError("INSERT INTO user", _PARAMETERS, driver_error) from driver_error
    except IntegrityError as error:
        return error


def test_a_database_error_is_logged_by_class_and_route_without_its_text(build_app, caplog):
    app = build_app(PROPAGATE_EXCEPTIONS=False)

    @app.route("/boom-db/<token>")
    def boom_db(token):
        raise _unique_violation()

    from app.permissions import public

    public(boom_db)
    caplog.set_level(logging.ERROR)
    assert app.test_client().get("/boom-db/secret-token-value").status_code == 500
    assert "GET /boom-db/<token>: sqlalchemy.exc.IntegrityError" in caplog.text
    assert "boom_db" in caplog.text and "ValueError" in caplog.text  # frames and causes are kept
    for leak in LEAKS:
        assert leak not in caplog.text, leak


def test_our_handler_drops_exception_messages_from_every_logger(app):
    """log.exception in a job (app.jobs, app.imports) goes through the same scrubbing."""
    ours = [h for h in logging.getLogger().handlers if any(isinstance(f, RequestIdFilter) for f in h.filters)]
    error = _unique_violation()
    record = logging.LogRecord(
        "app.jobs", logging.ERROR, __file__, 1, "job failed", None, (type(error), error, error.__traceback__)
    )
    assert ours and ours[0].filter(record)
    text = ours[0].format(record)
    assert "job failed" in text and "sqlalchemy.exc.IntegrityError" in text and "_unique_violation" in text
    for leak in LEAKS:
        assert leak not in text, leak


@pytest.mark.postgres
def test_two_simultaneous_joins_on_postgresql_both_get_the_same_answer(
    app, make_school, monkeypatch, sent_mail, make_class
):
    """Both requests look the address up before either inserts; the loser waits on the unique
    index, then meets the winner's committed row (SQLite takes one writer at a time instead)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the race needs two concurrent writers: run with TEST_DATABASE_URL on PostgreSQL")
    _school_with_class(make_school, make_class)
    browsers = [app.test_client(), app.test_client()]
    tokens = [browser.csrf_token() for browser in browsers]
    real = lifecycle.find_user
    both_looked = threading.Barrier(2, timeout=10)
    lookups = itertools.count()

    def look_then_wait(email):
        found = real(email)
        if next(lookups) < 2:  # the two joins' first look-ups; later ones pass straight through
            both_looked.wait()
        return found

    monkeypatch.setattr(lifecycle, "find_user", look_then_wait)
    answers = [None, None]

    def post(i):
        answers[i] = browsers[i].post("/join", data={**_join_data(), "csrf_token": tokens[i]})

    threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [(a.status_code, a.headers["Location"]) for a in answers] == [(303, "/join/sent")] * 2
    assert db.session.scalar(select(func.count(User.id)).where(User.email == "twice@example.org")) == 1
    subjects = sorted(m.subject for m in sent_mail if m.to == "twice@example.org")
    assert len(subjects) == 2 and sum("already have an account" in s for s in subjects) == 1


def test_a_failed_worker_job_leaves_no_message_for_rq_to_log_or_store(app):
    """RQ logs a failed job's exception and keeps it in Redis: only the class and frames may go there."""
    import threading

    from app import jobs

    email = "secret.person@example.org"

    @jobs.job
    def failing_job():
        raise ValueError(f"duplicate key: Key (email)=({email}) already exists")

    caught: list[BaseException] = []

    def run_as_the_worker_does():  # a thread has no app context, like a work horse
        try:
            failing_job()
        except BaseException as error:  # noqa: BLE001 - the test inspects whatever came out
            caught.append(error)

    jobs.set_worker_app(app)
    try:
        thread = threading.Thread(target=run_as_the_worker_does)
        thread.start()
        thread.join(timeout=10)
    finally:
        jobs.set_worker_app(None)
    (error,) = caught
    assert isinstance(error, jobs.JobFailed)
    assert "ValueError" in str(error) and "failing_job" in str(error)
    assert "secret.person" not in str(error) and error.__context__ is None and error.__cause__ is None


def test_odd_input_gives_clear_answers_not_500s(client, make_school, make_member):
    sign_in(client, make_member(make_school(), role=Role.STAFF).user.email)
    assert client.get("/directory/?page=%C2%B2&class_id=%C2%B2").status_code == 200
    anonymous = client.application.test_client(use_cookies=False)
    assert anonymous.get("/unsubscribe/abc.s.%C3%A9").status_code == 400
