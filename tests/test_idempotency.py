"""Every rendered form is sent once: a repeat of its submission key (a double click, going back
and sending again, a retried request) answers the first result and changes nothing.

The keys come from the pages, as a browser sends them: each form renders its own fresh key next
to its CSRF token (app/forms.py); the server claims it before the view (app/submissions.py).
"""

from __future__ import annotations

import functools
import re
import threading
import time
from datetime import timedelta

import pytest
from flask_wtf import FlaskForm
from sqlalchemy import func, select

from app import submissions, tenancy
from app.extensions import db
from app.forms import KEY_FIELD, GuardedForm
from app.models import (
    MailDelivery,
    MailMessage,
    Membership,
    MembershipStatus,
    Role,
    School,
    SupportRequest,
    User,
)
from app.models.calendar import Event
from app.models.submissions import FormSubmission
from tests.conftest import CLOCK_START, PASSWORD, sign_in

KEYS = re.compile(r'name="submission_key" value="([^"]+)"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NEW_PASSWORD = "plum orchard lantern"
EVENT_DAY = (CLOCK_START + timedelta(days=330)).date().isoformat()


def _fields_of(client, page: str, action: str) -> dict[str, str]:
    """The CSRF token and submission key of the form on ``page`` that posts to ``action``."""
    html = client.get(page).get_data(as_text=True)
    start = html.index(f'action="{action}"')
    form = html[start : html.index("</form>", start)]
    (key,) = KEYS.findall(form)
    (token,) = CSRF.findall(form)
    return {"csrf_token": token, KEY_FIELD: key}


def _messages() -> list[MailMessage]:
    db.session.expire_all()
    with tenancy.unscoped():
        return list(db.session.scalars(select(MailMessage).order_by(MailMessage.id)))


def _deliveries() -> int:
    with tenancy.unscoped():
        return db.session.scalar(select(func.count(MailDelivery.id)))


def _claims() -> list[FormSubmission]:
    db.session.expire_all()
    with tenancy.unscoped():
        return list(db.session.scalars(select(FormSubmission)))


@pytest.fixture
def school_with_families(make_school, make_member, make_class, make_family):
    """Maple: an admin, and three families of one class (so a send has several recipients)."""
    school = make_school(name="Maple School", code="MAPLE-1")
    admin = make_member(school, role=Role.ADMIN, email="admin@maple.org")
    hazel = make_class(school, "Hazel")
    for n in range(3):
        parent = make_member(school, email=f"parent{n}@maple.org")
        make_family(school, [parent], f"Family {n}", [("Kid", f"Family{n}", [hazel.id])])
    return school, admin, hazel


ANNOUNCEMENT = {"subject": "Coats on Friday", "body": "Please bring a coat.", "action": "send"}
COMPOSE = "/messages/new?kind=school"


def _send(client, fields, **changes):
    return client.post(COMPOSE, data={**ANNOUNCEMENT, **fields, **changes})


# --- the forms -----------------------------------------------------------------------------------


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def test_every_form_of_the_app_derives_from_the_guard(app):
    forms = [cls for cls in _all_subclasses(FlaskForm) if cls.__module__.startswith("app.")]
    assert len(forms) > 40  # the app's blueprints are imported: their forms are all here
    unguarded = [f"{cls.__module__}.{cls.__qualname__}" for cls in forms if not issubclass(cls, GuardedForm)]
    assert unguarded == []


def test_each_rendered_form_has_its_own_key_and_no_hidden_input_has_an_id(client, school_with_families):
    _school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    page = client.get("/settings/").get_data(as_text=True)
    keys, tokens = KEYS.findall(page), CSRF.findall(page)
    assert len(keys) == len(tokens) >= 4  # every form on the settings page, each with its key
    assert len(set(keys)) == len(keys)
    assert 'id="csrf_token"' not in page
    assert 'id="submission_key"' not in page
    again = KEYS.findall(client.get("/settings/").get_data(as_text=True))
    assert not set(again) & set(keys)  # a new rendering, new keys
    # The hand-written forms (sign-out in the header) carry a key too.
    start = page.index('action="/sign-out"')
    assert KEYS.search(page[start : page.index("</form>", start)])


# --- one submission, one effect --------------------------------------------------------------------


def test_sending_the_same_form_twice_sends_once_and_answers_the_first_redirect(
    client, school_with_families, sent_mail
):
    _school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    fields = _fields_of(client, COMPOSE, COMPOSE)
    first = _send(client, fields)
    assert first.status_code == 303
    deliveries = _deliveries()
    assert deliveries >= 3
    again = _send(client, fields)  # back, and Send again (or a retried request)
    assert (again.status_code, again.headers["Location"]) == (303, first.headers["Location"])
    assert len(_messages()) == 1 and _deliveries() == deliveries
    (claim,) = _claims()
    assert claim.status == 303 and claim.headers == {"Location": first.headers["Location"]}
    # The same text from a newly rendered form is a new message: a key is per rendering.
    assert _send(client, _fields_of(client, COMPOSE, COMPOSE)).status_code == 303
    assert len(_messages()) == 2


def test_a_form_sent_with_errors_keeps_its_key_usable_for_the_corrected_one(client, school_with_families):
    _school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    fields = _fields_of(client, COMPOSE, COMPOSE)
    wrong = _send(client, fields, subject="")
    assert wrong.status_code == 400 and _messages() == [] and _claims() == []
    corrected = _send(client, fields)
    assert corrected.status_code == 303 and len(_messages()) == 1


def test_a_preview_uses_up_nothing_and_the_send_after_it_goes(client, school_with_families):
    _school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    fields = _fields_of(client, COMPOSE, COMPOSE)
    headers = {"HX-Request": "true", "HX-Target": "preview"}
    preview = client.post(COMPOSE, data={**ANNOUNCEMENT, **fields, "action": "preview"}, headers=headers)
    assert preview.status_code == 200 and "Coats on Friday" in preview.get_data(as_text=True)
    assert _claims() == []
    assert _send(client, fields).status_code == 303 and len(_messages()) == 1


def test_an_unknown_or_expired_key_is_a_fresh_form(client, school_with_families, clock):
    _school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    fields = _fields_of(client, COMPOSE, COMPOSE)
    never_rendered = {**fields, KEY_FIELD: "k" * 32}  # well formed, but no page ever had it
    assert _send(client, never_rendered).status_code == 303
    assert _send(client, fields).status_code == 303
    assert len(_messages()) == 2
    clock.shift(hours=25)  # past a key's lifetime: what comes back then is a form sent anew
    assert _send(client, fields).status_code == 303
    assert len(_messages()) == 3
    assert len(_claims()) == 2  # the expired claim was taken over, the unknown key's stays
    clock.shift(hours=25)
    assert submissions.prune_expired() == 2 and _claims() == []


def test_a_key_sent_from_another_session_replays_nothing_of_the_first(
    app, client, school_with_families, make_member
):
    school, admin, _hazel = school_with_families
    other_admin = make_member(school, role=Role.ADMIN, email="other-admin@maple.org")
    sign_in(client, admin.user.email)
    fields = _fields_of(client, COMPOSE, COMPOSE)
    first = _send(client, fields)
    other = app.test_client()
    sign_in(other, other_admin.user.email)
    theirs = _send(other, {**fields, "csrf_token": other.csrf_token()})
    assert theirs.status_code == 303 and theirs.headers["Location"] != first.headers["Location"]
    messages = _messages()
    assert len(messages) == 2 and messages[0].id != messages[1].id


def test_posts_without_a_key_run_as_they_always_did(client, school_with_families):
    """An API client or a page rendered before keys existed: unguarded, not refused."""
    _school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    assert client.form("/settings/profile", {"name": "Elm School", "timezone": "UTC"}).status_code == 303
    assert client.form("/settings/profile", {"name": "Elm School", "timezone": "UTC"}).status_code == 303
    assert _claims() == []


def test_a_repeat_of_an_htmx_answer_says_already_sent_and_changes_nothing(
    client, make_school, make_member, sent_mail
):
    school = make_school(name="Rowan School")
    staff = make_member(school, role=Role.STAFF)
    applicant = make_member(school, status=MembershipStatus.PENDING, email="wanda@example.org")
    sign_in(client, staff.user.email)
    fields = _fields_of(client, "/members/pending", f"/members/{applicant.id}/approve")
    headers = {"HX-Request": "true", "HX-Target": f"pending-{applicant.id}"}
    first = client.post(f"/members/{applicant.id}/approve", data=fields, headers=headers)
    assert first.status_code == 200 and "approved" in first.get_data(as_text=True)
    again = client.post(f"/members/{applicant.id}/approve", data=fields, headers=headers)
    assert again.status_code == 200 and again.headers["HX-Reswap"] == "none"  # the page keeps the first
    body = again.get_data(as_text=True)
    assert 'data-hx-swap-oob="true"' in body and "This form was already sent." in body
    assert [m.to for m in sent_mail] == ["wanda@example.org"]
    # Without JavaScript the repeat is a page that says so, in words.
    plain = client.post(f"/members/{applicant.id}/approve", data=fields)
    assert plain.status_code == 409 and "Already sent" in plain.get_data(as_text=True)


def test_a_repeated_sign_in_signs_in_again_rather_than_replaying_a_redirect_without_its_cookie(
    app, school_with_families
):
    """The first answer's cookie is the new session: a repeat given the redirect alone (a double
    click, whose first answer the browser dropped) would land signed out."""
    _school, admin, _hazel = school_with_families
    browser = app.test_client()
    fields = _fields_of(browser, "/sign-in", "/sign-in")
    name = app.config["SESSION_COOKIE_NAME"]
    before = browser.get_cookie(name).value
    data = {**fields, "email": admin.user.email, "password": PASSWORD}
    assert browser.post("/sign-in", data=data).status_code == 303
    assert _claims() == []  # released: nothing to replay
    browser.set_cookie(name, before)  # the browser never read the first answer
    again = browser.post("/sign-in", data=data)
    assert again.status_code == 303 and browser.get_cookie(name).value != before
    assert 'action="/sign-out"' in browser.get("/").get_data(as_text=True)


def test_a_view_that_raises_releases_its_key(app, client, school_with_families, monkeypatch):
    _school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    fields = _fields_of(client, COMPOSE, COMPOSE)
    from app.messages import services

    real = services.send
    monkeypatch.setattr(services, "send", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("down")))
    with pytest.raises(RuntimeError):
        _send(client, fields)
    assert _claims() == []
    monkeypatch.setattr(services, "send", real)
    assert _send(client, fields).status_code == 303 and len(_messages()) == 1


