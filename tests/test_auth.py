"""The auth blueprint: joining, signing in and out, passwords, email and schools."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from app import jobs, tenancy
from app.auth.jobs import handle_reset_request, sweep_reset_requests
from app.extensions import db
from app.models import (
    AccountToken,
    Membership,
    MembershipStatus,
    PasswordResetRequest,
    Role,
    User,
    WebSession,
)
from app.models.base import utcnow
from tests.conftest import PASSWORD, count_queries, sign_in, without_csrf_tokens

NEW_PASSWORD = "plum orchard lantern"


def _join(
    client, code, email="newparent@example.org", name="Nadia Newparent", password=NEW_PASSWORD, **extra
):
    data = {"invite_code": code, "name": name, "email": email, "password": password, "accept_policy": "y"}
    data.update(extra)
    return client.form("/join", data)


def _link_from(mail, pattern):
    match = re.search(pattern, mail.text)
    assert match, mail.text
    return match.group(0)


# --- joining -------------------------------------------------------------------------


def test_join_creates_a_pending_member_and_tells_the_approvers(client, make_school, make_member, sent_mail):
    school = make_school(name="Maple Grove", code="MAPLE-1")
    admin = make_member(school, role=Role.ADMIN, email="office@example.org")
    make_member(school, role=Role.PARENT, email="otherparent@example.org")

    response = _join(client, " maple-1 ")  # codes are forgiving about case and spaces
    assert response.status_code == 303 and response.headers["Location"] == "/join/sent"
    assert client.get("/account").status_code == 302  # joining signs nobody in
    sign_in(client, "newparent@example.org", NEW_PASSWORD)
    page = client.get("/pending").get_data(as_text=True)
    assert "your request is with <bdi>Maple Grove</bdi>" in page
    assert "Classes" not in page  # no directory for people waiting

    user = db.session.scalar(select(User).where(User.email == "newparent@example.org"))
    with tenancy.bound(school.id):
        membership = db.session.scalar(select(Membership).where(Membership.user_id == user.id))
    assert membership.status is MembershipStatus.PENDING and membership.role is Role.PARENT
    assert sorted(m.to for m in sent_mail) == sorted([admin.user.email, "newparent@example.org"])
    assert all("Maple Grove" in m.subject for m in sent_mail)


@pytest.mark.parametrize(
    ("field", "changes", "message"),
    [
        ("invite_code", {"invite_code": "NOPE-0"}, "We don't recognise this code"),
        ("invite_code", {"invite_code": ""}, "Enter the code your school gave you."),
        ("name", {"name": ""}, "Enter your name."),
        ("name", {"name": "x" * 121}, "at most 120"),
        ("email", {"email": "not-an-email"}, "Enter an email address like"),
        ("password", {"password": "short"}, "at least 15 characters"),
        ("password", {"password": "password1234"}, "too easy to guess"),
        ("password", {"password": "nadianewparent99"}, "name or email"),
        ("accept_policy", {"accept_policy": ""}, "accept the privacy policy"),
    ],
)
def test_join_bad_input_is_explained_next_to_the_field_and_kept(client, make_school, field, changes, message):
    make_school(code="GOOD-1")
    data = {"invite_code": "GOOD-1", "email": "kept@example.org", "name": "Nadia Newparent"}
    data.update(changes)
    response = _join(client, data.pop("invite_code"), **data)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    error = re.search(rf'id="{field}-error">([^<]*)<', page)
    assert error and message.replace("'", "&#39;") in error.group(1), page
    if field != "email":
        assert 'value="kept@example.org"' in page  # what the person typed is not lost
    assert NEW_PASSWORD not in page  # but a password is never echoed back
    assert db.session.scalar(select(User).where(User.email == "kept@example.org")) is None


def test_join_with_htmx_returns_only_the_form(client, make_school):
    make_school(code="GOOD-1")
    response = client.htmx(
        "/join",
        {"invite_code": "BAD", "name": "A Person", "email": "a@example.org", "password": NEW_PASSWORD},
        target="join-form",
    )
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<form id="join-form"')
    assert "<html" not in body
    assert "HX-Target" in response.headers["Vary"]


def test_existing_account_joining_by_the_form_is_emailed_not_added(
    client, make_school, make_member, sent_mail
):
    """Whatever password is typed, an address with an account gets the new-address answer and an
    email saying how to add the school; no membership is made and nobody is signed in."""
    first, second = make_school(), make_school(name="Second School", code="SECOND-1")
    member = make_member(first, email="both@example.org")
    for password in (PASSWORD, "some other words entirely"):
        response = _join(client, "SECOND-1", email="both@example.org", password=password)
        assert response.status_code == 303 and response.headers["Location"] == "/join/sent"
    with tenancy.bound(second.id):
        assert db.session.scalar(select(Membership).where(Membership.user_id == member.user_id)) is None
    assert client.get("/account").status_code == 302
    assert [m.to for m in sent_mail] == ["both@example.org", "both@example.org"]
    assert "already have an account" in sent_mail[0].subject


def test_rejected_person_cannot_rejoin_with_the_code(client, make_school, make_member):
    school = make_school(code="AGAIN-1")
    rejected = make_member(school, status=MembershipStatus.REJECTED, email="rej@example.org")
    response = _join(client, "AGAIN-1", email="rej@example.org", password=PASSWORD)
    assert response.status_code == 303  # the same answer as anyone's: nothing revealed
    db.session.expire_all()
    with tenancy.bound(school.id):
        assert db.session.get(Membership, rejected.id).status is MembershipStatus.REJECTED


# --- signing in and out ----------------------------------------------------------------


def test_sign_in_with_wrong_password_or_unknown_email_says_the_same(client, make_school, make_member):
    make_member(make_school(), email="known@example.org")
    wrong = sign_in(client, "known@example.org", "not the password").get_data(as_text=True)
    unknown = sign_in(client, "nobody@example.org", "not the password").get_data(as_text=True)
    message = "That email and password don&#39;t match an account."
    assert message in wrong and message in unknown
    assert 'value="known@example.org"' in wrong  # the email is kept


def test_sign_in_bad_input_is_a_400_not_a_500(client):
    for data in ({}, {"email": "x" * 300, "password": ""}, {"email": "a\x00b@example.org", "password": "p"}):
        response = client.form("/sign-in", data)
        assert response.status_code == 400, data
    token = client.csrf_token()
    mis_encoded = b"email=%FF%FE%FD&password=%C3%28&csrf_token=" + token.encode()
    response = client.post("/sign-in", data=mis_encoded, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400


def test_deactivated_account_cannot_sign_in(client, make_school, make_member):
    member = make_member(make_school(), email="gone@example.org")
    member.user.active = False
    db.session.commit()
    assert sign_in(client, "gone@example.org").status_code == 400
    assert client.get("/account").status_code == 302


def test_next_only_goes_to_paths_on_this_site(client, make_school, make_member):
    member = make_member(make_school())
    token = client.csrf_token()
    response = client.post(
        "/sign-in?next=//evil.example/x",
        data={"email": member.user.email, "password": PASSWORD, "csrf_token": token},
    )
    assert response.headers["Location"] == "/"
    client.form("/sign-out")
    response = client.post(
        "/sign-in?next=/account",
        data={"email": member.user.email, "password": PASSWORD, "csrf_token": client.csrf_token()},
    )
    assert response.headers["Location"] == "/account"


def test_sign_out_is_post_only_and_ends_the_session(client, make_school, make_member):
    member = make_member(make_school())
    sign_in(client, member.user.email)
    assert client.get("/sign-out").status_code == 405
    assert client.get("/account").status_code == 200
    assert client.form("/sign-out").status_code == 303
    assert client.get("/account").status_code == 302
    assert db.session.scalar(select(WebSession).where(WebSession.user_id == member.user_id)) is None


# --- password reset ----------------------------------------------------------------------


def test_forgot_password_answers_the_same_for_unknown_addresses(client, make_school, make_member, sent_mail):
    make_member(make_school(), email="known@example.org")
    known = client.form("/password/forgot", {"email": "known@example.org"})
    unknown = client.form("/password/forgot", {"email": "unknown@example.org"})
    assert known.status_code == unknown.status_code == 200

    def without_tokens(response):
        return re.sub(r'(content|value)="[^"]*"', "", response.get_data(as_text=True))

    assert without_tokens(known) == without_tokens(unknown)
    assert "Check your email" in unknown.get_data(as_text=True)
    assert [m.to for m in sent_mail] == ["known@example.org"]


@pytest.fixture
def held_jobs(monkeypatch) -> list[jobs.PendingJob]:
    """In-process jobs a request released, held instead of run after it (as Redis would hold them)."""
    held: list[jobs.PendingJob] = []
    monkeypatch.setattr(jobs, "run_ready_jobs", lambda: held.extend(db.session.info.pop("ready_jobs", [])))
    return held


def _work_through(held: list[jobs.PendingJob]) -> None:
    """Be the worker: run the held jobs, then whatever they enqueue (the outbox's send)."""
    for job in held:
        job.func(*job.args)
    held.clear()
    for job in db.session.info.pop("ready_jobs", []):
        job.func(*job.args)


def test_forgot_password_does_the_same_work_for_known_and_unknown_addresses(
    app, make_school, make_member, sent_mail, held_jobs
):
    """No lookup in the request: the same SQL, the same job and the same page for both; the
    worker's job then mails the known address only, and forgets both requests."""
    make_member(make_school(), email="known@example.org")
    seen = {}
    for email in ("known@example.org", "unknown@example.org"):
        client = app.test_client()
        token = client.csrf_token()
        before = len(held_jobs)
        with count_queries() as statements:
            response = client.post("/password/forgot", data={"email": email, "csrf_token": token})
        page = without_csrf_tokens(response.get_data(as_text=True))
        enqueued = [(job.func, job.queue, len(job.args)) for job in held_jobs[before:]]
        seen[email] = (response.status_code, page, statements, enqueued)
    known, unknown = seen["known@example.org"], seen["unknown@example.org"]
    assert known[0] == unknown[0] == 200 and "Check your email" in known[1]
    assert known[1] == unknown[1]  # the same page
    assert known[2] == unknown[2] and any(s.lstrip().startswith("INSERT") for s in known[2])
    assert not any('FROM "user"' in s or "FROM user" in s for s in known[2])  # no lookup of the address
    assert known[3] == unknown[3] == [(handle_reset_request, "mail", 1)]
    assert sent_mail == [] and db.session.scalar(select(func.count(PasswordResetRequest.id))) == 2

    _work_through(held_jobs)
    assert [m.to for m in sent_mail] == ["known@example.org"]
    assert "/password/reset/" in sent_mail[0].text
    assert db.session.scalar(select(func.count(PasswordResetRequest.id))) == 0  # no address kept


def test_a_reset_request_whose_job_was_lost_is_swept_and_sent_once(
    client, clock, make_school, make_member, sent_mail, held_jobs
):
    make_member(make_school(), email="lost@example.org")
    client.form("/password/forgot", {"email": "lost@example.org"})
    [lost] = held_jobs
    held_jobs.clear()  # Redis went down with it: only the row is left
    assert sweep_reset_requests() == {"requests": 0, "dropped": 0}  # not lost yet: its job may still come
    clock.shift(minutes=6)
    swept = client.application.test_cli_runner().invoke(args=["jobs", "sweep-resets"])  # as the worker's
    assert "Swept reset requests: {'requests': 1, 'dropped': 0}" in swept.output
    _work_through([*held_jobs, lost, lost])  # the sweep's copy, and the lost one turning up twice
    assert [m.to for m in sent_mail] == ["lost@example.org"]
    assert sweep_reset_requests() == {"requests": 0, "dropped": 0}
    assert lost.func(*lost.args) == "skipped"


def test_a_reset_request_its_job_keeps_failing_on_is_dropped_after_an_hour(
    client, clock, make_school, make_member, sent_mail, held_jobs
):
    """A request whose job never gets through (it fails every time) is swept again each time
    until it is an hour old, then dropped rather than re-enqueued for ever; a younger one in
    the same sweep is still re-enqueued."""
    make_member(make_school(), email="poison@example.org")
    client.form("/password/forgot", {"email": "poison@example.org"})
    held_jobs.clear()
    clock.shift(minutes=59)
    client.form("/password/forgot", {"email": "fresh@example.org"})
    held_jobs.clear()
    clock.shift(minutes=6)  # the first is 65 minutes old, the second 6
    assert sweep_reset_requests() == {"requests": 1, "dropped": 1}
    [remaining] = db.session.scalars(select(PasswordResetRequest.email))
    assert remaining == "fresh@example.org"
    assert sweep_reset_requests() == {"requests": 1, "dropped": 0}


def test_the_worker_schedules_the_reset_request_sweeper(monkeypatch):
    import worker

    assert (worker.RESET_SWEEP_JOB_ID, sweep_reset_requests, 7) in worker.repeating_jobs(sweep_every=7)


def test_forgot_password_is_rate_limited_per_address_and_each_submit_sends_a_link(
    client, clock, make_school, make_member, sent_mail
):
    """Five a hour per address (a minute apart, under the per-address-and-IP limit): each sends
    its own link, as before the worker took the mail over; the sixth waits and stores nothing."""
    make_member(make_school(), email="often@example.org")
    for _ in range(5):
        assert client.form("/password/forgot", {"email": "often@example.org"}).status_code == 200
        clock.shift(seconds=61)
    limited = client.form("/password/forgot", {"email": "often@example.org"})
    assert limited.status_code == 429
    assert [m.to for m in sent_mail] == ["often@example.org"] * 5
    assert db.session.scalar(select(func.count(PasswordResetRequest.id))) == 0
    assert client.form("/password/forgot", {"email": "other@example.org"}).status_code == 200
    clock.shift(hours=1)
    assert client.form("/password/forgot", {"email": "often@example.org"}).status_code == 200
    assert len(sent_mail) == 6


def _accepted_the_policy(user: User) -> None:
    """As when they joined with the form: the ledger holds their acceptance."""
    from app.consent.ledger import record_acceptance

    record_acceptance(user)
    db.session.commit()


def test_an_account_that_never_accepted_the_policy_does_so_with_its_first_password(
    client, make_school, make_member, sent_mail
):
    """An account the school created (an import) sees the policy box; every problem shows at once."""
    from app.models.consent import ConsentEvent, ConsentKind

    member = make_member(make_school(), email="invited@example.org")
    client.form("/password/forgot", {"email": "invited@example.org"})
    client.get(
        _link_from(sent_mail[0], r"http://localhost/password/reset/\S+").replace("http://localhost", "")
    )
    page = client.get("/password/reset").get_data(as_text=True)
    assert "Choose your password" in page and "agree to it" in page
    both = client.form("/password/reset", {"password": "short", "confirm": "short"})
    text = both.get_data(as_text=True)
    assert (
        both.status_code == 400 and "at least 15 characters" in text and "accept the privacy policy" in text
    )
    done = client.form(
        "/password/reset", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD, "accept_policy": "y"}
    )
    assert done.status_code == 303
    kinds = db.session.scalars(select(ConsentEvent.kind).where(ConsentEvent.user_id == member.user_id)).all()
    assert [ConsentKind(k) for k in kinds] == [ConsentKind.ACCEPTED]


