"""The job and mail layer with Redis and a real worker.py process (RQ HerokuWorker)."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from datetime import timedelta

import pytest
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry
from sqlalchemy import func, select

from app.auth.jobs import sweep_reset_requests
from app.extensions import db
from app.mail import queue_email
from app.mail.jobs import send_message, sweep
from app.models import Category, DeliveryStatus, MailDelivery, MailMessage, PasswordResetRequest
from app.models.base import utcnow
from tests.integration.conftest import (
    CLOSED_REDIS_URL,
    RESET_LINK,
    WORKER_START_TIMEOUT,
    all_sent,
    deliveries_to,
    devmail_count,
    devmails,
    wait_for,
    worker_is_idle,
)
from worker import SWEEP_JOB_ID

pytestmark = pytest.mark.redis

SEND_TIMEOUT = 20.0


def job_status(redis_conn, job_id: str) -> JobStatus | None:
    return Job.fetch(job_id, connection=redis_conn).get_status()


def finished_jobs(redis_conn, queue: str = "mail") -> list[str]:
    return FinishedJobRegistry(queue, connection=redis_conn).get_job_ids()


def no_failed_jobs(redis_conn, worker) -> None:
    for queue in ("mail", "default"):
        failed = FailedJobRegistry(queue, connection=redis_conn).get_job_ids()
        assert failed == [], f"jobs failed on {queue}: {failed}\n{worker.output()[-4000:]}"


def test_password_reset_asked_on_the_web_is_sent_by_the_worker(
    redis_app, redis_app_client, redis_conn, start_worker, make_school, make_member
):
    email = "forgetful@example.org"
    make_member(make_school(), email=email)

    csrf_token = redis_app_client.csrf_token()
    started = time.monotonic()
    response = redis_app_client.form("/password/forgot", {"email": email, "csrf_token": csrf_token})
    assert response.status_code == 200
    assert time.monotonic() - started < 5

    # Nothing was done inside the request but storing it: the worker looks the address up.
    assert redis_app.extensions["mail_backend"].sent == []
    assert deliveries_to(email) == []
    assert devmail_count(email) == 0
    [job_id] = Queue("mail", connection=redis_conn).job_ids
    assert job_status(redis_conn, job_id) == JobStatus.QUEUED

    worker = start_worker()
    wait_for(lambda: devmail_count(email) >= 1, timeout=SEND_TIMEOUT, what="the reset email", worker=worker)
    wait_for(
        lambda: job_status(redis_conn, job_id) == JobStatus.FINISHED,
        timeout=SEND_TIMEOUT,
        what="the send job to finish",
        worker=worker,
    )

    [mail] = devmails(email)
    link = RESET_LINK.search(mail.text_body)
    assert link, mail.text_body
    # Administrative mail: a category header and tag, and no unsubscribe headers (P11).
    # (The development mailbox also keeps the envelope's From and To, as a provider gets them.)
    assert mail.headers["To"] == email
    assert {k: v for k, v in mail.headers.items() if k not in ("From", "To")} == {
        "X-Category": Category.ADMINISTRATIVE.value,
        "X-Tag": Category.ADMINISTRATIVE.value,
    }
    [delivery] = deliveries_to(email)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 1)
    assert delivery.provider_id == f"dev-{mail.id}"
    message = db.session.get(MailMessage, delivery.message_id)
    assert message.sensitive
    assert message.text_body is None and message.html_body is None  # the link is not kept
    assert redis_app.extensions["mail_backend"].sent == []
    no_failed_jobs(redis_conn, worker)

    # The emailed link works: it opens the choose-a-new-password form.
    assert redis_app_client.get(link.group(1)).status_code == 303
    assert redis_app_client.get("/password/reset").status_code == 200


def test_mail_asked_for_while_redis_is_down_is_sent_after_the_sweep(
    make_redis_app, redis_url, redis_conn, start_worker, make_school, make_member, caplog
):
    email = "during-outage@example.org"
    make_member(make_school(), email=email)

    down = make_redis_app(CLOSED_REDIS_URL)
    client = down.test_client()
    csrf_token = client.csrf_token()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="app.jobs"):
        response = client.form("/password/forgot", {"email": email, "csrf_token": csrf_token})
    assert response.status_code == 200
    assert time.monotonic() - started < 5
    assert any("redis unavailable" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert db.session.scalar(select(func.count(PasswordResetRequest.id))) == 1  # stored, its job lost
    assert Queue("mail", connection=redis_conn).count == 0

    # Redis is back: the sweeper finds the waiting request and enqueues it again.
    up = make_redis_app(redis_url, SWEEP_PENDING_AFTER=timedelta(0))
    with up.app_context():
        result = sweep_reset_requests()
        db.session.remove()
    assert result["requests"] == 1
    assert Queue("mail", connection=redis_conn).count == 1

    worker = start_worker()
    wait_for(
        lambda: all_sent(email),
        timeout=SEND_TIMEOUT,
        what="the swept delivery to be sent",
        worker=worker,
    )
    assert devmail_count(email) == 1
    [delivery] = deliveries_to(email)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 1)
    no_failed_jobs(redis_conn, worker)


def test_two_jobs_for_one_message_send_each_recipient_once(
    redis_app, redis_conn, worker_process, make_school, make_member
):
    school = make_school()
    people = [make_member(school).user for _ in range(3)]
    message = queue_email("email_change_notice", people, name="Someone")
    db.session.commit()  # the first job, pushed by the commit
    Queue("mail", connection=redis_conn).enqueue(send_message, message.id)  # a duplicate

    wait_for(
        lambda: len(finished_jobs(redis_conn)) == 2,
        timeout=SEND_TIMEOUT,
        what="both send jobs to finish",
        worker=worker_process,
    )
    results = sorted(
        (Job.fetch(job_id, connection=redis_conn).return_value() for job_id in finished_jobs(redis_conn)),
        key=lambda r: r["sent"],
    )
    nothing_else = {"skipped": 0, "digest": 0, "failed": 0, "retry": 0}
    assert results == [{"sent": 0, **nothing_else}, {"sent": 3, **nothing_else}]
    for person in people:
        assert devmail_count(person.email) == 1
        [delivery] = deliveries_to(person.email)
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 1)
    assert redis_app.extensions["mail_backend"].sent == []
    no_failed_jobs(redis_conn, worker_process)


def test_sigterm_stops_an_idle_worker_cleanly(redis_conn, worker_process):
    # The support, policy, reset and suppression sweepers are not parked: each runs every
    # SWEEP_EVERY_SECONDS, so the worker may be busy for a moment. Wait for idle, not assume it.
    wait_for(
        lambda: worker_is_idle(redis_conn, worker_process),
        timeout=WORKER_START_TIMEOUT,
        what="the worker to be idle",
        worker=worker_process,
    )
    started = time.monotonic()
    worker_process.proc.send_signal(signal.SIGTERM)
    try:
        returncode = worker_process.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker ignored SIGTERM for 15 s:\n{worker_process.output()[-4000:]}")
    assert returncode == 0, worker_process.output()[-4000:]
    assert time.monotonic() - started < 15
    # A warm shutdown unregisters the worker, so no dead worker lingers in Redis.
    assert [w for w in Worker.all(connection=redis_conn) if w.pid == worker_process.pid] == []
    assert "Traceback" not in worker_process.output()


def test_worker_schedules_the_sweeper_which_sends_stale_mail(
    app, redis_conn, start_worker, make_school, make_member
):
    email = "left-behind@example.org"
    user = make_member(make_school(), email=email).user
    # A delivery a lost job left pending ten minutes ago (past SWEEP_PENDING_AFTER).
    message = MailMessage(category=Category.ADMINISTRATIVE, template="t", subject="Hello", text_body="Hi")
    db.session.add(message)
    db.session.add(
        MailDelivery(
            message=message, user_id=user.id, to_email=email, updated_at=utcnow() - timedelta(minutes=10)
        )
    )
    db.session.commit()

    worker = start_worker(sweeper=True)

    def sent_or_sweep_failed():
        if job_status(redis_conn, SWEEP_JOB_ID) == JobStatus.FAILED:
            pytest.fail(f"the sweeper job failed:\n{worker.output()[-4000:]}")
        return all_sent(email)

    wait_for(sent_or_sweep_failed, timeout=SEND_TIMEOUT, what="the sweeper to send the mail", worker=worker)
    assert devmail_count(email) == 1
    [delivery] = deliveries_to(email)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 1)
    # The sweeper repeats: it waits in the scheduled registry for its next run.
    wait_for(
        lambda: SWEEP_JOB_ID in ScheduledJobRegistry("default", connection=redis_conn).get_job_ids(),
        timeout=5,
        what="the sweeper to be scheduled again",
        worker=worker,
    )
    no_failed_jobs(redis_conn, worker)


def test_health_reports_database_and_redis(redis_app_client):
    response = redis_app_client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_health_fails_while_redis_is_down(make_redis_app):
    down = make_redis_app(CLOSED_REDIS_URL)
    response = down.test_client().get("/health")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "checks": {"database": "ok", "redis": "failing"}}


def test_jobs_pushed_after_commit_may_run_longer_than_rqs_default(
    redis_app, redis_conn, make_school, make_member
):
    """RQ would kill a job after 180 s; a 20,000-recipient send or a big import needs longer."""
    school = make_school()
    people = [make_member(school).user]
    queue_email("email_change_notice", people, name="Someone")
    db.session.commit()
    [job] = Queue("mail", connection=redis_conn).get_jobs()
    assert job.timeout == 1800


def test_a_delayed_job_is_scheduled_a_second_after_its_due_time(redis_app, redis_conn):
    """RQ's scheduler truncates to whole seconds: a retry due in 30 s must not wake at 29.x s."""
    from app import jobs

    before = utcnow()
    with redis_app.test_request_context():
        jobs.enqueue_in(30, sweep, queue="mail")
    registry = ScheduledJobRegistry(queue=Queue("mail", connection=redis_conn))
    (job_id,) = registry.get_job_ids()
    scheduled = registry.get_scheduled_time(job_id)
    assert scheduled >= before.replace(microsecond=0) + timedelta(seconds=31)
    assert scheduled <= utcnow() + timedelta(seconds=31)