def test_the_sweeper_prunes_old_claims(client, school_with_families, clock):
    from app.mail.jobs import sweep

    _school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    _send(client, _fields_of(client, COMPOSE, COMPOSE))
    assert len(_claims()) == 1
    assert sweep()["submissions_pruned"] == 0
    clock.shift(hours=25)
    assert sweep()["submissions_pruned"] == 1 and _claims() == []


# --- two at once, on PostgreSQL ----------------------------------------------------------------------


def _slow_view(app, endpoint: str, seconds: float) -> None:
    """Make one view take ``seconds`` before it starts, so the repeat arrives while it runs."""
    view = app.view_functions[endpoint]

    @functools.wraps(view)
    def slow(*args, **kwargs):
        time.sleep(seconds)
        return view(*args, **kwargs)

    app.view_functions[endpoint] = slow


def _twice_at_once(client, url: str, data: dict, headers: dict | None = None) -> list:
    """The same POST twice from one browser, the second 0.1 s after the first (a double click)."""
    answers: list = [None, None]

    def post(i):
        answers[i] = client.post(url, data=data, headers=headers or {})

    threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
    threads[0].start()
    time.sleep(0.1)
    threads[1].start()
    for thread in threads:
        thread.join(timeout=30)
    return answers


def _require_postgresql():
    if db.engine.dialect.name != "postgresql":
        pytest.skip("two requests at once need two writers: run with TEST_DATABASE_URL on PostgreSQL")