def test_an_account_that_accepted_is_not_asked_again_on_reset(client, make_school, make_member, sent_mail):
    _accepted_the_policy(make_member(make_school(), email="known@example.org").user)
    client.form("/password/forgot", {"email": "known@example.org"})
    client.get(
        _link_from(sent_mail[0], r"http://localhost/password/reset/\S+").replace("http://localhost", "")
    )
    page = client.get("/password/reset").get_data(as_text=True)
    assert "Choose a new password" in page and "agree to it" not in page


def test_reset_link_works_once_and_moves_the_token_out_of_the_url(
    client, make_school, make_member, sent_mail
):
    member = make_member(make_school(), email="reset@example.org")
    _accepted_the_policy(member.user)
    sign_in(client, "reset@example.org")
    other_device = client.application.test_client()
    sign_in(other_device, "reset@example.org")
    client.form("/password/forgot", {"email": "reset@example.org"})
    link = _link_from(sent_mail[0], r"http://localhost/password/reset/\S+")

    landing = client.get(link.replace("http://localhost", ""))
    assert landing.status_code == 303 and landing.headers["Location"] == "/password/reset"
    assert (
        client.form("/password/reset", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}).status_code == 303
    )

    assert other_device.get("/account").status_code == 302  # every session ended
    assert sign_in(client, "reset@example.org", NEW_PASSWORD).status_code == 303
    db.session.expire_all()
    assert db.session.get(User, member.user_id).password_hash != ""

    again = client.get(link.replace("http://localhost", ""), follow_redirects=True)
    assert again.status_code == 400 and "no longer works" in again.get_data(as_text=True)


