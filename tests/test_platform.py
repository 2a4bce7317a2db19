"""P3: platform support staff see no school data without a grant; with one, read-only and logged;
after it expires or is revoked, 403 on every school route. The console and deletion requests."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from werkzeug.routing import IntegerConverter

from app import tenancy
from app.extensions import db
from app.models import (
    Enrollment,
    Family,
    Guardian,
    Membership,
    MembershipStatus,
    PlatformRole,
    Role,
    SchoolClass,
    Student,
    SupportKind,
    SupportRequest,
    User,
)
from app.models.audit import AuditEntry
from app.models.base import utcnow
from app.models.support import DeletionState, SupportGrant
from tests.conftest import _HASH, sign_in

SCHOOL_BLUEPRINTS = ("directory", "classes", "settings")
START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)  # after CLOCK_START, when the fixtures were made


@pytest.fixture
def staff_user(app):
    """A platform support person who belongs to no school."""
    user = User(email="helper@operator.example", name="Sam Support", password_hash=_HASH)
    user.platform_role = PlatformRole.SUPPORT
    db.session.add(user)
    db.session.commit()
    return user


@pytest.fixture
def school_with_family(make_school, make_member):
    """A school with a class, one family (Olive's) and a SuperAdmin."""
    school = make_school(name="Hazel School")
    admin = make_member(school, role=Role.SUPERADMIN, name="Ada Admin")
    olive = make_member(school, name="Olive Parent", email="olive@example.org")
    with tenancy.bound(school.id):
        school_class = SchoolClass(name="Robins", grade="Grade 1", school_year="2026-27")
        family = Family(name="Parent family")
        db.session.add_all([school_class, family])
        db.session.flush()
        db.session.add(Guardian(family_id=family.id, membership_id=olive.id))
        student = Student(family_id=family.id, first_name="Pip", last_name="Parent")
        db.session.add(student)
        db.session.flush()
        db.session.add(Enrollment(student_id=student.id, class_id=school_class.id))
        db.session.commit()
    return school, admin, school_class


def _entries(school_id: int, action: str | None = None) -> list[AuditEntry]:
    db.session.expire_all()
    with tenancy.bound(school_id):
        query = select(AuditEntry).order_by(AuditEntry.id)
        if action:
            query = query.where(AuditEntry.action == action)
        return list(db.session.scalars(query))


def _school_routes(app, class_id: int) -> list[str]:
    """Every GET route of the directory, classes and settings blueprints, ids filled in."""
    urls = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] not in SCHOOL_BLUEPRINTS or "GET" not in rule.methods:
            continue
        values = {}
        for name, converter in rule._converters.items():
            assert isinstance(converter, IntegerConverter), rule.rule
            values[name] = class_id
        urls.append(rule.build(values)[1])
    assert len(urls) >= 8  # the walk is not vacuous
    return urls


def _enter(client, school_id: int):
    return client.form(f"/platform/schools/{school_id}/enter")


# -- without a grant ----------------------------------------------------------------------------


def test_staff_without_a_grant_see_no_school_data(client, app, staff_user, school_with_family):
    school, _, school_class = school_with_family
    sign_in(client, staff_user.email)
    assert client.get("/platform/").status_code == 200
    assert _enter(client, school.id).status_code == 403
    for url in _school_routes(app, school_class.id):
        assert client.get(url).status_code == 403, url
    assert _entries(school.id, "support.viewed") == []


def test_the_console_is_for_platform_staff_only(client, school_with_family):
    _, admin, _ = school_with_family
    assert client.get("/platform/").status_code == 302
    sign_in(client, admin.user.email)
    assert client.get("/platform/").status_code == 403
    assert client.form("/platform/schools/1/enter").status_code == 403


def test_platform_staff_land_on_the_console_not_the_pending_page(client, staff_user):
    sign_in(client, staff_user.email)
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/platform/"


# -- with a grant -------------------------------------------------------------------------------