def _join_world(make_school, make_class):
    school = make_school(name="Odd School", code="ODD-1")
    hazel = make_class(school, "Hazel", grade="3")
    return school, hazel


@pytest.mark.postgres
def test_a_double_clicked_send_sends_one_announcement(app, client, school_with_families, sent_mail):
    _require_postgresql()
    _school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    fields = _fields_of(client, COMPOSE, COMPOSE)
    _slow_view(app, "messages.compose", 0.5)
    answers = _twice_at_once(client, COMPOSE, {**ANNOUNCEMENT, **fields})
    assert [a.status_code for a in answers] == [303, 303]
    assert answers[0].headers["Location"] == answers[1].headers["Location"]
    assert len(_messages()) == 1 and _deliveries() == 4  # the three parents and the admin, once each


@pytest.mark.postgres
def test_a_double_clicked_ask_to_join_makes_one_account_and_sends_one_email(
    app, client, make_school, make_class, sent_mail
):
    _require_postgresql()
    _school, hazel = _join_world(make_school, make_class)
    fields = _fields_of(client, "/join", "/join")
    data = {
        **fields,
        "invite_code": "ODD-1",
        "name": "Nadia Newparent",
        "email": "twice@example.org",
        "password": NEW_PASSWORD,
        "accept_policy": "y",
        "children-0-first_name": "Mia",
        "children-0-last_name": "Newparent",
        "children-0-class_id": str(hazel.id),
    }
    _slow_view(app, "auth.join", 0.5)
    answers = _twice_at_once(client, "/join", data)
    assert [(a.status_code, a.headers["Location"]) for a in answers] == [(303, "/join/sent")] * 2
    assert db.session.scalar(select(func.count(User.id)).where(User.email == "twice@example.org")) == 1
    assert [m.to for m in sent_mail] == ["twice@example.org"]


