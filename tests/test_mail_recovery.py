"""A delivery is sent once: batch ids, leases and asking Mailgun what it took, against the fake.

The send job runs in this process on the ``clock`` fixture; Mailgun is the fake on loopback
(tests/fakes/mailgun.py), reached over real HTTP, whose Events API shows what it accepted,
as late as it is told to. Every test counts what the fake accepted per address: twice is a
duplicate email in someone's inbox.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from app import jobs, tenancy
from app.extensions import db
from app.mail import claims, queue_email
from app.mail.backends import OutcomeUnknown
from app.mail.jobs import send_message, sweep
from app.mail.mailgun import MailgunBackend
from app.models import Category, DeliveryStatus, MailDelivery, Role
from tests.conftest import sign_in
from tests.fakes.mailgun import FakeMailgun

KEY = "key-recovery-0f1e2d3c4b5a"
DOMAIN = "mg.recovery.example"
TIMEOUT = 5.0
LAG = 5.0  # the backend's MAILGUN_EVENTS_LAG_SECONDS in these tests
LEASE = 10.0  # MAIL_LEASE_SECONDS
# A batch whose answer was lost is decided only once the provider could no longer take it (the
# call's deadline: timeout + lease) and its events have had the lag to show.
SETTLE = TIMEOUT + LEASE + LAG
DROP = {"drop": True}  # the fake takes the batch, then closes the connection unanswered
pytestmark = pytest.mark.usefixtures("loopback_only")


@pytest.fixture
def fake():
    with FakeMailgun(api_key=KEY, domain=DOMAIN) as server:
        yield server


@pytest.fixture
def mailgun(app, fake) -> MailgunBackend:
    """The app sends through the fake, as MAIL_BACKEND=mailgun would."""
    backend = MailgunBackend(KEY, DOMAIN, base_url=fake.base_url, timeout=TIMEOUT, events_lag=LAG)
    app.extensions["mail_backend"] = backend
    app.config["MAIL_LEASE_SECONDS"] = LEASE
    return backend


@pytest.fixture
def announcement(make_school, make_member):
    """announcement(n) -> id of a committed school announcement to n members, its job not yet run."""

    def write(count: int) -> int:
        school = make_school()
        users = [make_member(school, email=f"family{n:03d}@example.org").user for n in range(count)]
        with tenancy.bound(school.id):  # written as its school's routes write it
            message = queue_email(
                "email_change_notice",
                users,
                category=Category.SCHOOL_ANNOUNCEMENTS,
                name="x",
                school_id=school.id,
            )
            db.session.info.pop("pending_jobs")  # the test runs the job itself, when it chooses
            db.session.commit()
        return message.id

    return write


def deliveries(message_id: int) -> list[MailDelivery]:
    db.session.expire_all()
    query = select(MailDelivery).where(MailDelivery.message_id == message_id).order_by(MailDelivery.id)
    return list(db.session.scalars(query))


def statuses(message_id: int) -> Counter:
    return Counter(d.status for d in deliveries(message_id))


def assert_each_received_once(fake: FakeMailgun, count: int) -> None:
    received = Counter(address.lower() for address in fake.recipients())
    assert len(received) == count, f"{count - len(received)} never reached the provider"
    assert [address for address, times in received.items() if times > 1] == []


# -- the batch id ---------------------------------------------------------------------------------


def test_the_batch_id_is_recorded_and_committed_before_the_provider_call(app, fake, announcement, clock):
    seen = {}

    class Watching(MailgunBackend):
        """Reads the rows from another connection at the moment of the call: what a crash would leave."""

        def send_batch(self, batch):
            with db.engine.connect() as other:
                query = select(
                    MailDelivery.id, MailDelivery.batch_id, MailDelivery.status, MailDelivery.lease_until
                )
                seen["rows"] = other.execute(query.where(MailDelivery.message_id == message_id)).all()
                seen["claimed_by"] = other.execute(select(MailDelivery.claimed_by).distinct()).scalars().all()
            seen["batch_id"] = batch.batch_id
            return super().send_batch(batch)

    app.extensions["mail_backend"] = Watching(
        KEY, DOMAIN, base_url=fake.base_url, timeout=TIMEOUT, events_lag=LAG
    )
    message_id = announcement(3)

    assert send_message(message_id)["sent"] == 3

    batch_id = seen["batch_id"]
    assert len(batch_id) == 32
    lease = clock.now() + timedelta(seconds=TIMEOUT + app.config["MAIL_LEASE_SECONDS"])
    assert {(row.batch_id, row.status, row.lease_until) for row in seen["rows"]} == {
        (batch_id, DeliveryStatus.SENDING, lease)
    }
    assert len(seen["claimed_by"]) == 1 and seen["claimed_by"][0]
    [request] = fake.accepted()
    assert request.fields["v:batch"] == [batch_id]  # travels with the message, onto its events
    assert {e["recipient"] for e in fake.events.accepted_for("batch", batch_id)} == set(request.recipients)
    for delivery in deliveries(message_id):
        assert (delivery.status, delivery.batch_id, delivery.lease_until) == (
            DeliveryStatus.SENT,
            batch_id,
            None,
        )
        assert delivery.provider_id == request.message_id


# -- the answer was lost ----------------------------------------------------------------------------


def test_accepted_then_dropped_is_looked_up_and_nobody_gets_it_twice(mailgun, fake, announcement, clock):
    message_id = announcement(5)
    fake.queue_responses([DROP])

    counts = send_message(message_id)

    assert counts["retry"] == 5 and counts["sent"] == 0
    assert fake.stats()["dropped"] == 1 and fake.stats()["recipients"] == 5  # it did take them
    batch_id = deliveries(message_id)[0].batch_id
    for delivery in deliveries(message_id):
        assert (delivery.status, delivery.batch_id) == (DeliveryStatus.PENDING, batch_id)
        assert delivery.last_error == "Mailgun did not answer: connection closed without a response"

    clock.shift(seconds=SETTLE)
    counts = send_message(message_id)

    assert (counts["recovered"], counts["sent"]) == (5, 0)
    stats = fake.stats()
    assert (stats["attempts"], stats["requests"]) == (1, 1)  # no second POST
    assert stats["event_requests"] >= 1
    [request] = fake.accepted()
    for delivery in deliveries(message_id):
        assert (delivery.status, delivery.provider_id, delivery.last_error) == (
            DeliveryStatus.SENT,
            request.message_id,
            None,
        )
    assert_each_received_once(fake, 5)


def test_only_the_recipients_the_provider_did_not_take_are_sent_again(
    mailgun, fake, announcement, clock, monkeypatch
):
    """Two batches without an answer: Mailgun took the first (then dropped the line), not the second."""
    message_id = announcement(4)
    monkeypatch.setattr(mailgun, "max_batch", 2)
    fake.queue_responses([DROP, (500, {"message": "Internal Server Error"})])

    assert send_message(message_id)["retry"] == 4
    first, second = (
        {d.batch_id for d in deliveries(message_id)[:2]},
        {d.batch_id for d in deliveries(message_id)[2:]},
    )
    assert len(first) == len(second) == 1 and first != second  # a 5xx may have been taken: kept
    assert fake.stats()["requests"] == 1

    monkeypatch.setattr(mailgun, "max_batch", 4)  # one claim now holds rows of both batches
    clock.shift(seconds=SETTLE)
    counts = send_message(message_id)

    assert (counts["recovered"], counts["sent"]) == (2, 2)
    taken, resent = fake.accepted()
    emails = [d.to_email for d in deliveries(message_id)]
    assert taken.recipients == emails[:2] and resent.recipients == emails[2:]
    assert resent.fields["v:batch"] != taken.fields["v:batch"]  # the rest went under a new batch id
    assert statuses(message_id) == Counter({DeliveryStatus.SENT: 4})
    assert_each_received_once(fake, 4)


class Crash(BaseException):
    """The worker dies: nothing after this point of the send job runs."""


def test_a_batch_taken_late_in_a_slow_call_is_waited_for_not_sent_twice(app, fake, announcement, clock):
    """The provider takes the batch just before the call's deadline, its events show the lag
    later, and the worker dies without an answer. Its lease runs out before those events show:
    "not among the accepted" then means nothing yet, and the rows wait until the deadline plus
    the lag before anything is decided."""
    timeout, lease, lag = 5.0, 2.0, 5.0  # an event lag longer than the lease: the hard case
    app.config["MAIL_LEASE_SECONDS"] = lease
    fake.events.delay = lag  # each accepted event shows this long after Mailgun took the batch
    fake.queue_responses([DROP])

    class SlowThenDies(MailgunBackend):
        def send_batch(self, batch):
            clock.shift(seconds=timeout - 0.1)  # the call takes all but the last tenth of its time
            with pytest.raises(OutcomeUnknown):
                super().send_batch(batch)  # Mailgun takes it now; the answer never comes
            raise Crash

    app.extensions["mail_backend"] = SlowThenDies(
        KEY, DOMAIN, base_url=fake.base_url, timeout=timeout, events_lag=lag
    )
    message_id = announcement(3)
    with pytest.raises(Crash):
        send_message(message_id)
    db.session.rollback()
    handed = deliveries(message_id)[0]
    assert {d.status for d in deliveries(message_id)} == {DeliveryStatus.SENDING}

    # The lease runs out (timeout + lease after the hand-over); a live worker takes over.
    app.extensions["mail_backend"] = MailgunBackend(
        KEY, DOMAIN, base_url=fake.base_url, timeout=timeout, events_lag=lag
    )
    clock.move_to(handed.batch_at + timedelta(seconds=timeout + lease + 0.1))
    assert sweep()["messages"] == 1
    jobs.run_ready_jobs()

    assert fake.stats()["requests"] == 1  # the events do not show yet, and nothing went again
    settled_at = handed.batch_at + timedelta(seconds=timeout + lease + lag)
    for delivery in deliveries(message_id):
        assert (delivery.status, delivery.next_attempt_at) == (DeliveryStatus.PENDING, settled_at)

    clock.move_to(settled_at)
    counts = send_message(message_id)

    assert (counts["recovered"], counts["sent"]) == (3, 0)
    assert fake.stats()["requests"] == 1
    assert statuses(message_id) == Counter({DeliveryStatus.SENT: 3})
    assert_each_received_once(fake, 3)


def test_when_mailgun_cannot_say_the_rows_wait_and_are_not_sent_again(mailgun, fake, announcement, clock):
    message_id = announcement(2)
    fake.queue_responses([DROP])
    send_message(message_id)
    fake.queue_event_responses([(500, {"message": "Internal Server Error"})])

    clock.shift(seconds=SETTLE)
    assert send_message(message_id)["retry"] == 2

    for delivery in deliveries(message_id):
        assert delivery.status is DeliveryStatus.PENDING and delivery.batch_id is not None
        assert delivery.last_error == (
            "could not ask the provider whether an earlier try went through: "
            "Mailgun's events could not be read: Mailgun server error (500)"
        )
    assert fake.stats()["requests"] == 1

    clock.shift(seconds=SETTLE)
    assert send_message(message_id)["recovered"] == 2
    assert fake.stats()["requests"] == 1
    assert_each_received_once(fake, 2)


def test_a_refusal_is_not_looked_up_and_goes_again(mailgun, fake, announcement, clock):
    """A 429 answers "not taken": no batch is left to ask about, the retry just sends."""
    message_id = announcement(2)
    fake.queue_responses([(429, {"message": "Too Many Requests"}, {"Retry-After": "1"})])
    send_message(message_id)
    assert {d.batch_id for d in deliveries(message_id)} == {None}

    clock.shift(seconds=1)
    assert send_message(message_id)["sent"] == 2
    assert fake.stats()["event_requests"] == 0
    assert_each_received_once(fake, 2)


# -- leases -----------------------------------------------------------------------------------------


class WorkerDied(BaseException):
    """The worker's process ends in the middle of the call (not an exception the job could catch)."""