def test_with_a_grant_staff_read_the_directory_and_settings_and_every_page_is_logged(
    client, app, staff_user, school_with_family, make_support_grant
):
    school, admin, school_class = school_with_family
    make_support_grant(school)
    sign_in(client, staff_user.email)
    console = client.get("/platform/").get_data(as_text=True)
    assert "Hazel School" in console and "Allowed until" in console

    response = _enter(client, school.id)
    assert response.status_code == 303 and response.headers["Location"] == "/directory/"
    directory = client.get("/directory/?q=olive").get_data(as_text=True)
    assert "Olive Parent" in directory and "olive@example.org" in directory  # view_all_contacts
    assert client.get(f"/classes/{school_class.id}").status_code == 200
    settings = client.get("/settings/")
    assert settings.status_code == 200
    assert 'action="/settings/profile"' not in settings.get_data(as_text=True)  # read-only
    assert client.get("/settings/audit").status_code == 200
    assert client.get("/").status_code == 200  # the home page copes with the stand-in membership
    # Only the synthetic read-only set: no people management, no export, no approvals.
    for url in ("/settings/people", "/directory/export.csv", "/members/pending", "/messages", "/calendar/"):
        assert client.get(url).status_code == 403, url

    viewed = _entries(school.id, "support.viewed")
    routes = [e.detail["route"] for e in viewed]
    assert routes[:4] == [
        "/platform/schools/<int:school_id>/enter",
        "/directory/",
        "/classes/<int:class_id>",
        "/settings/",
    ]
    assert all("?" not in r and str(school_class.id) not in r for r in routes)  # the pattern, not the URL
    assert all(e.by_support and e.actor_id == staff_user.id for e in viewed[1:])

    # The school's admin reads those entries in their audit log, marked as support's.
    admin_client = app.test_client()
    sign_in(admin_client, admin.user.email)
    log = admin_client.get("/settings/audit?action=support.viewed").get_data(as_text=True)
    assert "Sam Support" in log and "/classes/&lt;int:class_id&gt;" in log
    assert '<span class="tag">support</span>' in log


def test_under_a_grant_nothing_can_be_changed(client, staff_user, school_with_family, make_support_grant):
    school, admin, _ = school_with_family
    make_support_grant(school)
    sign_in(client, staff_user.email)
    _enter(client, school.id)
    attempts = [
        ("/settings/profile", {"name": "Hacked", "timezone": "UTC"}),
        ("/settings/invite-code/off", {"confirmed": "yes"}),
        ("/settings/support/grant", {"hours": "100"}),
        (f"/settings/people/{admin.id}/role", {"role": "parent"}),
        ("/directory/me", {"phone": "123"}),
        (f"/members/{admin.id}/approve", {}),
    ]
    for url, data in attempts:
        assert client.form(url, data).status_code == 403, url
        assert client.htmx(url, data, target="x").status_code == 403, url
    db.session.expire_all()
    assert db.session.get(type(school), school.id).name == "Hazel School"
    assert db.session.get(type(school), school.id).invite_code is not None


def test_a_grant_opens_only_its_own_school(
    client, staff_user, school_with_family, make_school, make_member, make_support_grant
):
    school, _, _ = school_with_family
    other = make_school(name="Other School")
    make_member(other, name="Secret Sally")
    with tenancy.bound(other.id):
        other_class = SchoolClass(name="Hidden", grade="1", school_year="2026-27")
        db.session.add(other_class)
        db.session.commit()
    make_support_grant(school)
    sign_in(client, staff_user.email)
    assert _enter(client, other.id).status_code == 403
    _enter(client, school.id)
    assert client.get(f"/classes/{other_class.id}").status_code == 404
    assert "Secret Sally" not in client.get("/directory/?q=sally").get_data(as_text=True)


# -- after expiry or revocation -----------------------------------------------------------------


