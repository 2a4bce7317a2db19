"""People a school has let go (deactivated, rejected, closed accounts) get nothing more of it.

Recipients are chosen when a message is written, but a scheduled announcement can wait 90
days and a digest item a day: whether someone still belongs is checked again at send time.
Closed accounts leave the approval queues, and a rejected request leaves no family link.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import select

from app import jobs, tenancy
from app.extensions import db
from app.mail import queue_email
from app.mail.digest import send_digests
from app.mail.jobs import send_message, sweep
from app.models import (
    Category,
    DeliveryMode,
    DeliveryStatus,
    Enrollment,
    Family,
    Guardian,
    MailDelivery,
    MailPreference,
    Membership,
    MembershipStatus,
    Role,
    SchoolClass,
    Student,
)
from app.models.base import utcnow
from app.models.directory import EnrollmentChange
from tests.conftest import count_queries, sign_in

REMOVED = "no longer a member of this school"


@pytest.fixture
def maple(make_school, make_member):
    """Maple School with an admin, staff and two parents; Birch School next door."""
    school = make_school(name="Maple School")
    people = {
        "admin": make_member(school, role=Role.ADMIN, email="admin@maple.org"),
        "staff": make_member(school, role=Role.STAFF, email="staff@maple.org"),
        "pat": make_member(school, email="pat@maple.org", name="Pat Parent"),
        "quinn": make_member(school, email="quinn@maple.org", name="Quinn Parent"),
    }
    birch = make_school(name="Birch School")
    people["pat_at_birch"] = make_member(birch, user=people["pat"].user)
    return {"school": school, "birch": birch, **people}


def _set_status(membership, status):
    with tenancy.bound(membership.school_id):
        db.session.get(Membership, membership.id).status = status
        db.session.commit()


def _delivery(email, message_id=None):
    db.session.expire_all()
    query = select(MailDelivery).where(MailDelivery.to_email == email)
    if message_id is not None:
        query = query.where(MailDelivery.message_id == message_id)
    return db.session.scalars(query.order_by(MailDelivery.id)).all()


# --- finding 1: the send job and the digest ---------------------------------------------------


def test_a_scheduled_announcement_skips_a_member_deactivated_before_its_time(client, maple, sent_mail):
    due = (utcnow() + timedelta(days=3)).replace(second=0, microsecond=0)
    sign_in(client, "admin@maple.org")
    response = client.form(
        "/messages/new?kind=school",
        {
            "subject": "Friday",
            "body": "Coats on Friday.",
            "action": "send",
            "send_at": due.strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert response.status_code == 303
    # Tuesday: the admin switches Pat's membership off.
    assert (
        client.form(f"/settings/people/{maple['pat'].id}/deactivate", {"confirmed": "yes"}).status_code == 303
    )
    with time_machine.travel(due + timedelta(minutes=1)):
        sweep()
        jobs.run_ready_jobs()
    received = sorted(m.to for m in sent_mail)
    assert received == ["admin@maple.org", "quinn@maple.org", "staff@maple.org"]
    (skipped,) = _delivery("pat@maple.org")
    assert (skipped.status, skipped.last_error) == (DeliveryStatus.SKIPPED, REMOVED)


@pytest.mark.parametrize("status", [MembershipStatus.REJECTED, MembershipStatus.DEACTIVATED, None])
def test_the_send_job_skips_whoever_holds_no_approved_membership_now(app, maple, sent_mail, status):
    pat, quinn = maple["pat"], maple["quinn"]
    with tenancy.bound(maple["school"].id):
        message = queue_email(
            "email_change_notice",
            [pat.user, quinn.user],
            category=Category.NEWSLETTERS,
            school_id=maple["school"].id,
            name="x",
        )
        db.session.info.pop("pending_jobs")
        db.session.commit()
    if status is None:  # the membership row is gone altogether
        with tenancy.bound(pat.school_id):
            db.session.delete(db.session.get(Membership, pat.id))
            db.session.commit()
    else:
        _set_status(pat, status)
    assert send_message(message.id) == {"sent": 1, "skipped": 1, "digest": 0, "failed": 0, "retry": 0}
    assert [m.to for m in sent_mail] == ["quinn@maple.org"]
    assert _delivery("pat@maple.org")[0].last_error == REMOVED


def test_administrative_mail_of_a_school_still_reaches_someone_it_turned_away(
    client, maple, make_member, sent_mail
):
    """'Your request was declined' is about the membership itself: it must arrive (P11)."""
    applicant = make_member(maple["school"], status=MembershipStatus.PENDING, email="r@example.org")
    sign_in(client, "staff@maple.org")
    sent_mail.clear()
    assert client.form(f"/members/{applicant.id}/reject", {"reason": "Unknown family."}).status_code == 303
    assert [m.to for m in sent_mail] == ["r@example.org"]
    assert _delivery("r@example.org")[0].status is DeliveryStatus.SENT


def test_membership_is_checked_with_one_query_per_batch(app, maple, make_member, sent_mail):
    school = maple["school"]
    statements = []
    for size in (5, 50):
        members = [make_member(school, email=f"m{size}-{n}@maple.org") for n in range(size)]
        # The removed ones side by side: the ORM writes a run of deliveries with the same
        # changed columns in one statement, alternating skipped and sent rows in one each.
        for gone in members[: size - size // 2]:
            _set_status(gone, MembershipStatus.DEACTIVATED)
        with tenancy.bound(school.id):
            message = queue_email(
                "email_change_notice",
                [m.user for m in members],
                category=Category.SCHOOL_ANNOUNCEMENTS,
                school_id=school.id,
                name="x",
            )
            db.session.info.pop("pending_jobs")
            db.session.commit()
        with count_queries() as seen:
            counts = send_message(message.id)
        assert (counts["sent"], counts["skipped"]) == (size // 2, size - size // 2)
        statements.append(len(seen))
    assert statements[0] == statements[1]


def _prefer_digest(membership, category=Category.SCHOOL_ANNOUNCEMENTS):
    db.session.add(MailPreference(user_id=membership.user_id, category=category, mode=DeliveryMode.DIGEST))
    db.session.commit()


def test_held_items_of_a_school_someone_left_are_not_in_their_digest(app, maple, sent_mail, send_email):
    pat = maple["pat"]
    _prefer_digest(pat)
    maple_news = send_email([pat.user], school=maple["school"], name="Maple Orchard News")
    birch_news = send_email([pat.user], school=maple["birch"], name="Birch Grove News")
    assert sent_mail == []  # both held for the digest
    _set_status(pat, MembershipStatus.DEACTIVATED)  # Pat leaves Maple, stays at Birch

    assert send_digests() == {"digests": 1, "items": 2}
    jobs.run_ready_jobs()
    (digest,) = sent_mail
    assert "Birch Grove News" in digest.text and "Maple Orchard News" not in digest.text
    assert digest.subject == "Your daily digest: School announcements (1)"
    (held,) = _delivery("pat@maple.org", maple_news.id)
    assert (held.status, held.last_error) == (DeliveryStatus.SKIPPED, REMOVED)
    assert _delivery("pat@maple.org", birch_news.id)[0].status is DeliveryStatus.DIGESTED


def test_no_digest_at_all_when_every_held_item_is_of_a_school_they_left(app, maple, sent_mail, send_email):
    pat = maple["pat"]
    _prefer_digest(pat)
    send_email([pat.user], school=maple["school"], name="One")
    send_email([pat.user], school=maple["school"], name="Two")
    _set_status(pat, MembershipStatus.REJECTED)
    assert send_digests() == {"digests": 0, "items": 2}
    jobs.run_ready_jobs()
    assert sent_mail == []
    assert {(d.status, d.last_error) for d in _delivery("pat@maple.org")} == {
        (DeliveryStatus.SKIPPED, REMOVED)
    }


# --- finding 3: closed accounts in the approval queues ------------------------------------------


def test_a_closed_account_leaves_the_approval_queue_and_cannot_be_approved(client, maple, make_member):
    school = maple["school"]
    make_member(school, status=MembershipStatus.PENDING, name="Wanda Waiting", email="wanda@example.org")
    closed = make_member(
        school, status=MembershipStatus.PENDING, name="Cleo Closed", email="cleo@example.org"
    )
    closed.user.active = False
    db.session.commit()
    sign_in(client, "staff@maple.org")
    page = client.get("/members/pending").get_data(as_text=True)
    assert "Wanda Waiting" in page
    assert "Cleo Closed" not in page and "cleo@example.org" not in page
    # A page opened before Cleo left: the row says why in place (htmx), or the queue does.
    in_place = client.htmx(f"/members/{closed.id}/approve", target=f"pending-{closed.id}")
    assert in_place.status_code == 200
    assert "closed their account" in in_place.get_data(as_text=True)
    assert "Cleo" not in in_place.get_data(as_text=True)
    plain = client.form(f"/members/{closed.id}/approve", follow_redirects=True)
    assert "closed their account" in plain.get_data(as_text=True)
    db.session.expire_all()
    with tenancy.bound(school.id):
        assert db.session.get(Membership, closed.id).status is MembershipStatus.PENDING


def _family_of(school, guardians, *, pending=(), child="Mia"):
    """A family with one child in a class, these guardians, and these waiting to join it."""
    with tenancy.bound(school.id):
        hazel = SchoolClass(name="Hazel", grade="3", school_year="2026-27")
        family = Family(name="Orchard family")
        db.session.add_all([hazel, family])
        db.session.flush()
        student = Student(family_id=family.id, first_name=child, last_name="Orchard")
        db.session.add(student)
        db.session.flush()
        db.session.add(Enrollment(student_id=student.id, class_id=hazel.id))
        db.session.add_all(Guardian(family_id=family.id, membership_id=m.id) for m in (*guardians, *pending))
        db.session.commit()
        return family


def _links(school, membership):
    db.session.expire_all()
    with tenancy.bound(school.id):
        return db.session.scalars(
            select(Guardian.family_id).where(Guardian.membership_id == membership.id)
        ).all()


def test_a_co_guardian_who_closed_their_account_is_not_shown_to_the_family(app, maple, make_member):
    school, pat = maple["school"], maple["pat"]
    waiting = make_member(
        school, status=MembershipStatus.PENDING, name="Cleo Closed", email="cleo@example.org"
    )
    family = _family_of(school, [pat], pending=[waiting])
    waiting.user.active = False
    db.session.commit()
    guardian = app.test_client()
    sign_in(guardian, "pat@maple.org")
    page = guardian.get("/classes/families/mine").get_data(as_text=True)
    assert "Cleo Closed" not in page and "Asking to join your family" not in page
    refused = guardian.form(
        "/classes/families/mine/guardians/approve",
        {"family_id": str(family.id), "target": str(waiting.id)},
        follow_redirects=True,
    )
    assert "closed their account" in refused.get_data(as_text=True)
    db.session.expire_all()
    with tenancy.bound(school.id):
        assert db.session.get(Membership, waiting.id).status is MembershipStatus.PENDING


# --- finding 4: a rejected request leaves no link to the family --------------------------------


def test_a_family_rejecting_a_second_guardian_removes_only_their_link(app, maple, make_member):
    school, pat = maple["school"], maple["pat"]
    stranger = make_member(school, status=MembershipStatus.PENDING, name="Sam Stranger")
    family = _family_of(school, [pat], pending=[stranger])
    guardian = app.test_client()
    sign_in(guardian, "pat@maple.org")
    response = guardian.form(
        "/classes/families/mine/guardians/reject", {"family_id": str(family.id), "target": str(stranger.id)}
    )
    assert response.status_code == 303
    assert _links(school, stranger) == []
    assert _links(school, pat) == [family.id]
    assert "Sam Stranger: rejected" in guardian.get("/classes/families/mine").get_data(as_text=True)
    page = guardian.get("/classes/families/mine").get_data(as_text=True)  # the flash is gone
    assert "Mia" in page and "Sam Stranger" not in page


def test_rejecting_a_membership_in_the_queue_removes_its_family_links(client, maple, make_member):
    school, pat = maple["school"], maple["pat"]
    stranger = make_member(school, status=MembershipStatus.PENDING, name="Sam Stranger")
    shared = _family_of(school, [pat], pending=[stranger])
    # A newcomer who named children at sign-up is the only guardian of the family it made.
    newcomer = make_member(school, status=MembershipStatus.PENDING, name="Nadia Newcomer")
    own = _family_of(school, [newcomer], child="Noor")
    sign_in(client, "staff@maple.org")
    for membership in (stranger, newcomer):
        assert (
            client.form(f"/members/{membership.id}/reject", {"reason": "Not known here."}).status_code == 303
        )
        assert _links(school, membership) == []
    assert _links(school, pat) == [shared.id]
    # The newcomer's family stays for the family editor, and is listed nowhere else (as before:
    # the directory and rosters show only families with an approved guardian).
    directory = client.get("/directory/").get_data(as_text=True)
    assert "Noor" not in directory
    admin = client.application.test_client()
    sign_in(admin, "admin@maple.org")
    assert "Noor" in admin.get(f"/classes/families/{own.id}").get_data(as_text=True)


def test_an_approval_keeps_the_family_link(client, maple, make_member):
    school, pat = maple["school"], maple["pat"]
    joining = make_member(school, status=MembershipStatus.PENDING)
    family = _family_of(school, [pat], pending=[joining])
    sign_in(client, "staff@maple.org")
    assert client.form(f"/members/{joining.id}/approve").status_code == 303
    assert _links(school, joining) == [family.id]


# --- finding 5: ids that only look like numbers ------------------------------------------------


@pytest.mark.parametrize("value", ["²", "①", "12\n", " 1", "-1", "0", "1" * 13, ""])
def test_a_family_id_that_is_not_plain_digits_is_not_found(app, maple, value):
    school, pat = maple["school"], maple["pat"]
    _family_of(school, [pat])
    guardian = app.test_client()
    sign_in(guardian, "pat@maple.org")
    assert guardian.form("/classes/families/mine/code", {"family_id": value}).status_code == 404


def test_family_services_read_only_ascii_ids(app, maple):
    """Every id a form sends reaches the services as text or as a number; "²" is neither an id."""
    from app.classes import families

    school, pat = maple["school"], maple["pat"]
    family = _family_of(school, [pat])
    with tenancy.bound(school.id):
        student = db.session.scalar(select(Student))
        assert families.my_family(pat, str(family.id)).id == family.id
        assert families.my_family(pat, family.id).id == family.id
        assert families.student_of(family, student.id).id == student.id
        for odd in ("²", "١", "12\n", None, True):
            assert families.my_family(pat, odd) is None
            assert families.student_of(family, odd) is None
            assert families.waiting_guardian(family, odd) is None
            assert families.waiting_change(odd) is None
        assert db.session.scalar(select(EnrollmentChange)) is None
