"""P1: a school's data is visible only to that school's users, enforced in one place."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import (
    Membership,
    Role,
    SchoolClass,
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


# The route matrix (every id route x every role x another school's ids) is in
# tests/test_hostile_tenants.py, which finds the table behind each id argument by itself.


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
