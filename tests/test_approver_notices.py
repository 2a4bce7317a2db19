"""Approvers choose how they hear of join requests: an email each, a daily digest, or none, and
someone with the permission always hears at least daily while requests wait."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app import jobs, tenancy
from app.extensions import db
from app.members.notices import send_join_digests
from app.models import JoinNotices, Membership, MembershipStatus, Role
from tests.conftest import sign_in

NEWCOMER = "Nadia Newparent"
NEWCOMER_EMAIL = "nadia.newparent@example.org"


@pytest.fixture
def school(make_school):
    return make_school(name="Hazel School", code="HAZEL-1")


def _join(app, name: str = NEWCOMER, email: str = NEWCOMER_EMAIL):
    response = app.test_client().form(
        "/join",
        {
            "invite_code": "HAZEL-1",
            "name": name,
            "email": email,
            "password": "violet tundra marmalade ferry",
            "accept_policy": "y",
        },
    )
    assert response.status_code == 303
    jobs.run_ready_jobs()


def _choose(app, member: Membership, mode: str):
    client = app.test_client()
    assert sign_in(client, member.user.email).status_code == 303
    return client.form("/members/join-notices", {"jn-mode": mode})


def _mode(member: Membership) -> JoinNotices:
    db.session.expire_all()
    with tenancy.bound(member.school_id):
        return db.session.get(Membership, member.id).join_notices


def _asked_to_join(mail) -> list[str]:
    return sorted(m.to for m in mail if m.subject == "Someone is waiting to join Hazel School")


def _digests(mail) -> list:
    return [m for m in mail if "waiting to join Hazel School" in m.subject and m.subject[0].isdigit()]


def test_by_default_every_approver_gets_an_email_per_request(app, clock, school, make_member, sent_mail):
    make_member(school, role=Role.STAFF, email="staff@example.org")
    make_member(school, role=Role.ADMIN, email="admin@example.org")
    make_member(school, email="parent@example.org")  # no permission, no email
    _join(app)
    assert _asked_to_join(sent_mail) == ["admin@example.org", "staff@example.org"]


def test_a_digest_approver_gets_one_email_a_day_from_seven_school_time(
    app, clock, school, make_member, sent_mail
):
    clock.move_to(datetime(2026, 1, 5, 6, 0, tzinfo=UTC))
    daily = make_member(school, role=Role.STAFF, email="daily@example.org")
    make_member(school, role=Role.ADMIN, email="each@example.org")
    assert _choose(app, daily, "digest").status_code == 303
    assert _mode(daily) is JoinNotices.DIGEST
    _join(app)
    _join(app, name="Omar Other", email="omar.other@example.org")
    assert _asked_to_join(sent_mail) == ["each@example.org", "each@example.org"]

    clock.move_to(datetime(2026, 1, 5, 6, 59, tzinfo=UTC))
    assert send_join_digests() == {"digests": 0}  # not before seven
    clock.move_to(datetime(2026, 1, 5, 7, 0, tzinfo=UTC))
    assert send_join_digests() == {"digests": 1}
    jobs.run_ready_jobs()
    [digest] = _digests(sent_mail)
    assert digest.to == "daily@example.org"
    assert digest.subject == "2 requests are waiting to join Hazel School"
    assert "/members/pending" in digest.text
    for personal in (NEWCOMER, NEWCOMER_EMAIL, "Omar", "omar.other"):  # no more than the per-request email
        assert personal not in digest.text and personal not in digest.html
    clock.shift(hours=5)
    assert send_join_digests() == {"digests": 0}  # once a day

    clock.move_to(datetime(2026, 1, 6, 7, 30, tzinfo=UTC))  # still waiting the next morning
    assert send_join_digests() == {"digests": 1}
    with tenancy.bound(school.id):
        for waiting in db.session.query(Membership).filter_by(status=MembershipStatus.PENDING):
            waiting.status = MembershipStatus.APPROVED
        db.session.commit()
    clock.move_to(datetime(2026, 1, 7, 8, 0, tzinfo=UTC))
    assert send_join_digests() == {"digests": 0}  # nobody waits: no digest


def test_the_digest_hour_is_the_schools_own(app, clock, make_school, make_member):
    school = make_school(name="Hazel School", code="HAZEL-1")
    school.timezone = "America/New_York"  # UTC-5 in January
    db.session.commit()
    daily = make_member(school, role=Role.STAFF, email="daily@example.org")
    make_member(school, role=Role.ADMIN)
    with tenancy.bound(school.id):
        db.session.get(Membership, daily.id).join_notices = JoinNotices.DIGEST
        db.session.commit()
    clock.move_to(datetime(2026, 1, 5, 8, 0, tzinfo=UTC))
    _join(app)
    assert send_join_digests() == {"digests": 0}  # 03:00 in New York
    clock.move_to(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    assert send_join_digests() == {"digests": 1}  # 07:00 in New York


def test_off_is_refused_while_nobody_else_hears_of_requests(app, clock, school, make_member, sent_mail):
    only = make_member(school, role=Role.STAFF, email="only@example.org")
    make_member(school, email="parent@example.org")
    refused = _choose(app, only, "off")
    page = refused.get_data(as_text=True)
    assert refused.status_code == 400
    assert "Someone here has to hear of requests to join" in page
    assert '<option selected value="off">' in page  # the choice as sent comes back
    assert _mode(only) is JoinNotices.IMMEDIATE
    assert _choose(app, only, "digest").status_code == 303  # the digest is always allowed


def test_off_is_allowed_while_another_approver_hears_and_falls_back_to_the_digest(
    app, clock, school, make_member, grant_permissions, sent_mail
):
    clock.move_to(datetime(2026, 1, 5, 6, 0, tzinfo=UTC))
    quiet = make_member(school, role=Role.STAFF, email="quiet@example.org")
    other = make_member(school, role=Role.STAFF, email="other@example.org")
    assert _choose(app, quiet, "off").status_code == 303
    _join(app)
    assert _asked_to_join(sent_mail) == ["other@example.org"]
    # The other approver loses the permission: nobody would hear, so "off" gets the digest.
    grant_permissions(other, "members.approve", granted=False)
    _join(app, name="Omar Other", email="omar.other@example.org")
    assert _asked_to_join(sent_mail) == ["other@example.org"]  # "off" sends nothing per request
    clock.move_to(datetime(2026, 1, 5, 7, 0, tzinfo=UTC))
    assert send_join_digests() == {"digests": 1}
    jobs.run_ready_jobs()
    assert [m.to for m in _digests(sent_mail)] == ["quiet@example.org"]
    # And now that nobody else hears, they cannot choose "off" anew either.
    assert _choose(app, quiet, "off").status_code == 400


def test_only_approvers_choose_and_a_made_up_mode_is_refused(app, clock, school, make_member):
    parent = make_member(school, email="parent@example.org")
    assert _choose(app, parent, "digest").status_code == 403
    staff = make_member(school, role=Role.STAFF, email="staff@example.org")
    assert _choose(app, staff, "weekly").status_code == 400
    assert _mode(staff) is JoinNotices.IMMEDIATE
