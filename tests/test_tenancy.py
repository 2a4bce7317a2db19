"""P1: a school's data is visible only to that school's users, enforced in one place."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import (
    ClassHelper,
    ClassRole,
    Enrollment,
    Family,
    Guardian,
    Membership,
    MembershipStatus,
    Role,
    SchoolClass,
    Student,
)
from app.tenancy import TenancyError
from tests.conftest import sign_in


def _class(school, name):
    with tenancy.bound(school.id):
        school_class = SchoolClass(name=name, grade="Grade 2", school_year="2026-27")
        db.session.add(school_class)
        db.session.commit()
        return school_class


def test_reading_school_data_with_no_school_bound_raises(app, make_school):
    make_school()
    with pytest.raises(TenancyError):
        db.session.scalars(select(SchoolClass)).all()


def test_bound_queries_see_only_their_school(app, make_school):
    a, b = make_school(), make_school()
    _class(a, "Ash")
    _class(b, "Birch")
    with tenancy.bound(a.id):
        assert [c.name for c in db.session.scalars(select(SchoolClass))] == ["Ash"]
    with tenancy.bound(b.id):
        names = db.session.scalars(select(SchoolClass.name)).all()
        assert names == ["Birch"]
        # joins and subqueries are scoped too, not just the first entity
        other = db.session.scalars(
            select(SchoolClass).where(SchoolClass.id.in_(select(SchoolClass.id)))
        ).all()
        assert [c.name for c in other] == ["Birch"]
    with tenancy.unscoped():
        assert db.session.scalar(select(SchoolClass).where(SchoolClass.name == "Ash")) is not None


def test_get_by_primary_key_cannot_cross_schools(app, make_school):
    a, b = make_school(), make_school()
    birch_id, a_id = _class(b, "Birch").id, a.id
    db.session.expunge_all()  # no identity-map shortcut
    with tenancy.bound(a_id):
        assert db.session.get(SchoolClass, birch_id) is None


def test_rows_cannot_be_written_into_another_school(app, make_school):
    a, b = make_school(), make_school()
    with tenancy.bound(a.id), pytest.raises(TenancyError):
        db.session.add(SchoolClass(school_id=b.id, name="X", grade="1", school_year="2026-27"))
        db.session.flush()
    db.session.rollback()
    with pytest.raises(TenancyError):
        db.session.add(SchoolClass(name="Nowhere", grade="1", school_year="2026-27"))
        db.session.flush()
    db.session.rollback()


def test_new_rows_take_the_bound_school(app, make_school):
    a = make_school()
    with tenancy.bound(a.id):
        school_class = SchoolClass(name="Cedar", grade="3", school_year="2026-27")
        db.session.add(school_class)
        db.session.flush()
        assert school_class.school_id == a.id
    db.session.rollback()


@pytest.fixture
def other_school(make_school, make_member):
    """School B with a class, a family, a teacher and a pending applicant, all distinctively named."""
    b = make_school(name="Hidden Hollow School")
    teacher = make_member(b, role=Role.STAFF, name="Bartholomew Secretteacher")
    applicant = make_member(b, status=MembershipStatus.PENDING, name="Philippa Secretapplicant")
    parent = make_member(b, name="Griselda Secretparent")
    with tenancy.bound(b.id):
        school_class = SchoolClass(name="Secret Class B", grade="Grade 4", school_year="2026-27")
        family = Family(name="Secretfamily family")
        db.session.add_all([school_class, family])
        db.session.flush()
        student = Student(family_id=family.id, first_name="Ottoline", last_name="Secretfamily")
        db.session.add(student)
        db.session.flush()
        db.session.add_all(
            [
                Enrollment(student_id=student.id, class_id=school_class.id),
                Guardian(family_id=family.id, membership_id=parent.id),
                ClassHelper(class_id=school_class.id, membership_id=teacher.id, role=ClassRole.TEACHER),
            ]
        )
        db.session.commit()
    secrets = [
        "Hidden Hollow",
        "Secret Class B",
        "Secretteacher",
        "Secretapplicant",
        "Secretparent",
        "Secretfamily",
        "Ottoline",
    ]
    ids = {"class_id": school_class.id, "membership_id": applicant.id, "mail_id": 1, "message_id": 1}
    return ids, secrets


def _url_for_rule(rule, ids):
    path = rule.rule
    for name in rule.arguments:
        assert name in ids, f"add an id of another school for <{name}> to the isolation test"
        path = re.sub(rf"<(?:[a-z]+:)?{name}>", str(ids[name]), path)
    return path


@pytest.mark.parametrize("role", list(Role))
def test_other_schools_ids_give_403_or_404_on_every_route(
    app, client, make_school, make_member, other_school, role
):
    """The matrix: every route taking an id x every role x school B's ids -> 403/404, no B data."""
    ids, secrets = other_school
    a = make_school(name="Visible Valley School")
    me = make_member(a, role=role)
    sign_in(client, me.user.email)
    checked = 0
    for rule in app.url_map.iter_rules():
        int_args = [a for a in rule.arguments if rule._converters[a].__class__.__name__ == "IntegerConverter"]
        if not int_args:
            continue
        path = _url_for_rule(rule, ids)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method == "GET":
                response = client.get(path)
            else:
                response = client.htmx(path, {"reason": "test"}, target="x", method=method)
            assert response.status_code in (403, 404), (role, method, path, response.status_code)
            body = response.get_data(as_text=True)
            for secret in secrets:
                assert secret not in body, (role, method, path, secret)
            checked += 1
    assert checked >= 4
    # and nothing in school B changed
    db.session.expire_all()
    with tenancy.unscoped():
        applicant = db.session.get(Membership, ids["membership_id"])
        assert applicant.status is MembershipStatus.PENDING


def test_own_school_ids_work_for_the_same_routes(client, make_school, make_member):
    """The matrix's 404s come from scoping, not from broken routes: own ids answer 200."""
    a = make_school()
    me = make_member(a, role=Role.SUPERADMIN)
    school_class = _class(a, "Own Class")
    sign_in(client, me.user.email)
    assert client.get(f"/classes/{school_class.id}").status_code == 200


def test_school_tables_inside_subqueries_are_scoped_too(app, make_school, make_member):
    """A top-level entity that is not school data must not open a path to another school's rows."""
    from app.models import User

    a, b = make_school(), make_school()
    mine = make_member(a, email="mine@example.org")
    make_member(b, email="theirs@example.org")
    a_id, mine_id = a.id, mine.user_id
    db.session.expunge_all()
    through_memberships = select(User.email).where(User.id.in_(select(Membership.user_id)))
    with pytest.raises(TenancyError):
        db.session.scalars(through_memberships).all()
    with tenancy.bound(a_id):
        assert db.session.scalars(through_memberships).all() == ["mine@example.org"]
        joined = select(User.email).join(Membership, Membership.user_id == User.id)
        assert db.session.scalars(joined).all() == ["mine@example.org"]
    assert mine_id