def test_after_expiry_every_school_route_is_refused_and_logged(
    clock, client, app, staff_user, school_with_family, make_support_grant
):
    school, _, school_class = school_with_family
    clock.move_to(START)
    make_support_grant(school, hours=3, start=START)
    sign_in(client, staff_user.email)
    assert _enter(client, school.id).status_code == 303
    assert client.get("/directory/").status_code == 200
    clock.move_to(START + timedelta(hours=2, minutes=59))
    assert client.get("/directory/").status_code == 200
    clock.move_to(START + timedelta(hours=3))
    urls = _school_routes(app, school_class.id)
    for url in urls:
        assert client.get(url).status_code == 403, url
    assert _enter(client, school.id).status_code == 403
    console = client.get("/platform/").get_data(as_text=True)
    assert "Open Hazel School read-only" not in console and "grant has ended" in console
    refused = _entries(school.id, "support.refused")
    assert len(refused) == len(urls)
    assert {e.actor_id for e in refused} == {staff_user.id}


def test_after_revocation_every_school_route_is_refused(
    client, app, staff_user, school_with_family, make_support_grant
):
    school, admin, school_class = school_with_family
    grant = make_support_grant(school, hours=72)
    sign_in(client, staff_user.email)
    _enter(client, school.id)
    assert client.get("/directory/").status_code == 200

    admin_client = app.test_client()
    sign_in(admin_client, admin.user.email)
    assert admin_client.form(f"/settings/support/{grant.id}/revoke").status_code == 303

    for url in _school_routes(app, school_class.id):
        assert client.get(url).status_code == 403, url
    actions = [e.action for e in _entries(school.id)]
    assert "support.revoked" in actions and actions[-1] == "support.refused"

    # Leaving the school ends the refusals; staff are back to seeing nothing.
    assert client.form("/platform/leave").status_code == 303
    assert client.get("/directory/").status_code == 403


def test_a_grant_that_starts_later_is_not_active_yet(
    client, staff_user, school_with_family, make_support_grant
):
    school, _, _ = school_with_family
    make_support_grant(school, start=utcnow() + timedelta(hours=1))
    sign_in(client, staff_user.email)
    assert _enter(client, school.id).status_code == 403


# -- the Help form's tick -----------------------------------------------------------------------


def test_the_help_forms_tick_opens_the_school_for_72_hours(client, app, staff_user, school_with_family):
    school, admin, _ = school_with_family
    sign_in(client, admin.user.email)
    response = client.form(
        "/help",
        {
            "name": "Ada Admin",
            "email": "ada@example.org",
            "subject": "Classes look wrong",
            "message": "Please have a look.",
            "grant_access": "y",
        },
    )
    assert response.status_code == 303
    with tenancy.bound(school.id):
        grant = db.session.scalar(select(SupportGrant))
        assert grant.expires_at - grant.starts_at == timedelta(hours=72)
        assert grant.support_request.subject == "Classes look wrong"
        reference = grant.support_request.reference
    assert "support.granted" in [e.action for e in _entries(school.id)]

    staff_client = app.test_client()
    sign_in(staff_client, staff_user.email)
    console = staff_client.get("/platform/").get_data(as_text=True)
    assert reference in console and "Classes look wrong" in console
    assert _enter(staff_client, school.id).status_code == 303


# -- deletion requests --------------------------------------------------------------------------


def _stored(request_id: int) -> SupportRequest:
    """The stored request as it is now (read across schools, as an inspector)."""
    db.session.expire_all()
    with tenancy.unscoped():
        return db.session.get(SupportRequest, request_id)


def _deletion_request(client, school) -> SupportRequest:
    client.form(
        "/help",
        {
            "name": "Olive Parent",
            "email": "olive@example.org",
            "subject": "Please delete us",
            "message": "We are leaving the school.",
            "deletion": "y",
        },
    )
    db.session.expire_all()
    with tenancy.unscoped():  # the test reads as an inspector, across schools
        return db.session.scalar(select(SupportRequest).where(SupportRequest.kind == SupportKind.DELETION))


