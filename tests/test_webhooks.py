"""Mailgun webhooks: signed and fresh, each call taken once, the provider's reason kept faithfully.

Mail goes out through the fake Mailgun (real HTTP on loopback), so deliveries carry the message
ids Mailgun really answers with; the events come back in the shape Mailgun posts them.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.mail import provider_events
from app.mail.suppressions import sweep_suppressions
from app.models import Category, DeliveryEvent, DeliveryStatus, MailDelivery, Suppression, WebhookToken
from tests.fakes.mailgun import FakeMailgun, event_data, webhook_body
from tests.mailgun_hooks import API_KEY, DOMAIN, SIGNING_KEY, WEBHOOK, post_event, send_through

pytestmark = pytest.mark.usefixtures("loopback_only")  # nothing may reach the real Mailgun


@pytest.fixture
def fake(app):
    with FakeMailgun(api_key=API_KEY, domain=DOMAIN) as server:
        send_through(app, server)
        yield server


@pytest.fixture
def hook(app, fake):
    return app.test_client(use_cookies=False)


@pytest.fixture
def members(make_school, make_member):
    school = make_school()
    return school, [make_member(school, email=f"m{n}@example.org").user for n in range(3)]


def _suppressions() -> dict[str, tuple]:
    db.session.expire_all()
    rows = db.session.scalars(select(Suppression))
    return {s.email: (s.reason, s.blocks_administrative, s.provider_lists) for s in rows}


def _events() -> list[tuple[str, str, str | None]]:
    db.session.expire_all()
    query = (
        select(MailDelivery.to_email, DeliveryEvent.kind, DeliveryEvent.reason)
        .join(MailDelivery, MailDelivery.id == DeliveryEvent.delivery_id)
        .order_by(DeliveryEvent.id)
    )
    return [tuple(row) for row in db.session.execute(query)]


def test_a_hard_bounce_blocks_all_mail_keeps_the_servers_words_and_is_counted(
    hook, fake, members, send_email
):
    school, users = members
    message = send_email(users, school=school)
    stored = db.session.scalar(
        select(MailDelivery.provider_id).where(MailDelivery.to_email == "m0@example.org")
    )
    assert stored.startswith("<") and stored.endswith(">")  # the send call's answer keeps the brackets
    event = fake.event_for("m0@example.org", "bounce")
    assert event["message"]["headers"]["message-id"] == stored.strip("<>")  # the webhook's does not

    response = post_event(hook, event)
    assert (response.status_code, response.json) == (200, {"status": "recorded"})
    assert _suppressions() == {"m0@example.org": ("bounce", True, "bounces")}
    suppression = db.session.scalar(select(Suppression))
    assert suppression.detail.startswith("550 5.1.1 The email account that you tried to reach does not exist")
    assert _events() == [("m0@example.org", "bounced", "bounce")]
    assert provider_events.feedback_for(message.id) == provider_events.Feedback(bounced=1)


# outcome -> (the suppression it leaves, or None; the delivery event it records, or None)
OUTCOMES = {
    "bounce": (("bounce", True, "bounces"), "bounced"),
    "generic-5xx": (("bounce", True, "bounces"), "bounced"),
    "suppress-bounce": (("suppress-bounce", False, "bounces"), "dropped"),
    "suppress-complaint": (("suppress-complaint", False, "complaints"), "dropped"),
    "suppress-unsubscribe": (("suppress-unsubscribe", False, "unsubscribes"), "dropped"),
    "old": (None, "dropped"),
    "espblock": (None, "dropped"),
    "temporary": (None, None),
    "delivered": (None, None),
    "complaint": (("complaint", False, "complaints"), "complained"),
    "unsubscribe": (("unsubscribed", False, "unsubscribes"), "unsubscribed"),
}


@pytest.mark.parametrize("outcome", sorted(OUTCOMES))
def test_only_a_real_hard_bounce_marks_an_address_dead(hook, fake, members, send_email, outcome):
    """Mailgun's own lists (suppress-*) and giving up (old) are kept as said, not as a bounce."""
    school, users = members
    send_email(users, school=school)
    assert post_event(hook, fake.event_for("m1@example.org", outcome)).status_code == 200
    suppression, kind = OUTCOMES[outcome]
    assert _suppressions() == ({"m1@example.org": suppression} if suppression else {})
    assert [event[1] for event in _events()] == ([kind] if kind else [])