def test_an_expired_lease_is_taken_over_by_another_run_which_asks_before_sending(
    app, mailgun, fake, announcement, clock
):
    class DiesAfterTheCall(MailgunBackend):
        def send_batch(self, batch):
            super().send_batch(batch)  # Mailgun has it...
            raise WorkerDied  # ...and nobody lives to record the answer

    app.extensions["mail_backend"] = DiesAfterTheCall(KEY, DOMAIN, base_url=fake.base_url, timeout=TIMEOUT)
    message_id = announcement(3)
    with pytest.raises(WorkerDied):
        send_message(message_id)
    db.session.rollback()
    app.extensions["mail_backend"] = mailgun  # the other workers are alive and well
    dead = deliveries(message_id)
    holder = dead[0].claimed_by
    assert {(d.status, d.claimed_by) for d in dead} == {(DeliveryStatus.SENDING, holder)}
    lease = timedelta(seconds=TIMEOUT + app.config["MAIL_LEASE_SECONDS"])
    assert dead[0].lease_until == dead[0].batch_at + lease

    # While the lease lasts, the holder may still be waiting for Mailgun's answer: hands off.
    assert send_message(message_id)["sent"] == 0
    clock.shift(lease - timedelta(seconds=1))
    assert sweep()["messages"] == 0
    assert statuses(message_id) == Counter({DeliveryStatus.SENDING: 3})

    clock.shift(seconds=2)
    assert sweep()["messages"] == 1
    jobs.run_ready_jobs()

    after = deliveries(message_id)
    assert {d.status for d in after} == {DeliveryStatus.SENT}
    assert {d.claimed_by for d in after} != {holder}  # another run took them over
    assert {d.provider_id for d in after} == {fake.accepted()[0].message_id}
    assert fake.stats()["requests"] == 1
    assert_each_received_once(fake, 3)


