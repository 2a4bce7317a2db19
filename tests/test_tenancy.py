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


# Tables with a school_id that the mechanism does not scope, and why. Empty today: a table added
# with a school_id fails the walk below until it mixes in SchoolScoped or SchoolOrPlatform, or is
# named here with its reason.
NOT_SCOPED: dict[str, str] = {}


def test_every_table_with_a_school_id_is_scoped_by_the_mechanism(app):
    """Walk the metadata: each table with a school_id is scoped by app.tenancy or named above."""
    with_school = {t.name for t in db.metadata.sorted_tables if "school_id" in t.columns}
    assert {"mail_message", "support_request", "event", "membership"} <= with_school
    unscoped = with_school - tenancy.scoped_tables() - set(NOT_SCOPED)
    assert unscoped == set(), f"school_id tables outside app/tenancy.py: {sorted(unscoped)}"
    assert set(NOT_SCOPED) <= with_school, "an exemption for a table that has no school_id"
    assert all(reason.strip() for reason in NOT_SCOPED.values())
    # Scoped tables are exactly school_id tables (a marker on a table with no column is a typo).
    assert tenancy.scoped_tables() <= with_school


def _message(school_id, subject):
    from app.models import Category, MailMessage

    return MailMessage(school_id=school_id, category=Category.ADMINISTRATIVE, template="t", subject=subject)


def _subjects():
    from app.models import MailMessage

    db.session.expire_all()
    return sorted(db.session.scalars(select(MailMessage.subject)))


def test_mail_and_support_rows_of_a_school_are_scoped_and_platform_rows_are_shared(app, make_school):
    """SchoolOrPlatform: bound to a school, its rows and the platform's; bound to none, the
    platform's only; every school's only inside unscoped(); never written into an unbound school."""
    from app.models import SupportKind, SupportRequest

    a, b = make_school(), make_school()
    a_id = a.id
    with tenancy.bound(a.id):
        db.session.add(_message(a.id, "for Ash"))
        db.session.commit()
    with tenancy.bound(b.id):
        db.session.add(_message(b.id, "for Birch"))
        db.session.commit()
    db.session.add(_message(None, "platform notice"))
    db.session.commit()
    with tenancy.bound(a.id):
        assert _subjects() == ["for Ash", "platform notice"]
    assert _subjects() == ["platform notice"]
    with tenancy.unscoped():
        assert _subjects() == ["for Ash", "for Birch", "platform notice"]
    # Written into a school that is not the bound one (or with none bound): refused.
    for binding in (tenancy.bound(a.id), tenancy.acting_for(None)):
        with binding, pytest.raises(TenancyError):
            db.session.add(_message(b.id, "smuggled"))
            db.session.flush()
        db.session.rollback()
    request = SupportRequest(
        kind=SupportKind.HELP, school_id=b.id, name="N", email="n@example.org", subject="S", message="M"
    )
    with tenancy.bound(b.id):
        db.session.add(request)
        db.session.commit()
        request_id = request.id
    db.session.expunge_all()
    with tenancy.bound(a_id):
        assert db.session.get(SupportRequest, request_id) is None
    assert db.session.get(SupportRequest, request_id) is None
    with tenancy.unscoped():
        assert db.session.get(SupportRequest, request_id) is not None


def test_the_outbox_worker_sends_a_schools_mail_with_no_school_bound(
    app, make_school, make_member, sent_mail
):
    """An RQ worker binds nothing (in-process jobs run inside the request's binding and would hide
    it): send_message finds a school's message across schools and acts for that school."""
    from app.mail import queue_email
    from app.mail.jobs import send_message
    from app.models import Category

    school = make_school()
    member = make_member(school, email="reader@example.org")
    with tenancy.bound(school.id):
        message = queue_email(
            "email_change_notice",
            [member.user],
            category=Category.SCHOOL_ANNOUNCEMENTS,
            school_id=school.id,
            name="x",
        )
        db.session.info.pop("pending_jobs")
        db.session.commit()
        message_id = message.id
    db.session.expunge_all()
    assert tenancy.current_school_id() is None
    assert send_message(message_id)["sent"] == 1
    assert [m.to for m in sent_mail] == ["reader@example.org"]