def test_a_permanent_generic_failure_without_a_5xx_is_not_a_bounce(hook, fake, members, send_email):
    school, users = members
    send_email(users, school=school)
    event = fake.event_for("m1@example.org", "generic-5xx")
    event["delivery-status"]["code"] = 421
    assert post_event(hook, event).status_code == 200
    assert _suppressions() == {}
    assert [kind for _, kind, _ in _events()] == ["dropped"]


def test_what_each_suppression_stops_at_send_time(hook, fake, members, send_email):
    """Coherent with the send job: a bounce stops everything; the rest stop optional mail only."""
    school, users = members
    send_email(users, school=school)
    for email, outcome in (("m0@example.org", "bounce"), ("m1@example.org", "complaint")):
        assert post_event(hook, fake.event_for(email, outcome)).status_code == 200
    assert post_event(hook, fake.event_for("m2@example.org", "suppress-bounce")).status_code == 200
    fake.reset()
    news = send_email(users, school=school)
    notice = send_email(users, school=school, category=Category.ADMINISTRATIVE)
    assert sorted(fake.recipients()) == ["m1@example.org", "m2@example.org"]  # the notice only
    statuses = dict(
        db.session.execute(
            select(MailDelivery.to_email, MailDelivery.last_error).where(MailDelivery.message_id == news.id)
        ).all()
    )
    assert statuses == {
        "m0@example.org": "address suppressed (bounce)",
        "m1@example.org": "address suppressed (complaint)",
        "m2@example.org": "address suppressed (suppress-bounce)",
    }
    skipped_notice = db.session.scalars(
        select(MailDelivery.to_email).where(
            MailDelivery.message_id == notice.id, MailDelivery.status == DeliveryStatus.SKIPPED
        )
    ).all()
    assert skipped_notice == ["m0@example.org"]


def test_a_later_bounce_hardens_a_complaint_and_both_lists_are_kept(hook, fake, members, send_email):
    school, users = members
    send_email(users, school=school)
    post_event(hook, fake.event_for("m0@example.org", "complaint"))
    send_email(users, school=school)
    post_event(hook, fake.event_for("m0@example.org", "bounce"))
    assert _suppressions() == {"m0@example.org": ("bounce", True, "bounces,complaints")}
    post_event(hook, fake.event_for("m0@example.org", "suppress-complaint"))
    assert _suppressions() == {"m0@example.org": ("bounce", True, "bounces,complaints")}
    assert db.session.scalar(select(func.count(Suppression.id))) == 1


def test_a_retry_of_the_same_call_answers_200_and_changes_nothing_twice(hook, fake, members, send_email):
    school, users = members
    message = send_email(users, school=school)
    body = webhook_body(fake.event_for("m0@example.org", "complaint"), SIGNING_KEY)
    first, again = hook.post(WEBHOOK, json=body), hook.post(WEBHOOK, json=body)
    assert (first.status_code, first.json) == (200, {"status": "recorded"})
    assert (again.status_code, again.json) == (200, {"status": "already taken"})
    # The same event told again in a call of its own (an account and a domain webhook both set).
    assert post_event(hook, body["event-data"]).status_code == 200
    assert _events() == [("m0@example.org", "complained", None)]
    assert provider_events.feedback_for(message.id).complained == 1
    assert _suppressions() == {"m0@example.org": ("complaint", False, "complaints")}


def test_the_same_call_twice_at_the_same_moment_is_taken_once(
    app, hook, fake, members, send_email, monkeypatch
):
    """The second call waits on the first's token and is answered as a retry once it commits."""
    school, users = members
    message = send_email(users, school=school)
    body = webhook_body(fake.event_for("m0@example.org", "complaint"), SIGNING_KEY)
    inside, real = threading.Event(), provider_events.record

    def slow(event):
        outcome = real(event)
        inside.set()
        time.sleep(0.5)  # the first call holds its transaction while the second one arrives
        return outcome

    monkeypatch.setattr(provider_events, "record", slow)
    answers = {}
    first = threading.Thread(target=lambda: answers.update(first=hook.post(WEBHOOK, json=body).json))
    first.start()
    assert inside.wait(5)
    answers["second"] = app.test_client(use_cookies=False).post(WEBHOOK, json=body).json
    first.join(5)
    assert answers == {"first": {"status": "recorded"}, "second": {"status": "already taken"}}
    assert provider_events.feedback_for(message.id).complained == 1


