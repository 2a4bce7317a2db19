"""The approval queue: approve and reject in place with htmx, or with plain forms."""

from __future__ import annotations

import re

from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import Membership, MembershipStatus, Role
from tests.conftest import sign_in


def _status(membership_id, school_id):
    db.session.expire_all()
    with tenancy.bound(school_id):
        return db.session.scalar(select(Membership.status).where(Membership.id == membership_id))


def test_queue_lists_only_this_schools_pending_people(client, make_school, make_member):
    school, other = make_school(), make_school()
    staff = make_member(school, role=Role.STAFF)
    make_member(school, status=MembershipStatus.PENDING, name="Waiting Wanda")
    make_member(school, status=MembershipStatus.APPROVED, name="Approved Arthur")
    make_member(other, status=MembershipStatus.PENDING, name="Elsewhere Elsa")
    sign_in(client, staff.user.email)
    page = client.get("/members/pending").get_data(as_text=True)
    assert "Waiting Wanda" in page
    assert "Approved Arthur" not in page and "Elsewhere Elsa" not in page


def test_the_queue_comes_a_page_at_a_time_oldest_first_with_a_capped_count(
    client, make_school, make_member, monkeypatch
):
    """A large school's backlog is neither loaded nor counted whole on every view."""
    from app.members import services

    monkeypatch.setattr(services, "QUEUE_PAGE", 2)
    monkeypatch.setattr(services, "COUNT_CAP", 4)
    school = make_school()
    staff = make_member(school, role=Role.STAFF)
    for n in range(5):
        make_member(school, status=MembershipStatus.PENDING, name=f"Waiting W{n}")
    sign_in(client, staff.user.email)
    first = client.get("/members/pending").get_data(as_text=True)
    assert "4+ people waiting" in first
    assert "Waiting W0" in first and "Waiting W1" in first and "Waiting W2" not in first
    pages = [first]
    while (found := re.search(r'href="(/members/pending\?after=\d+)"', pages[-1])) and len(pages) < 5:
        pages.append(client.get(found.group(1)).get_data(as_text=True))
    seen = [[n for n in range(5) if f"Waiting W{n}<" in page] for page in pages]
    assert seen == [[0, 1], [2, 3], [4]]
    assert client.get("/members/pending?after=junk").status_code == 200


def test_approve_with_htmx_swaps_the_row_and_emails_the_person(client, make_school, make_member, sent_mail):
    school = make_school(name="Rowan School")
    staff = make_member(school, role=Role.STAFF)
    applicant = make_member(
        school, status=MembershipStatus.PENDING, email="wanda@example.org", name="Waiting Wanda"
    )
    sign_in(client, staff.user.email)
    response = client.htmx(f"/members/{applicant.id}/approve", target=f"pending-{applicant.id}")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith(f'<li class="card queue-row decided" id="pending-{applicant.id}"')
    assert "approved" in body
    assert _status(applicant.id, school.id) is MembershipStatus.APPROVED
    assert [(m.to, m.subject) for m in sent_mail] == [("wanda@example.org", "Welcome to Rowan School")]

    again = client.htmx(f"/members/{applicant.id}/approve", target=f"pending-{applicant.id}")
    assert again.status_code == 404  # decided once; nothing to decide again
    sign_in_page = client.application.test_client()
    assert sign_in(sign_in_page, "wanda@example.org").status_code == 303
    assert sign_in_page.get("/").status_code == 200


def test_approve_without_javascript_redirects_back_with_a_flash(client, make_school, make_member):
    school = make_school()
    staff = make_member(school, role=Role.STAFF)
    applicant = make_member(school, status=MembershipStatus.PENDING)
    sign_in(client, staff.user.email)
    response = client.form(f"/members/{applicant.id}/approve")
    assert response.status_code == 303 and response.headers["Location"] == "/members/pending"
    assert "Request approved." in client.get("/members/pending").get_data(as_text=True)


def test_reject_needs_a_reason_and_sends_it(client, make_school, make_member, sent_mail):
    school = make_school()
    staff = make_member(school, role=Role.STAFF)
    applicant = make_member(school, status=MembershipStatus.PENDING, email="r@example.org")
    sign_in(client, staff.user.email)

    missing = client.htmx(
        f"/members/{applicant.id}/reject", {"reason": "  "}, target=f"pending-{applicant.id}"
    )
    assert missing.status_code == 400
    assert "Say briefly why" in missing.get_data(as_text=True)
    assert missing.get_data(as_text=True).lstrip().startswith("<li")
    assert _status(applicant.id, school.id) is MembershipStatus.PENDING

    reason = "We could not match this name to a family <b>at our school</b>."
    done = client.htmx(
        f"/members/{applicant.id}/reject", {"reason": reason}, target=f"pending-{applicant.id}"
    )
    assert done.status_code == 200
    assert _status(applicant.id, school.id) is MembershipStatus.REJECTED
    mail = sent_mail[-1]
    assert mail.to == "r@example.org" and reason in mail.text
    assert "&lt;b&gt;at our school&lt;/b&gt;" in mail.html  # escaped in the HTML part


def test_parents_cannot_approve(client, make_school, make_member):
    school = make_school()
    parent = make_member(school, role=Role.PARENT)
    applicant = make_member(school, status=MembershipStatus.PENDING)
    sign_in(client, parent.user.email)
    assert client.form(f"/members/{applicant.id}/approve").status_code == 403
    assert _status(applicant.id, school.id) is MembershipStatus.PENDING


def test_two_decisions_at_once_cannot_both_win(client, make_school, make_member, sent_mail):
    school = make_school()
    staff = make_member(school, role=Role.STAFF)
    applicant = make_member(school, status=MembershipStatus.PENDING, email="applicant@example.org")
    sign_in(client, staff.user.email)
    from app.members import lifecycle

    with client.application.test_request_context():
        from flask import g

        tenancy.bind_request(school.id)
        g.membership, g.school = staff, school
        stale = db.session.get(type(applicant), applicant.id)
        with tenancy.bound(school.id):
            assert lifecycle.approve(stale) is True
            db.session.commit()
            assert lifecycle.reject(stale, "too late") is False  # the second decision loses
            db.session.commit()
    assert client.form(f"/members/{applicant.id}/reject", {"reason": "x"}).status_code == 404