def test_reset_link_expires_after_an_hour(client, make_school, make_member, sent_mail):
    make_member(make_school(), email="late@example.org")
    client.form("/password/forgot", {"email": "late@example.org"})
    path = _link_from(sent_mail[0], r"http://localhost/password/reset/\S+").replace("http://localhost", "")
    with time_machine.travel(utcnow() + timedelta(hours=1, minutes=1)):
        response = client.get(path, follow_redirects=True)
    assert response.status_code == 400
    assert "no longer works" in response.get_data(as_text=True)


def test_reset_rejects_weak_and_mismatched_passwords(client, make_school, make_member, sent_mail):
    _accepted_the_policy(make_member(make_school(), email="weak@example.org").user)
    client.form("/password/forgot", {"email": "weak@example.org"})
    client.get(
        _link_from(sent_mail[0], r"http://localhost/password/reset/\S+").replace("http://localhost", "")
    )
    weak = client.form("/password/reset", {"password": "short", "confirm": "short"})
    assert weak.status_code == 400 and "at least 15 characters" in weak.get_data(as_text=True)
    mismatch = client.form("/password/reset", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD + "x"})
    assert mismatch.status_code == 400 and "The two passwords differ." in mismatch.get_data(as_text=True)


def test_stored_token_is_a_hash_and_the_email_body_is_erased_after_sending(
    client, make_school, make_member, sent_mail
):
    from app.models import MailMessage

    make_member(make_school(), email="hash@example.org")
    client.form("/password/forgot", {"email": "hash@example.org"})
    raw = _link_from(sent_mail[0], r"http://localhost/password/reset/\S+").rsplit("/", 1)[1]
    token = db.session.scalar(select(AccountToken))
    assert token.token_hash != raw and raw not in token.token_hash
    message = db.session.scalar(select(MailMessage))
    assert message.text_body is None and message.html_body is None