def test_a_replayed_token_with_other_event_data_changes_nothing(hook, fake, members, send_email):
    """The signature covers timestamp and token only: a token already taken is never acted on again."""
    school, users = members
    send_email(users, school=school)
    body = webhook_body(fake.event_for("m0@example.org", "complaint"), SIGNING_KEY)
    assert hook.post(WEBHOOK, json=body).status_code == 200
    body["event-data"] = fake.event_for("m1@example.org", "bounce")
    assert hook.post(WEBHOOK, json=body).json == {"status": "already taken"}
    assert set(_suppressions()) == {"m0@example.org"}


def test_mailguns_retries_hours_later_are_accepted_and_older_ones_refused(
    clock, hook, fake, members, send_email
):
    """Mailgun retries for ~8 hours with the first try's timestamp; our answers 500 meanwhile."""
    school, users = members
    send_email(users, school=school)
    sent_at = clock.now().timestamp()
    late = webhook_body(fake.event_for("m0@example.org", "complaint"), SIGNING_KEY, timestamp=sent_at)
    too_late = webhook_body(fake.event_for("m1@example.org", "complaint"), SIGNING_KEY, timestamp=sent_at)
    ahead = webhook_body(
        fake.event_for("m2@example.org", "complaint"), SIGNING_KEY, timestamp=sent_at + 6 * 60
    )
    clock.shift(hours=8, minutes=5)  # 5 + 10 + 15 minutes + 1 + 2 + 4 hours, and a margin
    assert hook.post(WEBHOOK, json=late).status_code == 200
    clock.shift(minutes=55, seconds=1)  # 9 hours and a second after the first try
    assert hook.post(WEBHOOK, json=too_late).json == {"error": "stale timestamp"}
    assert hook.post(WEBHOOK, json=too_late).status_code == 406  # refused for good: no more retries
    clock.move_to(clock.now() - timedelta(hours=9, seconds=1))  # back to the first try: 6 minutes early
    assert hook.post(WEBHOOK, json=ahead).status_code == 406
    near = webhook_body(
        fake.event_for("m2@example.org", "complaint"), SIGNING_KEY, timestamp=sent_at + 4 * 60
    )
    assert hook.post(WEBHOOK, json=near).status_code == 200
    assert set(_suppressions()) == {"m0@example.org", "m2@example.org"}


def test_tokens_are_kept_as_long_as_a_retry_is_accepted_then_pruned(clock, hook, fake, members, send_email):
    school, users = members
    send_email(users, school=school)
    body = webhook_body(fake.event_for("m0@example.org", "delivered"), SIGNING_KEY)
    assert hook.post(WEBHOOK, json=body).status_code == 200
    clock.shift(hours=9, minutes=4)  # still inside the window plus the skew allowance: kept
    post_event(hook, fake.event_for("m1@example.org", "delivered"))
    assert db.session.scalar(select(func.count()).select_from(WebhookToken)) == 2
    clock.shift(minutes=1, seconds=1)  # the first token can no longer come back fresh
    post_event(hook, fake.event_for("m2@example.org", "delivered"))  # pruning on write
    tokens = set(db.session.scalars(select(WebhookToken.token)))
    assert body["signature"]["token"] not in tokens and len(tokens) == 2
    assert hook.post(WEBHOOK, json=body).status_code == 406  # and coming back, it is stale
    clock.shift(hours=10)
    assert sweep_suppressions()["tokens_pruned"] == 2  # the sweeper prunes with no webhook arriving
    assert db.session.scalar(select(func.count()).select_from(WebhookToken)) == 0