def test_a_deletion_is_carried_out_only_after_support_marks_and_the_admin_confirms(
    client, app, staff_user, school_with_family
):
    school, admin, _ = school_with_family
    sign_in(client, "olive@example.org")
    request = _deletion_request(client, school)
    assert request.school_id == school.id and request.deletion_state is None

    admin_client = app.test_client()
    sign_in(admin_client, admin.user.email)
    # Before support marks it, the admin has nothing to confirm.
    assert admin_client.form(f"/settings/deletions/{request.id}/confirm").status_code == 303
    db.session.expire_all()
    assert _stored(request.id).deletion_state is None

    staff_client = app.test_client()
    sign_in(staff_client, staff_user.email)
    assert f"Mark {request.reference} to be carried out" in staff_client.get("/platform/").get_data(
        as_text=True
    )
    assert staff_client.form(f"/platform/requests/{request.id}/mark-deletion").status_code == 303
    db.session.expire_all()
    assert _stored(request.id).deletion_state is DeletionState.MARKED
    with tenancy.bound(school.id):
        olive = db.session.scalar(
            select(Membership)
            .join(User, User.id == Membership.user_id)
            .where(User.email == "olive@example.org")
        )
        assert olive.status is MembershipStatus.APPROVED  # marking alone deletes nothing

    page = admin_client.get("/settings/").get_data(as_text=True)
    assert f"Confirm and carry out {request.reference}" in page
    assert admin_client.form(f"/settings/deletions/{request.id}/confirm").status_code == 303
    db.session.expire_all()
    assert _stored(request.id).deletion_state is DeletionState.CARRIED_OUT
    with tenancy.bound(school.id):
        olive = db.session.scalar(
            select(Membership)
            .join(User, User.id == Membership.user_id)
            .where(User.email == "olive@example.org")
        )
        assert olive.status is MembershipStatus.DEACTIVATED and olive.phone is None
    actions = [e.action for e in _entries(school.id)]
    assert actions.index("support.deletion_marked") < actions.index("support.deletion")


def test_another_school_cannot_confirm_a_deletion(
    client, app, staff_user, school_with_family, make_school, make_member
):
    school, _, _ = school_with_family
    sign_in(client, "olive@example.org")
    request = _deletion_request(client, school)
    staff_client = app.test_client()
    sign_in(staff_client, staff_user.email)
    staff_client.form(f"/platform/requests/{request.id}/mark-deletion")
    stranger = make_member(make_school(), role=Role.SUPERADMIN)
    other_client = app.test_client()
    sign_in(other_client, stranger.user.email)
    assert other_client.form(f"/settings/deletions/{request.id}/confirm").status_code == 404
    db.session.expire_all()
    assert _stored(request.id).deletion_state is DeletionState.MARKED


def test_only_deletion_requests_can_be_marked(client, staff_user, school_with_family):
    school, admin, _ = school_with_family
    sign_in(client, admin.user.email)
    client.form("/help", {"name": "A", "email": "a@example.org", "subject": "Hi", "message": "Hello"})
    with tenancy.unscoped():
        help_request = db.session.scalar(select(SupportRequest))
    client.form("/sign-out")
    sign_in(client, staff_user.email)
    client.form(f"/platform/requests/{help_request.id}/mark-deletion")
    db.session.expire_all()
    assert _stored(help_request.id).deletion_state is None
    assert re.search("cannot be marked", client.get("/platform/").get_data(as_text=True))


def test_an_admin_cannot_carry_out_the_deletion_of_the_only_superadmin(
    client, app, staff_user, school_with_family, make_member
):
    """Confirming a deletion deactivates the requester: the same rank and last-SuperAdmin rules apply."""
    school, superadmin, _ = school_with_family
    admin = make_member(school, role=Role.ADMIN, name="Andy Admin")
    sign_in(client, superadmin.user.email)
    request = _deletion_request(client, school)
    staff_client = app.test_client()
    sign_in(staff_client, staff_user.email)
    assert staff_client.form(f"/platform/requests/{request.id}/mark-deletion").status_code == 303
    admin_client = app.test_client()
    sign_in(admin_client, admin.user.email)
    refused = admin_client.form(f"/settings/deletions/{request.id}/confirm", follow_redirects=True)
    assert "above yours" in refused.get_data(as_text=True)
    db.session.expire_all()
    assert _stored(request.id).deletion_state is DeletionState.MARKED
    with tenancy.bound(school.id):
        assert db.session.get(Membership, superadmin.id).status is MembershipStatus.APPROVED