def test_a_run_killed_between_two_batches_leaves_its_message_to_the_sweeper_at_once(
    app, mailgun, fake, announcement, clock, monkeypatch
):
    """No row was claimed when it died, so no lease runs out; the message's own hold does."""
    message_id = announcement(4)
    monkeypatch.setattr(mailgun, "max_batch", 2)
    real_claim, calls = claims.claim, []

    def dies_before_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise WorkerDied
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(claims, "claim", dies_before_the_second_batch)
    with pytest.raises(WorkerDied):
        send_message(message_id)
    db.session.rollback()
    monkeypatch.setattr(claims, "claim", real_claim)
    assert statuses(message_id) == Counter({DeliveryStatus.SENT: 2, DeliveryStatus.PENDING: 2})
    hold = timedelta(seconds=TIMEOUT + app.config["MAIL_LEASE_SECONDS"])

    assert sweep()["messages"] == 0  # for all the sweeper knows, the run is still going
    clock.shift(hold + timedelta(seconds=1))  # far less than SWEEP_PENDING_AFTER (5 minutes)
    assert sweep()["messages"] == 1
    jobs.run_ready_jobs()

    assert statuses(message_id) == Counter({DeliveryStatus.SENT: 4})
    assert_each_received_once(fake, 4)
    assert sweep()["messages"] == 0  # done: the message is released, nothing left to find


