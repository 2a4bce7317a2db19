"""Joining with children: each picks a class; nobody sees the family until it is approved."""

from __future__ import annotations

import re

from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import Enrollment, Family, Role, Student
from tests.conftest import sign_in

PASSWORD = "plum orchard lantern"


def _join(client, code, children, email="newparent@example.org", name="Nadia Newparent"):
    data = {"invite_code": code, "name": name, "email": email, "password": PASSWORD, "accept_policy": "y"}
    for n, (first, last, class_id) in enumerate(children):
        data |= {
            f"children-{n}-first_name": first,
            f"children-{n}-last_name": last,
            f"children-{n}-class_id": class_id,
        }
    return client.form("/join", data)


def test_class_menus_appear_once_the_code_is_known(client, make_school, make_class):
    school = make_school(code="OAK-1")
    hazel, _ = make_class(school, "Hazel"), make_class(school, "Juniper")
    other = make_class(make_school(code="ELM-1"), "Secret Elm Class")
    blank = client.get("/join").get_data(as_text=True)
    assert "once your invitation code is checked" in blank and "Hazel" not in blank
    partial = client.get("/join/classes?invite_code=oak 1", headers={"HX-Request": "true"}).get_data(
        as_text=True
    )
    # Only the hint and the class menus (out of band) come back: never the children's names.
    assert partial.lstrip().startswith('<p class="hint" id="children-hint">')
    assert "first_name" not in partial and "last_name" not in partial
    assert partial.count('data-hx-swap-oob="outerHTML"') == 4
    assert f'value="{hazel.id}"' in partial and "Juniper" in partial
    assert other.name not in partial
    assert "Hazel" not in client.get("/join/classes?invite_code=WRONG").get_data(as_text=True)


def test_joining_with_children_creates_the_family_for_the_approvers_to_check(
    client, make_school, make_member, sent_mail, make_class
):
    school = make_school(code="OAK-1")
    hazel, juniper = make_class(school, "Hazel"), make_class(school, "Juniper")
    classmate = make_member(school, name="Clara Classmate")
    staff = make_member(school, role=Role.STAFF)
    response = _join(client, "OAK-1", [("Mia", "Newparent", hazel.id), ("Leo", "Newparent", juniper.id)])
    assert response.status_code == 303

    with tenancy.bound(school.id):
        family = db.session.scalar(select(Family))
        kids = {s.first_name: s for s in db.session.scalars(select(Student))}
        classes = {e.student_id: e.class_id for e in db.session.scalars(select(Enrollment))}
    assert family.name == "Newparent family"
    assert classes == {kids["Mia"].id: hazel.id, kids["Leo"].id: juniper.id}

    approver = client.application.test_client()
    sign_in(approver, staff.user.email)
    queue = approver.get("/members/pending").get_data(as_text=True)
    assert "Mia Newparent (Hazel)" in queue and "Leo Newparent (Juniper)" in queue

    # Until approved, the family is nowhere in the directory or the class roster.
    viewer = client.application.test_client()
    sign_in(viewer, classmate.user.email)
    assert "Newparent" not in viewer.get(f"/classes/{hazel.id}").get_data(as_text=True)
    assert "Newparent" not in viewer.get("/directory/").get_data(as_text=True)
    pending_id = int(re.search(r'id="pending-(\d+)"', queue).group(1))
    approver.form(f"/members/{pending_id}/approve")
    assert "Newparent family" in viewer.get(f"/classes/{hazel.id}").get_data(as_text=True)


def test_a_class_of_another_school_or_an_unfinished_row_is_refused(client, make_school, make_class):
    school = make_school(code="OAK-1")
    hazel = make_class(school, "Hazel")
    elm = make_class(make_school(code="ELM-1"), "Elm")
    foreign = _join(client, "OAK-1", [("Mia", "Newparent", elm.id)])
    assert foreign.status_code == 400
    assert "Choose each child&#39;s class from the list." in foreign.get_data(as_text=True)
    unfinished = _join(client, "OAK-1", [("Mia", "", hazel.id)], email="other@example.org")
    assert unfinished.status_code == 400
    page = unfinished.get_data(as_text=True)
    assert "Enter the child&#39;s last name." in page and 'value="Mia"' in page
    with tenancy.unscoped():
        assert db.session.scalars(select(Family)).all() == []


def test_joining_without_children_still_works(client, make_school):
    make_school(code="OAK-1")
    assert _join(client, "OAK-1", []).status_code == 303
