"""In-process jobs (no REDIS_URL): a job waits for its transaction's commit and runs after the request."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app import jobs
from app.auth.services import send_password_reset
from app.extensions import db
from app.models import DeliveryStatus, MailDelivery, MailMessage, School
from app.permissions import public
from tests.integration.conftest import RESET_LINK


@pytest.fixture
def ran(app) -> list[str]:
    """Routes on the test app that enqueue a recording job; the list of jobs that ran."""
    calls: list[str] = []

    def record(tag: str) -> None:
        calls.append(tag)

    @app.get("/_test/enqueue-and-commit")
    @public
    def enqueue_and_commit():
        jobs.enqueue(record, "committed")
        db.session.add(School(name="Committed", slug="committed", invite_code="COMMITTED"))
        db.session.commit()
        return {"ran_before_response": list(calls)}

    @app.get("/_test/enqueue-roll-back-then-commit")
    @public
    def enqueue_roll_back_then_commit():
        jobs.enqueue(record, "rolled back")
        db.session.add(School(name="Rolled back", slug="rolled-back", invite_code="ROLLED"))
        db.session.flush()
        db.session.rollback()
        # The same request goes on to commit other work: the dropped job must stay dropped.
        db.session.add(School(name="Later", slug="later", invite_code="LATER"))
        db.session.commit()
        return {"ran_before_response": list(calls)}

    @app.get("/_test/savepoint-rolled-back")
    @public
    def savepoint_rolled_back():
        jobs.enqueue(record, "outer")
        db.session.add(School(name="Outer", slug="outer", invite_code="OUTER"))
        db.session.flush()
        savepoint = db.session.begin_nested()
        db.session.add(School(name="Inner", slug="inner", invite_code="INNER"))
        db.session.flush()
        savepoint.rollback()
        db.session.commit()
        return {"ran_before_response": list(calls)}

    @app.get("/_test/reset-then-roll-back/<email>")
    @public
    def reset_then_roll_back(email: str):
        send_password_reset(email)
        db.session.rollback()
        db.session.add(School(name="After reset", slug="after-reset", invite_code="AFTER"))
        db.session.commit()
        return {}

    return calls


def schools_named(name: str) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count(School.id)).where(School.name == name))


def test_job_of_a_committed_transaction_runs_after_the_request(client, ran):
    response = client.get("/_test/enqueue-and-commit")
    assert response.status_code == 200
    assert response.json == {"ran_before_response": []}  # not inside the view
    assert ran == ["committed"]  # but before the client got the response
    assert schools_named("Committed") == 1
    client.get("/privacy")
    assert ran == ["committed"]  # once only


def test_job_of_a_rolled_back_transaction_never_runs(client, ran):
    response = client.get("/_test/enqueue-roll-back-then-commit")
    assert response.status_code == 200
    assert schools_named("Rolled back") == 0
    assert schools_named("Later") == 1  # a later commit in the same request...
    assert ran == []  # ...does not revive the job the rollback dropped


def test_job_survives_a_rolled_back_savepoint_of_its_transaction(client, ran):
    assert client.get("/_test/savepoint-rolled-back").status_code == 200
    assert schools_named("Outer") == 1
    assert schools_named("Inner") == 0
    assert ran == ["outer"]


def test_mail_of_a_rolled_back_transaction_is_never_sent(client, ran, sent_mail, make_school, make_member):
    email = "rolled-back@example.org"
    make_member(make_school(), email=email)
    assert client.get(f"/_test/reset-then-roll-back/{email}").status_code == 200
    assert schools_named("After reset") == 1
    assert sent_mail == []
    assert db.session.scalar(select(func.count(MailMessage.id))) == 0


def test_password_reset_is_sent_in_process_after_the_request(client, sent_mail, make_school, make_member):
    email = "inline@example.org"
    make_member(make_school(), email=email)
    response = client.form("/password/forgot", {"email": email})
    assert response.status_code == 200
    [envelope] = sent_mail
    assert envelope.to == email
    assert RESET_LINK.search(envelope.text)
    db.session.rollback()
    [delivery] = db.session.scalars(select(MailDelivery)).all()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 1)
    assert db.session.get(MailMessage, delivery.message_id).text_body is None