def test_an_event_about_mail_we_have_no_record_of_asks_for_a_retry(hook, fake, members, send_email):
    """The webhook can outrun the send's commit: 503, no event kept (the token neither), so
    Mailgun's retry is taken once the delivery is known; the bounce suppresses the address at
    once, in case the retries run out first."""
    school, users = members
    send_email(users, school=school)
    event = fake.event_for("m0@example.org", "bounce")
    event["message"]["headers"]["message-id"] = "20260105090000.77.abcdef@" + DOMAIN
    body = webhook_body(event, SIGNING_KEY)
    response = hook.post(WEBHOOK, json=body)
    assert response.status_code == 503 and response.headers["Retry-After"] == "300"
    assert _suppressions() == {"m0@example.org": ("bounce", True, "bounces")} and _events() == []
    assert db.session.scalar(select(func.count()).select_from(WebhookToken)) == 0
    # The send is recorded meanwhile (here: its id stored bare, as an Events API lookup gives it).
    delivery = db.session.scalar(select(MailDelivery).where(MailDelivery.to_email == "m0@example.org"))
    delivery.provider_id = "20260105090000.77.abcdef@" + DOMAIN
    db.session.commit()
    assert hook.post(WEBHOOK, json=body).json == {"status": "recorded"}
    assert _events() == [("m0@example.org", "bounced", "bounce")]
    assert _suppressions() == {"m0@example.org": ("bounce", True, "bounces")}  # the same, once


def test_the_recipient_must_be_one_of_that_messages(hook, fake, members, send_email, make_member):
    school, users = members
    send_email(users[:1], school=school)
    send_email(users[1:], school=school)
    event = fake.event_for("m1@example.org", "bounce")
    event["message"]["headers"]["message-id"] = fake.event_for("m0@example.org", "bounce")["message"][
        "headers"
    ]["message-id"]
    assert post_event(hook, event).status_code == 503  # m1 was not in m0's message
    assert _events() == []  # m0's delivery is not m1's
    assert _suppressions() == {"m1@example.org": ("bounce", True, "bounces")}  # m1 bounced all the same


def test_an_unmatched_provider_refusal_or_soft_failure_suppresses_nothing(hook, fake, members, send_email):
    """Only an address's own signal is kept without a match: Mailgun's list refusal (it keeps
    that list itself) and a temporary failure wait for the delivery to be known."""
    school, users = members
    send_email(users, school=school)
    for reason in ("suppress-bounce", "old"):
        event = fake.event_for("m0@example.org", reason)
        event["message"]["headers"]["message-id"] = "unknown.1@" + DOMAIN
        post_event(hook, event)
    assert _suppressions() == {}


def test_events_with_nothing_to_match_or_keep_are_answered_and_ignored(hook, fake):
    no_message = event_data("complaint", "x@example.org", "")
    assert post_event(hook, no_message).json == {"status": "ignored"}
    assert post_event(hook, {"event": "opened"}).json == {"status": "ignored"}
    assert hook.post(WEBHOOK, json=webhook_body("not an object", SIGNING_KEY)).json == {"status": "ignored"}
    assert _suppressions() == {}


def test_bad_signature_stale_timestamp_and_malformed_json_change_nothing(hook, fake, members, send_email):
    school, users = members
    send_email(users, school=school)
    event = fake.event_for("m0@example.org", "complaint")
    forged = webhook_body(event, "not-the-key")
    assert hook.post(WEBHOOK, json=forged).status_code == 406
    unsigned = {"signature": {"timestamp": str(int(time.time())), "token": "t"}, "event-data": event}
    assert hook.post(WEBHOOK, json=unsigned).status_code == 406
    for stamp in ("NaN", "inf", "soon", "1e999"):
        assert hook.post(WEBHOOK, json=webhook_body(event, SIGNING_KEY) | _stamped(stamp)).status_code == 406
    assert hook.post(WEBHOOK, data="{not json", content_type="application/json").status_code == 400
    assert hook.post(WEBHOOK, json={"signature": "x"}).status_code == 400
    assert hook.post(WEBHOOK, json=[1, 2]).status_code == 400
    assert _suppressions() == {} and _events() == []


def _stamped(timestamp: str) -> dict:
    """A signature block genuinely signed over an odd timestamp (only freshness refuses it)."""
    import hashlib
    import hmac

    signature = hmac.new(SIGNING_KEY.encode(), (timestamp + "tok").encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": "tok", "signature": signature}}


def test_webhook_is_off_without_a_signing_key(client):
    assert client.post(WEBHOOK, json=webhook_body({"event": "complained"}, SIGNING_KEY)).status_code == 404