# --- account changes -----------------------------------------------------------------------


def test_change_password_needs_the_current_one_and_ends_other_sessions(client, make_school, make_member):
    member = make_member(make_school())
    email = member.user.email
    sign_in(client, email)
    other = client.application.test_client()
    sign_in(other, email)

    wrong = client.form(
        "/account/password",
        {"pw-current_password": "nope", "pw-password": NEW_PASSWORD, "pw-confirm": NEW_PASSWORD},
    )
    assert wrong.status_code == 400 and "not your current password" in wrong.get_data(as_text=True)
    assert other.get("/account").status_code == 200

    ok = client.form(
        "/account/password",
        {"pw-current_password": PASSWORD, "pw-password": NEW_PASSWORD, "pw-confirm": NEW_PASSWORD},
    )
    assert ok.status_code == 303
    assert client.get("/account").status_code == 200  # this session carries on
    assert other.get("/account").status_code == 302  # the other one is over
    client.form("/sign-out")
    assert sign_in(client, email, NEW_PASSWORD).status_code == 303


def test_change_password_with_htmx_swaps_only_its_section(client, make_school, make_member):
    member = make_member(make_school())
    sign_in(client, member.user.email)
    response = client.htmx(
        "/account/password",
        {"pw-current_password": "nope", "pw-password": "x", "pw-confirm": "x"},
        target="password-section",
    )
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<div id="password-section-body">') and "<html" not in body


