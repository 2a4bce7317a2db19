"""P6, P16: support requests are stored first, then forwarded to Zendesk with name and email only.

Zendesk is a real HTTP server on loopback (tests/fakes/zendesk.py); jobs run in-process after
each commit (no Redis). Nothing here may reach zendesk.com: an autouse guard refuses to resolve
any host but loopback.
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import select

from app import jobs, tenancy
from app.extensions import db
from app.models import (
    Enrollment,
    Family,
    Guardian,
    PermissionChange,
    Role,
    SchoolClass,
    Student,
    SupportKind,
    SupportRequest,
    SupportStatus,
)
from app.models.base import utcnow
from app.support import services
from app.support.jobs import NOT_CONFIGURED, _claim, _ticket_of, forward_request, sweep_support
from app.support.zendesk import TicketRequest, ZendeskClient
from tests.conftest import sign_in
from tests.fakes.zendesk import FIRST_TICKET_ID, FakeZendesk

CLOSED_URL = "http://127.0.0.1:1"  # nothing listens on port 1: connections are refused
GRANT_LABEL = "Allow support to view my school&#39;s data for 72 hours to resolve this"
pytestmark = pytest.mark.usefixtures("loopback_only")  # nothing may reach the real Zendesk


@pytest.fixture
def zendesk(app):
    """A fake Zendesk the app is configured to use, with tiny retry delays."""
    with FakeZendesk() as fake:
        app.config.update(fake.config(), SUPPORT_RETRY_BASE_SECONDS=0.01, ZENDESK_TIMEOUT=5)
        yield fake


def _requests() -> list[SupportRequest]:
    """Every stored request, of every school and of none (read across schools on purpose)."""
    db.session.expire_all()
    with tenancy.unscoped():
        return list(db.session.scalars(select(SupportRequest).order_by(SupportRequest.id)))


def _only_request() -> SupportRequest:
    (support_request,) = _requests()
    return support_request


def _help(client, **fields):
    data = {"name": "Ada Parent", "email": "ada@example.org", "subject": "Login trouble"}
    data |= {"message": "I cannot see the class list."}
    data.update(fields)
    return client.form("/help", data)


def _contact(client, **fields):
    data = {"name": "Nell Visitor", "email": "nell@example.net", "message": "Do you work with nurseries?"}
    data.update(fields)
    return client.form("/contact", data)


def _reference_on(page: str) -> str:
    match = re.search(r"JOC-[A-Z2-9]{8}", page)
    assert match, "the thank-you page shows the reference"
    return match.group(0)


def _sweep_and_run() -> dict:
    result = sweep_support()
    jobs.run_ready_jobs()
    return result


def _wait_out_backoff() -> None:
    time.sleep(0.05)  # SUPPORT_RETRY_BASE_SECONDS is 0.01 in these tests


# -- storing and forwarding -------------------------------------------------------------------


def test_help_form_prefills_the_account_stores_then_forwards(client, make_school, make_member, zendesk):
    member = make_member(make_school(), email="ada@example.org", name="Ada Lovelace")
    sign_in(client, "ada@example.org")
    page = client.get("/help").get_data(as_text=True)
    assert 'value="Ada Lovelace"' in page and 'value="ada@example.org"' in page

    response = _help(client, name="Ada L.", email="ada.work@example.org", subject="Class list empty")
    assert response.status_code == 303 and response.headers["Location"] == "/support/thanks"
    thanks = client.get("/support/thanks").get_data(as_text=True)
    reference = _reference_on(thanks)

    stored = _only_request()
    assert stored.reference == reference
    assert (stored.kind, stored.user_id, stored.school_id) == (
        SupportKind.HELP,
        member.user_id,
        member.school_id,
    )
    assert (stored.name, stored.email, stored.subject) == (
        "Ada L.",
        "ada.work@example.org",
        "Class list empty",
    )
    assert stored.status is SupportStatus.FORWARDED and stored.zendesk_ticket_id == FIRST_TICKET_ID
    assert stored.attempts == 1 and stored.forwarded_at is not None and stored.last_error is None
    (sent,) = zendesk.accepted()
    assert sent.ticket["external_id"] == reference
    assert sent.ticket["requester"] == {"name": "Ada L.", "email": "ada.work@example.org"}
    assert sent.ticket["tags"] == ["joinourclass", "help"]


def test_the_request_is_committed_before_zendesk_is_called(
    client, make_school, make_member, zendesk, monkeypatch
):
    """Store first: when Zendesk is called, another connection already sees the stored row."""
    member = make_member(make_school())
    sign_in(client, member.user.email)
    seen: list[tuple[str, str]] = []
    real = ZendeskClient.create_ticket

    def spy(self, ticket: TicketRequest):
        with db.engine.connect() as other_connection:  # sees committed rows only
            query = select(SupportRequest.reference, SupportRequest.status)
            seen.extend((ref, str(status)) for ref, status in other_connection.execute(query))
        return real(self, ticket)

    monkeypatch.setattr(ZendeskClient, "create_ticket", spy)
    assert _help(client).status_code == 303
    assert seen == [(_only_request().reference, "forwarding")]


def test_only_name_and_email_leave_and_nothing_else_from_the_directory(
    client, make_school, make_member, zendesk
):
    """P6: a guardian with a family, children and a class; none of it reaches Zendesk."""
    school = make_school(name="Hawthorn Quillfeather Academy", code="HAWTHORN-77")
    me = make_member(
        school, role=Role.ROOM_PARENT, email="marguerite@example.org", name="Marguerite Oyelaran"
    )
    partner = make_member(school, email="partner.zz@example.com", name="Bartholomew Oyelaran")
    with tenancy.bound(school.id):
        family = Family(name="Oyelaran-Vasquez Household")
        school_class = SchoolClass(name="Kestrel Room", grade="3", school_year="2026-27")
        db.session.add_all([family, school_class])
        db.session.flush()
        db.session.add_all([Guardian(family_id=family.id, membership_id=m.id) for m in (me, partner)])
        children = [
            Student(family_id=family.id, first_name="Ottoline", last_name="Vasquez-Oyelaran"),
            Student(family_id=family.id, first_name="Peregrine", last_name="Vasquez-Oyelaran"),
        ]
        db.session.add_all(children)
        db.session.flush()
        db.session.add_all([Enrollment(student_id=c.id, class_id=school_class.id) for c in children])
        db.session.commit()
        secrets = [
            school.name,
            school.slug,
            school.invite_code,
            family.name,
            school_class.name,
            partner.user.name,
            partner.user.email,
            me.user.mail_key,
            *[c.first_name for c in children],
            "Vasquez",
        ]
    sign_in(client, "marguerite@example.org")
    response = _help(
        client,
        name="Marguerite Oyelaran",
        email="marguerite@example.org",
        subject="Question about reminders",
        message="How do I turn reminders on?",
    )
    assert response.status_code == 303

    (sent,) = zendesk.accepted()
    reference = _only_request().reference
    assert sent.json == {
        "ticket": {
            "subject": "Question about reminders",
            "comment": {"body": "How do I turn reminders on?"},
            "requester": {"name": "Marguerite Oyelaran", "email": "marguerite@example.org"},
            "external_id": reference,
            "tags": ["joinourclass", "help"],
        }
    }
    recorded = sent.body.decode("utf-8") + json.dumps(sent.headers)
    for secret in secrets:
        assert secret.lower() not in recorded.lower(), secret

    def leaves(value):
        if isinstance(value, dict):
            return [leaf for inner in value.values() for leaf in leaves(inner)]
        if isinstance(value, list):
            return [leaf for inner in value for leaf in leaves(inner)]
        return [value]

    assert all(isinstance(leaf, str) for leaf in leaves(sent.json)), "no ids of any kind"


def test_contact_form_is_public_stored_and_forwarded(app, client, zendesk):
    page = client.get("/contact")
    assert page.status_code == 200
    response = _contact(client)
    assert response.status_code == 303
    reference = _reference_on(client.get("/support/thanks").get_data(as_text=True))
    stored = _only_request()
    assert (stored.reference, stored.kind, stored.user_id) == (reference, SupportKind.CONTACT, None)
    assert stored.status is SupportStatus.FORWARDED
    (sent,) = zendesk.accepted()
    assert sent.ticket["requester"] == {"name": "Nell Visitor", "email": "nell@example.net"}
    assert sent.ticket["comment"] == {"body": "Do you work with nurseries?"}
    assert sent.ticket["subject"] == services.CONTACT_SUBJECT
    assert sent.ticket["tags"] == ["joinourclass", "contact"]


def test_htmx_submissions_redirect_the_whole_page(client, make_school, make_member, zendesk):
    member = make_member(make_school())
    sign_in(client, member.user.email)
    data = {"name": "A", "email": "a@example.org", "subject": "S", "message": "M"}
    response = client.htmx("/help", data, target="help-form")
    assert response.status_code == 204 and response.headers["HX-Redirect"] == "/support/thanks"
    assert _only_request().status is SupportStatus.FORWARDED


# -- the honeypot and the rate limit ----------------------------------------------------------


def test_the_honeypot_is_hidden_and_labelled_for_humans(client):
    page = client.get("/contact").get_data(as_text=True)
    hidden = re.search(r'<div class="visually-hidden">(.*?)</div>', page, re.S).group(1)
    assert "Leave this field empty" in hidden
    assert re.search(r'<input[^>]*name="website"[^>]*>', hidden)
    field = re.search(r'<input[^>]*name="website"[^>]*>', hidden).group(0)
    assert 'tabindex="-1"' in field and 'autocomplete="off"' in field


def test_a_filled_honeypot_gets_the_usual_thanks_but_nothing_is_stored(client, zendesk):
    response = _contact(client, website="http://spam.example")
    assert response.status_code == 303 and response.headers["Location"] == "/support/thanks"
    _reference_on(client.get("/support/thanks").get_data(as_text=True))
    assert _requests() == []
    assert zendesk.attempts == 0


def test_contact_is_rate_limited(client):
    for n in range(5):
        assert _contact(client, message=f"Message {n}").status_code == 303
    limited = _contact(client, message="one too many")
    assert limited.status_code == 429
    assert "Too many attempts" in limited.get_data(as_text=True)
    assert len(_requests()) == 5
    assert client.get("/contact").status_code == 200  # reading the form is not limited


# -- the support.grant tick -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "may_grant"),
    [(Role.PARENT, False), (Role.STAFF, False), (Role.ADMIN, True), (Role.SUPERADMIN, True)],
)
def test_the_grant_tick_is_shown_and_honoured_only_with_the_permission(
    client, make_school, make_member, role, may_grant
):
    member = make_member(make_school(), role=role)
    sign_in(client, member.user.email)
    page = client.get("/help").get_data(as_text=True)
    assert (GRANT_LABEL in page) is may_grant
    assert _help(client, grant_access="y").status_code == 303
    assert _help(client).status_code == 303
    ticked, unticked = _requests()
    assert ticked.grant_access_hours == (72 if may_grant else None)
    assert unticked.grant_access_hours is None


def test_the_grant_follows_per_person_grants_and_revocations(client, make_school, make_member):
    school = make_school()
    parent = make_member(school, role=Role.PARENT)
    admin = make_member(school, role=Role.ADMIN)
    with tenancy.bound(school.id):
        db.session.add(PermissionChange(membership_id=parent.id, permission="support.grant", granted=True))
        db.session.add(PermissionChange(membership_id=admin.id, permission="support.grant", granted=False))
        db.session.commit()

    sign_in(client, parent.user.email)
    assert GRANT_LABEL in client.get("/help").get_data(as_text=True)
    _help(client, grant_access="y")
    client.form("/sign-out")
    sign_in(client, admin.user.email)
    assert GRANT_LABEL not in client.get("/help").get_data(as_text=True)
    _help(client, grant_access="y")
    assert [r.grant_access_hours for r in _requests()] == [72, None]


def test_a_member_waiting_for_approval_can_ask_for_help_but_not_grant(client, make_school, make_member):
    member = make_member(make_school(), role=Role.ADMIN, status="pending")
    sign_in(client, member.user.email)
    page = client.get("/help")
    assert page.status_code == 200 and GRANT_LABEL not in page.get_data(as_text=True)
    assert _help(client, grant_access="y").status_code == 303
    assert _only_request().grant_access_hours is None


# -- my requests ----------------------------------------------------------------------------


def test_my_requests_lists_only_my_own_with_status_and_ticket(client, make_school, make_member, app):
    school = make_school()
    me = make_member(school, email="me@example.org")
    other = make_member(school, email="other@example.org")
    sign_in(client, "other@example.org")
    _help(client, subject="Other person's secret question")
    client.form("/sign-out")
    _contact(client, email="me@example.org", message="Anonymous, same address")  # not linked to me
    sign_in(client, "me@example.org")
    _help(client, subject="My first question")
    _help(client, subject="My second question")

    page = client.get("/help/requests").get_data(as_text=True)
    assert "My first question" in page and "My second question" in page
    assert "Other person's secret question" not in page.replace("&#39;", "'")
    assert services.CONTACT_SUBJECT not in page
    assert page.count("Received, waiting to be forwarded") == 2  # Zendesk is not configured here
    mine = [r for r in _requests() if r.user_id == me.user_id]
    for r in mine:
        assert r.reference in page
    assert all(r.reference not in page for r in _requests() if r.user_id != me.user_id)
    assert other.user_id != me.user_id

    with FakeZendesk() as fake:
        app.config.update(fake.config())
        assert _sweep_and_run()["requests"] == 4
    page = client.get("/help/requests").get_data(as_text=True)
    assert page.count("Forwarded to our support team") == 2
    for r in mine:
        assert f"ticket #{r.zendesk_ticket_id}" in page


def test_support_pages_need_the_right_access(client):
    for path in ("/help", "/help/requests"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/sign-in?next=")
    assert client.get("/contact").status_code == 200
    assert client.get("/support/thanks").status_code == 200


def test_signed_in_pages_link_to_help_and_every_page_to_contact(client, make_school, make_member):
    assert 'href="/contact"' in client.get("/privacy").get_data(as_text=True)
    member = make_member(make_school())
    sign_in(client, member.user.email)
    page = client.get("/").get_data(as_text=True)
    assert 'href="/help"' in page and 'href="/contact"' in page


# -- bad input ----------------------------------------------------------------------------------


def test_bad_help_input_shows_errors_by_the_fields_and_keeps_what_was_typed(client, make_school, make_member):
    member = make_member(make_school())
    sign_in(client, member.user.email)
    response = _help(
        client, name="", email="not-an-address", subject="s" * 151, message="Keep <b>this</b> text"
    )
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'id="name-error"' in page and "Enter your name." in page
    assert 'id="email-error"' in page and 'value="not-an-address"' in page
    assert 'id="subject-error"' in page and "at most 150" in page and "s" * 151 in page
    assert "Keep &lt;b&gt;this&lt;/b&gt; text" in page
    assert _requests() == []

    fragment = client.htmx("/help", {"subject": "Only this", "message": ""}, target="help-form")
    assert fragment.status_code == 400
    body = fragment.get_data(as_text=True)
    assert "<html" not in body and 'id="help-form"' in body
    assert 'value="Only this"' in body and 'id="message-error"' in body


def test_bad_contact_input_shows_errors_and_keeps_what_was_typed(client):
    response = _contact(client, name="Nell", email="nell@", message="")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'id="email-error"' in page and 'value="nell@"' in page and 'value="Nell"' in page
    assert 'id="message-error"' in page
    long = _contact(client, message="x" * 10_001)
    assert long.status_code == 400 and "at most 10,000" in long.get_data(as_text=True)
    assert _requests() == []


@pytest.mark.parametrize(
    "value", ["x" * 20_000, "a\x00b", "<script>alert(1)</script>", "名前 🙂 \u202e", "-1"]
)
def test_junk_never_gives_a_500(client, make_school, make_member, value):
    for response in (
        _contact(client, name=value, email=value, message=value, website=""),
        _contact(client, name=value, email="ok@example.org", message=value),
    ):
        assert response.status_code in (303, 400), response.status_code
        assert "<script>alert(1)</script>" not in response.get_data(as_text=True)
    member = make_member(make_school())
    sign_in(client, member.user.email)
    response = _help(client, name=value, subject=value[:150], message=value, grant_access=value)
    assert response.status_code in (303, 400)
    assert "<script>alert(1)</script>" not in client.get("/help/requests").get_data(as_text=True)


# -- retries and outages ------------------------------------------------------------------------


def test_a_server_error_is_retried_and_forwarded_exactly_once(client, zendesk):
    zendesk.queue_responses([(500, {"error": "InternalError"})])
    _contact(client)
    stored = _only_request()
    assert stored.status is SupportStatus.RECEIVED and stored.attempts == 1
    assert "500" in stored.last_error and stored.next_attempt_at is not None

    _wait_out_backoff()
    assert _sweep_and_run()["requests"] == 1
    stored = _only_request()
    assert stored.status is SupportStatus.FORWARDED and stored.attempts == 2
    assert stored.zendesk_ticket_id == FIRST_TICKET_ID and stored.last_error is None
    assert _sweep_and_run()["requests"] == 0
    assert forward_request(stored.id) == "skipped"  # a forwarded request is never sent again
    assert len(zendesk.accepted()) == 1 and zendesk.attempts == 2


def test_a_rate_limit_waits_for_retry_after_then_forwards_once(client, zendesk, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr(jobs, "enqueue_in", lambda seconds, func, *args, **kw: delays.append(seconds))
    zendesk.queue_responses([(429, {"error": "TooManyRequests"}, {"Retry-After": "120"})])
    _contact(client)
    stored = _only_request()
    assert stored.status is SupportStatus.RECEIVED and "429" in stored.last_error
    assert delays == [120]  # the worker's delayed retry honours Retry-After over the tiny backoff
    wait = (stored.next_attempt_at - utcnow()).total_seconds()
    assert 115 < wait <= 120

    assert _sweep_and_run()["requests"] == 0  # not due yet
    assert forward_request(stored.id) == "skipped"
    assert zendesk.attempts == 1
    with time_machine.travel(utcnow() + timedelta(seconds=121)):
        assert _sweep_and_run()["requests"] == 1
    stored = _only_request()
    assert stored.status is SupportStatus.FORWARDED
    assert len(zendesk.tickets()) == 1 and zendesk.attempts == 2


def test_backoff_doubles_per_attempt(client, zendesk, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr(jobs, "enqueue_in", lambda seconds, func, *args, **kw: delays.append(seconds))
    zendesk.queue_responses([(503, None), (503, None), (503, None)])
    _contact(client)
    for _ in range(2):
        time.sleep(delays[-1] + 0.02)
        _sweep_and_run()
    assert delays == pytest.approx([0.01, 0.02, 0.04])
    time.sleep(0.06)
    _sweep_and_run()
    assert _only_request().status is SupportStatus.FORWARDED


def test_zendesk_down_keeps_the_request_until_it_comes_back(app, client, zendesk):
    app.config["ZENDESK_BASE_URL"] = CLOSED_URL
    _contact(client)
    stored = _only_request()
    assert stored.status is SupportStatus.RECEIVED
    assert "connection refused" in stored.last_error and stored.attempts == 1
    _wait_out_backoff()
    _sweep_and_run()
    assert _only_request().attempts == 2 and _only_request().status is SupportStatus.RECEIVED

    app.config["ZENDESK_BASE_URL"] = zendesk.base_url  # Zendesk is back
    _wait_out_backoff()
    assert _sweep_and_run()["requests"] == 1
    stored = _only_request()
    assert stored.status is SupportStatus.FORWARDED and stored.attempts == 3
    assert len(zendesk.accepted()) == 1


def test_create_then_no_answer_makes_exactly_one_ticket_even_if_zendesk_forgets_the_key(client, zendesk):
    """Zendesk made the ticket and dropped the connection; the retry looks it up, files nothing."""
    zendesk.honour_idempotency = False  # the Idempotency-Key alone would not save us
    zendesk.drop_after_create(1)
    _contact(client)
    stored = _only_request()
    assert stored.status is SupportStatus.RECEIVED and stored.delayed
    assert "could not be reached" in stored.last_error
    (made,) = zendesk.tickets()

    _wait_out_backoff()
    assert _sweep_and_run()["requests"] == 1
    stored = _only_request()
    assert stored.status is SupportStatus.FORWARDED and stored.zendesk_ticket_id == made.ticket_id
    assert zendesk.tickets_for(stored.reference) == [made.ticket_id]
    assert (zendesk.attempts, zendesk.lookups) == (1, 1)  # looked up, not posted again


def test_a_retry_after_a_server_error_posts_again_when_the_lookup_finds_nothing(client, zendesk):
    zendesk.honour_idempotency = False
    zendesk.queue_responses([(502, None)])  # refused before any ticket was made
    _contact(client)
    _wait_out_backoff()
    _sweep_and_run()
    stored = _only_request()
    assert stored.status is SupportStatus.FORWARDED
    assert zendesk.tickets_for(stored.reference) == [stored.zendesk_ticket_id]
    assert (zendesk.attempts, zendesk.lookups) == (2, 1)


def test_zendesk_down_for_a_while_is_delivered_later_once_and_shown_delayed(
    app, client, clock, make_school, make_member, zendesk
):
    make_member(make_school(), email="waiting@example.org")
    sign_in(client, "waiting@example.org")
    app.config["ZENDESK_BASE_URL"] = CLOSED_URL
    zendesk.honour_idempotency = False
    _help(client, subject="While Zendesk is down")
    for _ in range(3):
        clock.shift(minutes=1)  # past the capped backoff
        _sweep_and_run()
    stored = _only_request()
    assert (stored.status, stored.attempts, stored.delayed) == (SupportStatus.RECEIVED, 4, True)
    page = client.get("/help/requests").get_data(as_text=True)
    assert "Delayed: our support system is not answering; we keep trying." in page

    app.config["ZENDESK_BASE_URL"] = zendesk.base_url  # back after a while
    clock.shift(minutes=1)  # past the capped backoff
    assert _sweep_and_run()["requests"] == 1
    stored = _only_request()
    assert stored.status is SupportStatus.FORWARDED and not stored.delayed
    assert zendesk.tickets_for(stored.reference) == [stored.zendesk_ticket_id]
    assert _sweep_and_run()["requests"] == 0
    assert len(zendesk.tickets()) == 1
    assert "Forwarded to our support team" in client.get("/help/requests").get_data(as_text=True)


def test_zendesk_down_for_72_hours_fails_the_request_visibly(app, client, zendesk):
    app.config["ZENDESK_BASE_URL"] = CLOSED_URL
    _contact(client)
    stored = _only_request()
    with time_machine.travel(stored.created_at + timedelta(hours=71)):
        _sweep_and_run()
        assert _only_request().status is SupportStatus.RECEIVED  # still trying
    with time_machine.travel(stored.created_at + timedelta(hours=72, minutes=1)):
        _sweep_and_run()
    stored = _only_request()
    assert stored.status is SupportStatus.FAILED and stored.next_attempt_at is None
    assert stored.last_error.startswith("gave up after 72 hours: Zendesk could not be reached")
    assert zendesk.tickets() == []


def test_a_lookup_that_fails_is_retried_like_a_failed_post(app, client, zendesk, monkeypatch):
    zendesk.queue_responses([(500, None)])
    _contact(client)
    app.config["ZENDESK_BASE_URL"] = CLOSED_URL  # the retry's lookup cannot be made
    _wait_out_backoff()
    _sweep_and_run()
    stored = _only_request()
    assert stored.status is SupportStatus.RECEIVED and "connection refused" in stored.last_error
    app.config["ZENDESK_BASE_URL"] = zendesk.base_url
    _wait_out_backoff()
    _sweep_and_run()
    assert _only_request().status is SupportStatus.FORWARDED and len(zendesk.tickets()) == 1


def test_not_configured_waits_received_then_goes_once_configured(app, client):
    _contact(client)
    stored = _only_request()
    assert (stored.status, stored.attempts, stored.last_error) == (SupportStatus.RECEIVED, 0, NOT_CONFIGURED)
    assert _sweep_and_run() == {"requests": 0, "waiting": 1, "configured": False}

    with FakeZendesk() as fake:
        app.config.update(fake.config())
        assert _sweep_and_run() == {"requests": 1, "configured": True}
        assert _sweep_and_run()["requests"] == 0
        assert len(fake.accepted()) == 1
    stored = _only_request()
    assert stored.status is SupportStatus.FORWARDED and stored.attempts == 1


def test_a_lost_job_is_found_by_the_sweeper(app, make_school, make_member, zendesk):
    member = make_member(make_school())
    services.submit_help(
        user_id=member.user_id,
        school_id=None,
        name="A",
        email="a@example.org",
        subject="S",
        message="M",
        grant_access_hours=None,
    )
    db.session.info.pop("pending_jobs")  # the job is lost (Redis was down)
    db.session.commit()
    jobs.run_ready_jobs()
    assert _sweep_and_run()["requests"] == 0  # too fresh to be called lost
    with time_machine.travel(utcnow() + timedelta(minutes=6)):
        assert _sweep_and_run()["requests"] == 1
    assert _only_request().status is SupportStatus.FORWARDED
    assert len(zendesk.accepted()) == 1


def test_a_worker_killed_mid_call_is_recovered_without_a_second_ticket(client, zendesk):
    """Zendesk made the ticket but the worker died: the retry's Idempotency-Key finds it."""
    zendesk.queue_responses([(500, None)])
    _contact(client)
    stored = _only_request()
    _wait_out_backoff()
    assert _claim(stored.id) is not None  # the worker claims it...
    zendesk_client = ZendeskClient.from_config(client.application.config)
    ticket_id = zendesk_client.create_ticket(_ticket_of(stored))  # ...Zendesk makes it, the worker dies
    assert _only_request().status is SupportStatus.FORWARDING
    assert _sweep_and_run()["requests"] == 0  # not stuck for long enough yet
    with time_machine.travel(utcnow() + timedelta(minutes=16)):
        assert _sweep_and_run()["requests"] == 1
    stored = _only_request()
    assert stored.status is SupportStatus.FORWARDED and stored.zendesk_ticket_id == ticket_id
    assert len(zendesk.tickets()) == 1