@pytest.mark.postgres
def test_a_double_clicked_approval_approves_once_and_emails_once(
    app, client, make_school, make_member, sent_mail
):
    _require_postgresql()
    school = make_school(name="Rowan School")
    staff = make_member(school, role=Role.STAFF)
    applicant = make_member(school, status=MembershipStatus.PENDING, email="wanda@example.org")
    sign_in(client, staff.user.email)
    url = f"/members/{applicant.id}/approve"
    fields = _fields_of(client, "/members/pending", url)
    _slow_view(app, "members.approve", 0.5)
    answers = _twice_at_once(
        client, url, fields, {"HX-Request": "true", "HX-Target": f"pending-{applicant.id}"}
    )
    assert [a.status_code for a in answers] == [200, 200]
    assert "approved" in answers[0].get_data(as_text=True)
    assert answers[1].headers["HX-Reswap"] == "none"
    assert [m.to for m in sent_mail] == ["wanda@example.org"]
    with tenancy.bound(school.id):
        db.session.expire_all()
        assert db.session.get(Membership, applicant.id).status is MembershipStatus.APPROVED


@pytest.mark.postgres
def test_a_double_clicked_settings_save_saves_once(app, client, school_with_families):
    _require_postgresql()
    school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    fields = _fields_of(client, "/settings/", "/settings/profile")
    _slow_view(app, "settings.profile", 0.5)
    answers = _twice_at_once(client, "/settings/profile", {**fields, "name": "Elm School", "timezone": "UTC"})
    assert [(a.status_code, a.headers["Location"]) for a in answers] == [
        (303, "/settings/#section-profile")
    ] * 2
    db.session.expire_all()
    assert db.session.get(School, school.id).name == "Elm School"
    (claim,) = _claims()  # one run of the view: the other answer came from its row
    assert claim.status == 303


@pytest.mark.postgres
def test_a_double_clicked_help_request_makes_one_request(app, client, school_with_families):
    _require_postgresql()
    _school, admin, _hazel = school_with_families
    sign_in(client, admin.user.email)
    fields = _fields_of(client, "/help", "/help")
    data = {**fields, "name": "Ada Admin", "email": "ada@example.org", "subject": "Login trouble"}
    data["message"] = "I cannot see the class list."
    _slow_view(app, "support.help_form", 0.5)
    answers = _twice_at_once(client, "/help", data)
    assert [a.status_code for a in answers] == [303, 303]
    assert answers[0].headers["Location"] == answers[1].headers["Location"]
    with tenancy.unscoped():
        assert db.session.scalar(select(func.count(SupportRequest.id))) == 1


@pytest.mark.postgres
def test_a_double_clicked_new_event_makes_one_event(app, client, make_school, make_member, clock):
    _require_postgresql()
    school = make_school(name="Oak School")
    staff = make_member(school, role=Role.STAFF)
    sign_in(client, staff.user.email)
    fields = _fields_of(client, "/calendar/new", "/calendar/new")
    data = {
        **fields,
        "title": "Bake sale",
        "starts_at": f"{EVENT_DAY}T18:30",
        "ends_at": f"{EVENT_DAY}T20:00",
    }
    data["class_id"] = ""
    _slow_view(app, "calendar.create", 0.5)
    answers = _twice_at_once(client, "/calendar/new", data)
    assert [(a.status_code, a.headers["Location"]) for a in answers] == [(303, "/calendar/")] * 2
    with tenancy.bound(school.id):
        assert db.session.scalar(select(func.count(Event.id))) == 1


@pytest.mark.postgres
def test_a_repeat_that_waits_too_long_is_told_the_form_is_still_being_sent(build_app, school_with_families):
    _require_postgresql()
    _school, admin, _hazel = school_with_families
    app = build_app(FORM_REPEAT_WAIT_SECONDS=0.3)
    client = app.test_client()
    sign_in(client, admin.user.email)
    fields = _fields_of(client, COMPOSE, COMPOSE)
    _slow_view(app, "messages.compose", 2)
    answers = _twice_at_once(client, COMPOSE, {**ANNOUNCEMENT, **fields})
    assert answers[0].status_code == 303
    assert answers[1].status_code == 409 and "Still being sent" in answers[1].get_data(as_text=True)
    with app.app_context():
        assert len(_messages()) == 1
