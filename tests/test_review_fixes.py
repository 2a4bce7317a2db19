"""Regression tests for defects found in review: each fails on the code before its fix."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from app import jobs, tenancy
from app.extensions import db
from app.mail import queue_email
from app.models import (
    Category,
    ClassHelper,
    ClassRole,
    Enrollment,
    Family,
    Guardian,
    MembershipStatus,
    Role,
    SchoolClass,
    Student,
    WebSession,
)
from app.models.base import utcnow
from tests.conftest import PASSWORD, sign_in


def _school_with_class(make_school):
    school = make_school()
    with tenancy.bound(school.id):
        school_class = SchoolClass(name="Birch", grade="Grade 1", school_year="2026-27")
        db.session.add(school_class)
        db.session.commit()
    return school, school_class


def _family(school, school_class, *guardians, name="Shared family"):
    with tenancy.bound(school.id):
        family = Family(name=name)
        db.session.add(family)
        db.session.flush()
        for guardian in guardians:
            db.session.add(Guardian(family_id=family.id, membership_id=guardian.id))
        student = Student(family_id=family.id, first_name="Kit", last_name="Shared")
        db.session.add(student)
        db.session.flush()
        db.session.add(Enrollment(student_id=student.id, class_id=school_class.id))
        db.session.commit()


def test_a_pending_co_guardians_name_finds_nothing_and_unlisted_families_are_not_counted(
    client, make_school, make_member
):
    school, birch = _school_with_class(make_school)
    approved = make_member(school, name="Anna Approved")
    pending = make_member(school, status=MembershipStatus.PENDING, name="Zephyrine Pendingname")
    only_pending = make_member(school, status=MembershipStatus.PENDING, name="Otto Onlypending")
    _family(school, birch, approved, pending)
    _family(school, birch, only_pending, name="Hidden family")
    sign_in(client, make_member(school, role=Role.STAFF).user.email)
    assert "0 families" in client.get("/directory/?q=zephyrine").get_data(as_text=True)
    everything = client.get("/directory/").get_data(as_text=True)
    assert "1 family" in everything and "Hidden family" not in everything


def test_class_page_lists_only_approved_helpers(client, make_school, make_member):
    school, birch = _school_with_class(make_school)
    for status, name in (
        (MembershipStatus.PENDING, "Paula Pending"),
        (MembershipStatus.REJECTED, "Rita Rejected"),
    ):
        helper = make_member(school, status=status, name=name)
        with tenancy.bound(school.id):
            db.session.add(ClassHelper(class_id=birch.id, membership_id=helper.id, role=ClassRole.TEACHER))
            db.session.commit()
    sign_in(client, make_member(school).user.email)
    page = client.get(f"/classes/{birch.id}").get_data(as_text=True)
    assert "Paula Pending" not in page and "Rita Rejected" not in page


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


def test_a_reset_link_dies_when_the_password_is_changed(client, make_school, make_member, sent_mail):
    member = make_member(make_school(), email="careful@example.org")
    client.form("/password/forgot", {"email": "careful@example.org"})
    link = sent_mail[0].text.split("http://localhost", 1)[1].split()[0]
    sign_in(client, member.user.email)
    new = "a completely new passphrase"
    client.form("/account/password", {"pw-current_password": PASSWORD, "pw-password": new, "pw-confirm": new})
    stranger = client.application.test_client()
    assert stranger.get(link, follow_redirects=True).status_code == 400


def test_visitors_who_never_sign_in_get_short_sessions(client):
    client.get("/sign-in")
    assert db.session.scalar(select(WebSession)) is None  # reading a form keeps nothing
    client.form("/sign-out")  # an anonymous session with something to keep: the flash
    row = db.session.scalar(select(WebSession))
    assert row.user_id is None
    assert row.expires_at - utcnow() <= timedelta(hours=2)


def test_the_dev_mailbox_is_for_superadmins_only(build_app, make_school, make_member):
    school = make_school()
    admin = make_member(school, role=Role.ADMIN)
    superadmin = make_member(school, role=Role.SUPERADMIN)
    app = build_app(DEV_MAILBOX=True)
    for member, expected in ((admin, 403), (superadmin, 200)):
        visitor = app.test_client()
        sign_in(visitor, member.user.email)
        assert visitor.get("/dev/mailbox").status_code == expected


def test_repeating_jobs_survive_a_failure(app, caplog):
    calls = []

    @jobs.repeating
    def flaky():
        calls.append(1)
        raise RuntimeError("database restarting")

    assert flaky() == {"error": True}
    assert calls == [1]
    assert "runs again at its next interval" in caplog.text


def test_two_decisions_at_once_cannot_both_win(client, make_school, make_member, sent_mail):
    school = make_school()
    staff = make_member(school, role=Role.STAFF)
    applicant = make_member(school, status=MembershipStatus.PENDING, email="applicant@example.org")
    sign_in(client, staff.user.email)
    from app.members import services

    with client.application.test_request_context():
        from flask import g

        tenancy.bind_request(school.id)
        g.membership, g.school = staff, school
        stale = db.session.get(type(applicant), applicant.id)
        with tenancy.bound(school.id):
            assert services.approve(stale) is True
            db.session.commit()
            assert services.reject(stale, "too late") is False  # the second decision loses
            db.session.commit()
    assert client.form(f"/members/{applicant.id}/reject", {"reason": "x"}).status_code == 404


def test_odd_input_gives_clear_answers_not_500s(client, make_school, make_member):
    sign_in(client, make_member(make_school(), role=Role.STAFF).user.email)
    assert client.get("/directory/?page=%C2%B2&class_id=%C2%B2").status_code == 200
    anonymous = client.application.test_client(use_cookies=False)
    assert anonymous.get("/unsubscribe/abc.s.%C3%A9").status_code == 400


def test_a_failing_request_logs_the_rule_not_the_path(build_app, caplog):
    app = build_app(PROPAGATE_EXCEPTIONS=False)

    @app.route("/boom/<token>")
    def boom(token):
        raise RuntimeError("boom")

    from app.permissions import public

    public(boom)
    caplog.set_level(logging.ERROR)
    assert app.test_client().get("/boom/secret-token-value").status_code == 500
    assert "/boom/<token>" in caplog.text and "secret-token-value" not in caplog.text