def test_two_workers_never_both_claim_a_request(client, zendesk):
    zendesk.queue_responses([(500, None)])
    _contact(client)
    _wait_out_backoff()
    stored_id = _only_request().id
    assert _claim(stored_id) is not None
    assert _claim(stored_id) is None
    assert forward_request(stored_id) == "skipped"


def test_a_refusal_fails_for_good_and_is_not_retried(client, zendesk):
    zendesk.queue_responses([(422, {"error": "RecordInvalid", "description": "Record validation errors"})])
    _contact(client)
    stored = _only_request()
    assert stored.status is SupportStatus.FAILED and "422" in stored.last_error
    _wait_out_backoff()
    assert _sweep_and_run()["requests"] == 0
    assert forward_request(stored.id) == "skipped"
    assert zendesk.attempts == 1


def test_a_refused_token_keeps_the_request_for_when_it_is_fixed(app, client, zendesk, monkeypatch):
    delays: list[float] = []
    monkeypatch.setattr(jobs, "enqueue_in", lambda seconds, func, *args, **kw: delays.append(seconds))
    app.config["ZENDESK_API_TOKEN"] = "zd-rotated-away"
    _contact(client)
    stored = _only_request()
    assert stored.status is SupportStatus.RECEIVED and "401" in stored.last_error
    assert "zd-rotated-away" not in stored.last_error
    assert delays == [3600]
    app.config["ZENDESK_API_TOKEN"] = zendesk.api_token
    with time_machine.travel(utcnow() + timedelta(hours=1, seconds=1)):
        assert _sweep_and_run()["requests"] == 1
    assert _only_request().status is SupportStatus.FORWARDED


def test_the_cli_command_sweeps(app, zendesk):
    app.config["ZENDESK_BASE_URL"] = CLOSED_URL
    services.submit_contact(user_id=None, name="A", email="a@example.org", message="M")
    db.session.commit()
    jobs.run_ready_jobs()
    assert _only_request().status is SupportStatus.RECEIVED
    app.config["ZENDESK_BASE_URL"] = zendesk.base_url
    _wait_out_backoff()
    result = app.test_cli_runner().invoke(args=["jobs", "sweep-support"])
    assert result.exit_code == 0 and "'requests': 1" in result.output
    assert _only_request().status is SupportStatus.FORWARDED


def test_the_worker_schedules_the_support_sweeper(monkeypatch):
    import worker

    assert (worker.SUPPORT_SWEEP_JOB_ID, sweep_support, 7) in worker.repeating_jobs(sweep_every=7)