def test_a_run_that_lost_its_rows_writes_nothing_over_the_next_holder(
    app, mailgun, fake, announcement, clock
):
    """A holder that outlived its lease (a stalled process) must not record over the new holder."""
    taken_over = {}

    class Stalls(MailgunBackend):
        def send_batch(self, batch):
            # While this call hangs, the lease runs out and another run takes the rows over.
            clock.shift(seconds=SETTLE + 1)  # the lease has run out, and the lag has passed
            sweep()
            db.session.commit()
            app.extensions["mail_backend"] = mailgun
            taken_over["counts"] = send_message(message_id)
            app.extensions["mail_backend"] = self
            fake.queue_responses([(500, {"message": "Internal Server Error"})])  # then it fails late
            return super().send_batch(batch)

    app.extensions["mail_backend"] = Stalls(
        KEY, DOMAIN, base_url=fake.base_url, timeout=TIMEOUT, events_lag=0
    )
    message_id = announcement(2)
    send_message(message_id)

    # The new holder found nothing accepted (the stalled call had not reached Mailgun) and sent.
    assert taken_over["counts"]["sent"] == 2
    # The stalled call then failed: its holder no longer holds the rows and changed nothing.
    assert statuses(message_id) == Counter({DeliveryStatus.SENT: 2})
    assert {d.last_error for d in deliveries(message_id)} == {None}


# -- what the message page shows ----------------------------------------------------------------


def test_the_message_page_shows_delayed_deliveries_with_the_reason(
    client, make_school, make_member, mailgun, fake
):
    school = make_school()
    admin = make_member(school, role=Role.ADMIN, email="admin@school.example.org")
    for n in range(3):
        make_member(school, email=f"parent{n}@example.org")
    fake.queue_responses([(429, {"message": "Too Many Requests"}, {"Retry-After": "600"})])
    sign_in(client, admin.user.email)
    sent = client.form(
        "/messages/new?kind=school", {"subject": "Coats", "body": "Bring a coat.", "action": "send"}
    )
    assert sent.status_code in (302, 303)
    page = client.get(sent.headers["Location"]).get_data(as_text=True)

    assert 'data-count="delayed">4<' in page and 'data-count="waiting">0<' in page
    assert "Delayed: Mailgun rate limit reached (429)." in page
    assert "Next try" in page and "up to 72 hours" in page
    assert 'data-hx-trigger="every 2s"' in page  # still going: the page keeps watching
    listing = client.get("/messages").get_data(as_text=True)
    assert 'data-count="waiting">4<span class="muted"> (4 delayed)</span>' in listing