def test_change_email_is_confirmed_from_the_new_address(client, make_school, make_member, sent_mail):
    member = make_member(make_school(), email="old@example.org")
    make_member(make_school(), email="taken@example.org")
    sign_in(client, "old@example.org")

    taken = client.form(
        "/account/email", {"em-new_email": "taken@example.org", "em-current_password": PASSWORD}
    )
    assert taken.status_code == 400
    wrong_pw = client.form("/account/email", {"em-new_email": "new@example.org", "em-current_password": "x"})
    assert wrong_pw.status_code == 400 and 'value="new@example.org"' in wrong_pw.get_data(as_text=True)
    assert sent_mail == []

    assert (
        client.form(
            "/account/email", {"em-new_email": "New@Example.org", "em-current_password": PASSWORD}
        ).status_code
        == 303
    )
    assert sorted(m.to for m in sent_mail) == ["new@example.org", "old@example.org"]
    confirm = next(m for m in sent_mail if m.to == "new@example.org")
    db.session.expire_all()
    assert db.session.get(User, member.user_id).email == "old@example.org"  # not until confirmed

    path = _link_from(confirm, r"http://localhost/account/email/confirm/\S+").replace("http://localhost", "")
    assert client.get(path).headers["Location"] == "/account/email/confirm"
    assert "Confirm the new address" in client.get("/account/email/confirm").get_data(as_text=True)
    assert client.form("/account/email/confirm").status_code == 303
    db.session.expire_all()
    assert db.session.get(User, member.user_id).email == "new@example.org"
    assert client.form("/account/email/confirm").status_code == 400  # used once


