"""Closing one's own account (P11, P14): no sign-in, no sessions, no email, out of every directory."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import select

from app import tenancy
from app.consent import policy
from app.extensions import db
from app.jobs import run_ready_jobs
from app.mail import queue_email
from app.models import (
    DeliveryStatus,
    Family,
    MailDelivery,
    Role,
    Student,
    User,
    Visibility,
)
from app.models.audit import AuditEntry
from app.models.consent import ConsentEvent, ConsentKind
from tests.conftest import CLOCK_START, PASSWORD, publish_material, sign_in

# Everyone joins at CLOCK_START (the module runs on the clock fixture), before T0 on any day.
pytestmark = pytest.mark.usefixtures("clock")
T0 = CLOCK_START + timedelta(days=609, hours=-1)  # a Monday morning after everyone joined
CLOSING = "Quentin Quellbrook"


def _share_contact(school, member):
    """Quentin shows his email and phone to the whole school."""
    with tenancy.bound(school.id):
        member.email_visibility = Visibility.SCHOOL
        member.phone = "+1 555 0199"
        member.phone_visibility = Visibility.SCHOOL
        db.session.commit()


@pytest.fixture
def school(make_school, make_member, make_class, make_family):
    """A parent (Quentin) whose co-guardian stays, a teacher, and their class."""
    school = make_school(name="Aspen School")
    oak = make_class(school, "Oak", grade="Grade 1", school_year="2027-28")
    quentin = make_member(school, email="quentin.q@example.org", name=CLOSING)
    _share_contact(school, quentin)
    partner = make_member(school, email="rhea.q@example.org", name="Rhea Quellbrook")
    make_family(school, [quentin, partner], "Quellbrook family", [("Quilla", "Quellbrook", [oak.id])])
    teacher = make_member(school, role=Role.STAFF, email="tara.teacher@example.org", name="Tara Teacher")
    return {"school": school, "quentin": quentin, "partner": partner, "teacher": teacher, "oak": oak}


def close(client, password=PASSWORD, confirm=True):
    data = {"password": password} | ({"confirm": "y"} if confirm else {})
    return client.form("/account/close", data)


def test_wrong_password_or_no_tick_changes_nothing(client, school):
    sign_in(client, "quentin.q@example.org")
    wrong = close(client, password="not my password at all")
    assert wrong.status_code == 400 and "That is not your password." in wrong.get_data(as_text=True)
    unticked = close(client, confirm=False)
    assert unticked.status_code == 400 and "Tick the box to confirm." in unticked.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(User, school["quentin"].user_id).active


def test_closing_signs_out_everywhere_and_sign_in_is_refused(client, app, school):
    other_device = app.test_client()
    sign_in(other_device, "quentin.q@example.org")
    assert other_device.get("/account").status_code == 200
    sign_in(client, "quentin.q@example.org")
    response = close(client)
    assert response.status_code == 200 and "Your account is closed" in response.get_data(as_text=True)
    assert client.get("/account").status_code == 302  # this browser is signed out
    assert other_device.get("/account").status_code == 302  # and so is every other one
    refused = sign_in(client, "quentin.q@example.org")
    assert refused.status_code == 400
    db.session.expire_all()
    assert not db.session.get(User, school["quentin"].user_id).active


def test_the_ledger_records_the_objection_only_while_a_change_is_coming(client, school):
    with time_machine.travel(T0, tick=False):
        publish_material(email=False, summary="Change")
    with time_machine.travel(T0 + timedelta(days=10), tick=False):
        sign_in(client, "quentin.q@example.org")
        assert "object to the coming privacy policy (version 2)" in client.get("/account/close").get_data(
            as_text=True
        )
        assert "objected to version 2" in close(client).get_data(as_text=True)
    events = db.session.scalars(
        select(ConsentEvent)
        .where(ConsentEvent.user_id == school["quentin"].user_id)
        .order_by(ConsentEvent.id)
    ).all()
    kinds = [(e.kind, policy.get_version(2).id == e.version_id) for e in events]
    assert (ConsentKind.OBJECTED, True) in kinds
    assert kinds[-1][0] is ConsentKind.DEACTIVATED
    # The school's audit log says the person left; their family stays with the school.
    with tenancy.bound(school["school"].id):
        assert db.session.scalar(select(AuditEntry).where(AuditEntry.action == "account.closed")) is not None
        assert db.session.scalar(select(Family).where(Family.name == "Quellbrook family")) is not None
        assert db.session.scalar(select(Student).where(Student.first_name == "Quilla")) is not None


def test_after_the_effective_date_closing_is_no_objection(client, school):
    with time_machine.travel(T0, tick=False):
        publish_material(email=False, summary="Change")
    with time_machine.travel(T0 + timedelta(days=31), tick=False):
        sign_in(client, "quentin.q@example.org")
        close(client)
    kinds = db.session.scalars(
        select(ConsentEvent.kind).where(ConsentEvent.user_id == school["quentin"].user_id)
    ).all()
    assert ConsentKind.OBJECTED not in kinds
    assert ConsentKind.DEACTIVATED in kinds


def _closed(client, school):
    sign_in(client, "quentin.q@example.org")
    close(client)


def test_a_closed_account_leaves_every_directory_surface_at_once(client, school):
    """Page, live-search partial, print, CSV and the class roster, as staff who sees everything."""
    sign_in(client, "tara.teacher@example.org")
    surfaces = {
        "page": "/directory/",
        "print": "/directory/print",
        "csv": "/directory/export.csv",
        "roster": f"/classes/{school['oak'].id}",
    }
    before = {name: client.get(url).get_data(as_text=True) for name, url in surfaces.items()}
    partial_headers = {"HX-Request": "true", "HX-Target": "directory-results"}
    before["search"] = client.get("/directory/?q=quell", headers=partial_headers).get_data(as_text=True)
    for name, text in before.items():
        assert CLOSING in text or "quentin.q@example.org" in text, name
    client.form("/sign-out")

    _closed(client, school)

    sign_in(client, "tara.teacher@example.org")
    after = {name: client.get(url).get_data(as_text=True) for name, url in surfaces.items()}
    after["search"] = client.get("/directory/?q=quell", headers=partial_headers).get_data(as_text=True)
    for name, text in after.items():
        assert CLOSING not in text and "quentin.q@example.org" not in text and "555 0199" not in text, name
        assert "Rhea Quellbrook" in text, name  # the family stays, with the co-guardian
    assert "Quentin" not in client.get("/directory/?q=quentin", headers=partial_headers).get_data(
        as_text=True
    )


def test_a_closed_account_gets_no_email_of_any_category(client, school, sent_mail):
    _closed(client, school)
    quentin = db.session.get(User, school["quentin"].user_id)
    message = queue_email("email_change_notice", [quentin], name=quentin.name)  # administrative
    db.session.commit()
    run_ready_jobs()
    delivery = db.session.scalar(select(MailDelivery).where(MailDelivery.message_id == message.id))
    assert delivery.status is DeliveryStatus.SKIPPED and delivery.last_error == "account deactivated"
    assert "quentin.q@example.org" not in [m.to for m in sent_mail]
    # A later policy change is not even written to them.
    policy.ensure_placeholder()
    draft = policy.create_draft(body="x", summary="y", material=True, email=True, notice=False, by=None)
    policy.publish(draft)
    db.session.commit()
    run_ready_jobs()
    assert "quentin.q@example.org" not in [m.to for m in sent_mail]
    assert "rhea.q@example.org" in [m.to for m in sent_mail]


def test_a_teacher_who_closes_leaves_the_staff_directory_and_the_class_page(client, school):
    from app.models import ClassHelper, ClassRole

    with tenancy.bound(school["school"].id):
        db.session.add(
            ClassHelper(class_id=school["oak"].id, membership_id=school["teacher"].id, role=ClassRole.TEACHER)
        )
        db.session.commit()
    sign_in(client, "rhea.q@example.org")
    assert "Tara Teacher" in client.get("/directory/staff").get_data(as_text=True)
    assert "Tara Teacher" in client.get(f"/classes/{school['oak'].id}").get_data(as_text=True)
    client.form("/sign-out")
    sign_in(client, "tara.teacher@example.org")
    close(client)
    sign_in(client, "rhea.q@example.org")
    assert "Tara Teacher" not in client.get("/directory/staff").get_data(as_text=True)
    assert "Tara Teacher" not in client.get(f"/classes/{school['oak'].id}").get_data(as_text=True)
