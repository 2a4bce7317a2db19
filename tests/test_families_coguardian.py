"""A second guardian joins a family with the school's code and the family's code, nothing else."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import (
    Family,
    Guardian,
    Membership,
    MembershipStatus,
    Role,
    User,
)
from app.models.audit import AuditEntry
from tests.conftest import sign_in

PASSWORD = "plum orchard lantern"


@pytest.fixture
def world(make_school, make_member, make_class, make_family):
    school = make_school(name="Oak School", code="OAK-1")
    hazel_id = make_class(school, "Hazel", grade="3").id
    gina = make_member(school, name="Gina Guardian", email="gina@example.org")
    family = make_family(school, [gina], "Guardian family", [("Mia", "Guardian", [hazel_id])])
    staff = make_member(school, role=Role.STAFF, name="Sam Staff", email="sam@example.org")
    return school, family, gina, staff


def _code(client, gina):
    sign_in(client, gina.user.email)
    page = client.get("/classes/families/mine").get_data(as_text=True)
    return re.search(r'<code id="family-code">([A-Z0-9]+)</code>', page).group(1)


def _join(client, code, family_code, email="pat@example.org"):
    return client.form(
        "/join",
        {
            "invite_code": code,
            "family_code": family_code,
            "name": "Pat Partner",
            "email": email,
            "password": PASSWORD,
            "accept_policy": "y",
        },
    )


def _membership(school, email):
    db.session.expire_all()
    with tenancy.bound(school.id):
        return db.session.scalar(
            select(Membership).join(User, User.id == Membership.user_id).where(User.email == email)
        )


def test_second_guardian_joins_and_a_guardian_of_the_family_approves(app, world, sent_mail):
    school, family, gina, staff = world
    code = _code(app.test_client(), gina)
    sent_mail.clear()
    newcomer = app.test_client()
    typed = f" {code[:5].lower()}-{code[5:].lower()} "  # as people type it
    assert _join(newcomer, "oak-1", typed).status_code == 303
    pat = _membership(school, "pat@example.org")
    assert pat.status is MembershipStatus.PENDING
    with tenancy.bound(school.id):
        assert (
            db.session.scalar(select(Guardian.family_id).where(Guardian.membership_id == pat.id)) == family.id
        )
    # The family's guardian is asked by email; the message names nobody.
    to_family = [m for m in sent_mail if m.to != "pat@example.org"]
    assert [(m.to, m.subject) for m in to_family] == [
        ("gina@example.org", "Someone asked to join your family at Oak School")
    ]
    assert "Pat" not in to_family[0].text
    # Until approved, Pat sees nothing of the family, and no guardian listing shows Pat.
    assert newcomer.get("/classes/families/mine").status_code == 302
    classmate_view = app.test_client()
    sign_in(classmate_view, staff.user.email)
    assert "Pat Partner" not in classmate_view.get("/directory/").get_data(as_text=True)

    guardian = app.test_client()
    sign_in(guardian, gina.user.email)
    page = guardian.get("/classes/families/mine").get_data(as_text=True)
    assert "Asking to join your family" in page and "Pat Partner" in page
    sent_mail.clear()
    response = guardian.form(
        "/classes/families/mine/guardians/approve", {"family_id": str(family.id), "target": str(pat.id)}
    )
    assert response.status_code == 303
    assert _membership(school, "pat@example.org").status is MembershipStatus.APPROVED
    assert [m.to for m in sent_mail] == ["pat@example.org"]
    with tenancy.bound(school.id):
        assert "guardian.approved" in db.session.scalars(select(AuditEntry.action)).all()
    # Pat now sees the family: children and the other guardian.
    sign_in(newcomer, "pat@example.org", PASSWORD)
    mine = newcomer.get("/classes/families/mine").get_data(as_text=True)
    assert "Gina Guardian" in mine and "Mia" in mine


def test_a_wrong_family_code_answers_exactly_like_a_wrong_school_code(client, world, make_school):
    school, family, gina, staff = world
    _code(client.application.test_client(), gina)  # the family has a code
    stranger = client.application.test_client()
    wrong_family = _join(stranger, "OAK-1", "ZZZZZZZZZZ")
    wrong_school = _join(stranger, "NOPE-1", "ZZZZZZZZZZ")
    assert wrong_family.status_code == wrong_school.status_code == 400
    assert "We don&#39;t recognise this code. Check it with your school." in wrong_family.get_data(
        as_text=True
    )
    # The same error, on the same field (the school's code), and none on the family code: the
    # page says nothing about whether the school or the family was wrong.
    for response in (wrong_family, wrong_school):
        body = response.get_data(as_text=True)
        assert re.findall(r'<p class="error" id="([^"]+)">([^<]+)</p>', body) == [
            ("invite_code-error", "We don&#39;t recognise this code. Check it with your school.")
        ]
        assert 'value="ZZZZZZZZZZ"' in body  # what was typed stays
    with tenancy.unscoped():
        assert db.session.scalar(select(User).where(User.email == "pat@example.org")) is None


def test_another_schools_family_code_is_refused(client, world, make_school, make_member):
    school, family, gina, staff = world
    elsewhere = make_school(code="ELM-1")
    other_parent = make_member(elsewhere)
    with tenancy.bound(elsewhere.id):
        other = Family(name="Elm family", invite_code="ABCDEFGHJK")
        db.session.add(other)
        db.session.flush()
        db.session.add(Guardian(family_id=other.id, membership_id=other_parent.id))
        db.session.commit()
    response = _join(client, "OAK-1", "ABCDEFGHJK")
    assert response.status_code == 400
    assert "We don&#39;t recognise this code." in response.get_data(as_text=True)


def test_a_rotated_code_stops_working(app, world):
    school, family, gina, staff = world
    guardian = app.test_client()
    old = _code(guardian, gina)
    guardian.form("/classes/families/mine/code", {"family_id": str(family.id)})
    assert _join(app.test_client(), "OAK-1", old).status_code == 400


def test_guessing_family_codes_is_rate_limited(client, world):
    responses = [_join(client, "OAK-1", f"GUESS{n:05d}", email=f"g{n}@example.org") for n in range(6)]
    assert [r.status_code for r in responses] == [400] * 5 + [429]


def test_only_a_guardian_of_that_family_or_an_approver_decides(app, world, make_member):
    school, family, gina, staff = world
    code = _code(app.test_client(), gina)
    _join(app.test_client(), "OAK-1", code)
    pat = _membership(school, "pat@example.org")
    # Another family's guardian cannot approve, whichever family id they send.
    jules = make_member(school, name="Jules Other")
    with tenancy.bound(school.id):
        theirs = Family(name="Other family")
        db.session.add(theirs)
        db.session.flush()
        db.session.add(Guardian(family_id=theirs.id, membership_id=jules.id))
        db.session.commit()
    outsider = app.test_client()
    sign_in(outsider, jules.user.email)
    for family_id in (family.id, theirs.id):
        response = outsider.form(
            "/classes/families/mine/guardians/approve", {"family_id": str(family_id), "target": str(pat.id)}
        )
        assert response.status_code == 404
    assert _membership(school, "pat@example.org").status is MembershipStatus.PENDING
    # Staff with members.approve see the request in the queue, with the family's children.
    approver = app.test_client()
    sign_in(approver, staff.user.email)
    queue = approver.get("/members/pending").get_data(as_text=True)
    assert "Pat Partner" in queue and "Mia Guardian (Hazel)" in queue
    assert approver.form(f"/members/{pat.id}/approve").status_code == 303
    assert _membership(school, "pat@example.org").status is MembershipStatus.APPROVED


def test_a_rejected_request_leaves_the_family_as_it_was(app, world, sent_mail):
    school, family, gina, staff = world
    guardian = app.test_client()
    code = _code(guardian, gina)
    _join(app.test_client(), "OAK-1", code)
    pat = _membership(school, "pat@example.org")
    response = guardian.form(
        "/classes/families/mine/guardians/reject", {"family_id": str(family.id), "target": str(pat.id)}
    )
    assert response.status_code == 303
    assert _membership(school, "pat@example.org").status is MembershipStatus.REJECTED
    page = guardian.get("/classes/families/mine").get_data(as_text=True)
    assert "Asking to join your family" not in page