def test_switch_school_changes_the_current_school_only_to_ones_you_belong_to(
    client, make_school, make_member
):
    a, b, c = (
        make_school(name="Alder School"),
        make_school(name="Beech School"),
        make_school(name="Cypress School"),
    )
    member = make_member(a)
    make_member(b, user=member.user)
    sign_in(client, member.user.email)
    assert "Alder School" in client.get("/").get_data(as_text=True)
    client.form("/schools/switch", {"school_id": str(b.id)})
    assert "<h1>Beech School</h1>" in client.get("/").get_data(as_text=True)
    client.form("/schools/switch", {"school_id": str(c.id)})
    assert "<h1>Beech School</h1>" in client.get("/").get_data(as_text=True)
    assert client.form("/schools/switch", {"school_id": "junk"}).status_code == 303


def test_join_another_school_from_the_account_page(client, make_school, make_member):
    member = make_member(make_school())
    other = make_school(name="Elm School", code="ELM-1")
    sign_in(client, member.user.email)
    bad = client.form("/schools/join", {"js-invite_code": "WRONG"})
    assert bad.status_code == 400 and "don&#39;t recognise" in bad.get_data(as_text=True)
    assert client.form("/schools/join", {"js-invite_code": "elm-1"}).status_code == 303
    assert "your request is with <bdi>Elm School</bdi>" in client.get("/pending").get_data(as_text=True)
    with tenancy.bound(other.id):
        assert (
            db.session.scalar(select(Membership.status).where(Membership.user_id == member.user_id))
            == "pending"
        )


def test_a_reset_link_dies_when_the_password_is_changed(client, make_school, make_member, sent_mail):
    member = make_member(make_school(), email="careful@example.org")
    client.form("/password/forgot", {"email": "careful@example.org"})
    link = sent_mail[0].text.split("http://localhost", 1)[1].split()[0]
    sign_in(client, member.user.email)
    new = "a completely new passphrase"
    client.form("/account/password", {"pw-current_password": PASSWORD, "pw-password": new, "pw-confirm": new})
    stranger = client.application.test_client()
    assert stranger.get(link, follow_redirects=True).status_code == 400


def test_signed_in_admin_reaches_home(client, make_school, make_member):
    school = make_school(name="Oak Hill")
    admin = make_member(school, role="superadmin")
    response = sign_in(client, admin.user.email)
    assert response.status_code == 303
    page = client.get("/")
    assert page.status_code == 200
    assert "Oak Hill" in page.get_data(as_text=True)
