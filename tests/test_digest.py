"""The daily digest: held announcements and newsletters go out as one email a day."""

from __future__ import annotations

from sqlalchemy import select

from app import jobs
from app.extensions import db
from app.mail.digest import send_digests
from app.models import Category, DeliveryMode, DeliveryStatus, MailDelivery, MailPreference


def _prefer(member, mode, category=Category.NEWSLETTERS):
    db.session.add(MailPreference(user_id=member.user_id, category=category, mode=mode))
    db.session.commit()


def test_held_newsletters_go_out_as_one_digest(app, make_school, make_member, sent_mail, send_email):
    school = make_school()
    daily = make_member(school, email="daily@example.org", name="Dana Daily")
    now = make_member(school, email="now@example.org")
    _prefer(daily, DeliveryMode.DIGEST)
    send_email([daily.user, now.user], Category.NEWSLETTERS, name="First Newsletter Greeting")
    send_email([daily.user, now.user], Category.NEWSLETTERS, name="Second Newsletter Greeting")
    assert [m.to for m in sent_mail] == ["now@example.org", "now@example.org"]

    assert send_digests() == {"digests": 1, "items": 2}
    jobs.run_ready_jobs()
    digest = sent_mail[-1]
    assert digest.to == "daily@example.org"
    assert digest.subject == "Your daily digest: Newsletters (2)"
    assert "First Newsletter Greeting" in digest.text and "Second Newsletter Greeting" in digest.text
    assert "List-Unsubscribe" in digest.headers  # a digest is still optional mail
    statuses = db.session.scalars(
        select(MailDelivery.status).where(MailDelivery.to_email == "daily@example.org")
    ).all()
    assert sorted(statuses) == [DeliveryStatus.DIGESTED, DeliveryStatus.DIGESTED, DeliveryStatus.SENT]

    assert send_digests() == {"digests": 0, "items": 0}  # nothing is gathered twice


def test_turning_mail_off_after_it_was_held_stops_the_digest(
    app, make_school, make_member, sent_mail, send_email
):
    member = make_member(make_school(), email="changed@example.org")
    _prefer(member, DeliveryMode.DIGEST)
    send_email([member.user], Category.NEWSLETTERS, name="Held one")
    preference = db.session.scalar(select(MailPreference))
    preference.mode = DeliveryMode.OFF
    db.session.commit()
    send_digests()
    jobs.run_ready_jobs()
    assert sent_mail == []


def test_deactivated_people_get_no_digest(app, make_school, make_member, sent_mail, send_email):
    member = make_member(make_school(), email="left@example.org")
    _prefer(member, DeliveryMode.DIGEST)
    send_email([member.user], Category.NEWSLETTERS, name="Held one")
    member.user.active = False
    db.session.commit()
    assert send_digests()["digests"] == 0
    jobs.run_ready_jobs()
    assert sent_mail == []
    delivery = db.session.scalar(select(MailDelivery))
    assert (delivery.status, delivery.last_error) == (DeliveryStatus.SKIPPED, "account deactivated")
