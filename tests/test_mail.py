"""The outbox: written with the change, sent after commit, each delivery at most once."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from sqlalchemy import func, select

from app import jobs
from app.extensions import db
from app.mail import queue_email
from app.mail.backends import MailBackend, PermanentFailure, TemporaryFailure
from app.mail.jobs import send_message, sweep
from app.models import Category, DeliveryStatus, MailDelivery, MailMessage, Role
from app.models.base import utcnow
from tests.conftest import sign_in


def _deliveries():
    db.session.expire_all()
    return db.session.scalars(select(MailDelivery).order_by(MailDelivery.id)).all()


def test_mail_is_written_in_the_transaction_and_sent_after_commit(app, make_school, make_member, sent_mail):
    member = make_member(make_school(), email="one@example.org", name="Oona One")
    queue_email("password_reset", [member.user], name="Oona One", hours=1, link="http://localhost/x")
    assert sent_mail == []  # nothing leaves before the commit
    db.session.commit()
    jobs.run_ready_jobs()
    assert [m.to for m in sent_mail] == ["one@example.org"]
    assert "Oona One" in sent_mail[0].text and sent_mail[0].html.startswith("<!doctype html>")
    assert [d.status for d in _deliveries()] == [DeliveryStatus.SENT]


def test_a_rolled_back_transaction_sends_nothing(app, make_school, make_member, sent_mail):
    member = make_member(make_school())
    queue_email("password_reset", [member.user], name="x", hours=1, link="http://localhost/x")
    db.session.rollback()
    db.session.commit()
    jobs.run_ready_jobs()
    assert sent_mail == []
    assert db.session.scalar(select(func.count(MailMessage.id))) == 0


def test_sending_twice_delivers_once(app, make_school, make_member, sent_mail):
    member = make_member(make_school())
    message = queue_email("password_reset", [member.user], name="x", hours=1, link="http://localhost/x")
    db.session.commit()
    send_message(message.id)
    send_message(message.id)
    jobs.run_ready_jobs()
    assert len(sent_mail) == 1
    assert _deliveries()[0].attempts == 1


def test_deactivated_accounts_get_no_mail_not_even_administrative(app, make_school, make_member, sent_mail):
    """P11: deactivated accounts get nothing; the reason is recorded on the delivery."""
    active = make_member(make_school(), email="active@example.org")
    gone = make_member(make_school(), email="gone@example.org")
    message = queue_email("email_change_notice", [active.user, gone.user], name="x")
    gone.user.active = False
    db.session.commit()
    jobs.run_ready_jobs()
    assert [m.to for m in sent_mail] == ["active@example.org"]
    statuses = {d.to_email: (d.status, d.last_error) for d in _deliveries()}
    assert statuses["gone@example.org"] == (DeliveryStatus.SKIPPED, "account deactivated")
    assert message.category == "administrative"


def test_sweeper_sends_what_a_lost_job_left_pending(app, make_school, make_member, sent_mail):
    member = make_member(make_school())
    queue_email("email_change_notice", [member.user], name="x")
    db.session.info.pop("pending_jobs")  # the job is lost (Redis was down)
    db.session.commit()
    jobs.run_ready_jobs()
    assert sent_mail == []
    assert sweep()["messages"] == 0  # too fresh to be called lost
    with time_machine.travel(utcnow() + timedelta(minutes=6)):
        assert sweep()["messages"] == 1
        jobs.run_ready_jobs()
    assert len(sent_mail) == 1
    assert _deliveries()[0].status is DeliveryStatus.SENT


def test_sweeper_releases_deliveries_whose_lease_ran_out(app, make_school, make_member, sent_mail, clock):
    """A worker died holding a claim it never handed over: once the lease is out, it is sent."""
    member = make_member(make_school())
    queue_email("email_change_notice", [member.user], name="x")
    db.session.info.pop("pending_jobs")
    db.session.commit()
    lease = timedelta(seconds=app.config["MAIL_LEASE_SECONDS"])
    delivery = _deliveries()[0]
    delivery.status, delivery.claimed_by = DeliveryStatus.SENDING, "a worker that died"
    delivery.lease_until = clock.now() + lease
    db.session.commit()
    clock.shift(lease - timedelta(seconds=1))
    sweep()
    jobs.run_ready_jobs()
    assert sent_mail == [] and _deliveries()[0].status is DeliveryStatus.SENDING  # still its holder's
    clock.shift(seconds=2)
    assert sweep()["messages"] == 1
    jobs.run_ready_jobs()
    assert len(sent_mail) == 1
    assert _deliveries()[0].status is DeliveryStatus.SENT


class Unavailable(MailBackend):
    """A provider that refuses every batch for now (429: it did not take it), noting each try."""

    def __init__(self, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        self.calls: list = []

    def send_batch(self, batch):
        self.calls.append(utcnow())
        raise TemporaryFailure("Mailgun rate limit reached (429)", retry_after=self.retry_after)


def test_temporary_failures_retry_with_capped_backoff_for_72_hours_then_fail(
    app, make_school, make_member, clock
):
    """Outages delay, never drop: retried with a capped backoff until 72 h after the first try."""
    provider = Unavailable(retry_after=120)
    app.extensions["mail_backend"] = provider
    member = make_member(make_school())
    message = queue_email("email_change_notice", [member.user], name="x")
    db.session.info.pop("pending_jobs")
    db.session.commit()
    first = clock.now()
    assert send_message(message.id)["retry"] == 1
    delivery = _deliveries()[0]
    assert (delivery.status, delivery.attempts, delivery.first_attempt_at) == (
        DeliveryStatus.PENDING,
        1,
        first,
    )
    assert delivery.last_error == "Mailgun rate limit reached (429)"
    # Retry-After (120 s) wins over the backoff (0.5 s in tests); not retried before then.
    assert delivery.next_attempt_at - clock.now() == timedelta(seconds=120)
    assert send_message(message.id)["retry"] == 0
    provider.retry_after = None
    give_up = app.config["MAIL_GIVE_UP_AFTER"]
    cap = timedelta(seconds=app.config["MAIL_RETRY_MAX_SECONDS"])
    while (delivery := _deliveries()[0]).status is DeliveryStatus.PENDING:
        assert delivery.next_attempt_at - delivery.updated_at <= max(cap, timedelta(seconds=120))
        clock.move_to(delivery.next_attempt_at)
        send_message(message.id)
    gaps = [later - earlier for earlier, later in zip(provider.calls, provider.calls[1:], strict=False)]
    assert max(gaps) == cap  # the backoff grew to its cap and stayed there
    # Tried until 72 h had passed, failed at the first try after: never earlier, never much later.
    assert provider.calls[-2] - first < give_up <= provider.calls[-1] - first < give_up + cap
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.last_error == "gave up after 72 hours: Mailgun rate limit reached (429)"
    assert delivery.attempts == len(provider.calls)


def test_permanent_failures_are_recorded_with_the_reason(app, make_school, make_member):
    class Refusing(MailBackend):
        def send_batch(self, batch):
            raise PermanentFailure("'to' parameter is not a valid address")

    app.extensions["mail_backend"] = Refusing()
    member = make_member(make_school())
    message = queue_email("email_change_notice", [member.user], name="x")
    db.session.info.pop("pending_jobs")
    db.session.commit()
    assert send_message(message.id)["failed"] == 1
    delivery = _deliveries()[0]
    assert (delivery.status, delivery.last_error) == (
        DeliveryStatus.FAILED,
        "'to' parameter is not a valid address",
    )


def test_mail_goes_to_the_address_the_account_has_when_it_is_sent(app, make_school, make_member, sent_mail):
    member = make_member(make_school(), email="old@example.org")
    message = queue_email(
        "email_change_notice", [member.user], category=Category.SCHOOL_ANNOUNCEMENTS, name="x"
    )
    db.session.info.pop("pending_jobs")  # not sent yet (scheduled, or retried later)
    db.session.commit()
    member.user.email = "new@example.org"
    db.session.commit()
    from app.mail.jobs import send_message

    send_message(message.id)
    assert [m.to for m in sent_mail] == ["new@example.org"]


def test_the_dev_mailbox_is_for_superadmins_only(build_app, make_school, make_member):
    school = make_school()
    admin = make_member(school, role=Role.ADMIN)
    superadmin = make_member(school, role=Role.SUPERADMIN)
    app = build_app(DEV_MAILBOX=True)
    for member, expected in ((admin, 403), (superadmin, 200)):
        visitor = app.test_client()
        sign_in(visitor, member.user.email)
        assert visitor.get("/dev/mailbox").status_code == expected


def test_list_mail_names_its_list_in_a_list_id_header(app, make_school, make_member, send_email):
    """RFC 2919: <category.school.host>, per school and category; platform mail is the platform's.

    Administrative mail (a reset link, an approval) is to one person, not a list's: none."""
    app.config["PUBLIC_URL"] = "https://families.example.org:8443"
    school = make_school()
    member = make_member(school)
    backend = app.extensions["mail_backend"]
    send_email([member.user], Category.SCHOOL_ANNOUNCEMENTS, school=school)
    send_email([member.user], Category.NEWSLETTERS, school=school)
    send_email([member.user], Category.PROMOTIONAL)
    send_email([member.user], Category.ADMINISTRATIVE)
    assert [batch.headers.get("List-Id") for batch in backend.batches] == [
        f"<school-announcements.{school.slug}.families.example.org>",
        f"<newsletters.{school.slug}.families.example.org>",
        "<promotional.platform.families.example.org>",
        None,
    ]
    assert backend.sent[0].headers["List-Id"] == backend.batches[0].headers["List-Id"]
