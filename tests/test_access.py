"""P2: every route declares its access, and the declaration is what is enforced."""

from __future__ import annotations

import pytest
from flask import Blueprint

from app import tenancy
from app.extensions import db
from app.models import MembershipStatus, PermissionChange, PlatformRole, Role
from app.permissions import BY_KEY, ROLE_DEFAULTS, Access, access_of, modules, public
from tests.conftest import sign_in


def test_every_route_declares_its_access(app):
    """Walk url_map: a new route that declares nothing fails here."""
    undeclared = []
    for rule in app.url_map.iter_rules():
        access, permissions = access_of(rule.endpoint)
        if access is None:
            undeclared.append(rule.rule)
        known = {r.value for r in PlatformRole} if access is Access.PLATFORM else set(BY_KEY)
        for permission in permissions:
            assert permission in known, f"{rule.rule} names unknown permission {permission}"
    assert undeclared == []


def test_the_walk_catches_an_undeclared_route(build_app):
    """The check above is not vacuous: an unclassified view is found, and refused at runtime."""
    app = build_app()
    extra = Blueprint("extra", __name__)

    @extra.route("/forgotten")
    def forgotten():
        return "should never be served"

    app.register_blueprint(extra)
    with app.app_context():
        assert access_of("extra.forgotten") == (None, ())
        response = app.test_client().get("/forgotten")
    assert response.status_code == 403
    assert b"should never be served" not in response.data


def test_catalogue_is_grouped_and_holds_event_permissions():
    grouped = modules()
    assert {"Directory", "Members", "Events", "Settings"} <= set(grouped)
    labels = {p.label for p in grouped["Events"]}
    assert {"Create Event", "Edit Own Event", "Delete Own Event"} <= labels
    assert sum(len(v) for v in grouped.values()) == len(BY_KEY)


def test_role_defaults_grow_with_the_role():
    order = [Role.PARENT, Role.ROOM_PARENT, Role.STAFF, Role.ADMIN, Role.SUPERADMIN]
    for smaller, larger in zip(order, order[1:], strict=False):
        assert ROLE_DEFAULTS[smaller] < ROLE_DEFAULTS[larger]
    assert ROLE_DEFAULTS[Role.SUPERADMIN] == frozenset(BY_KEY)


def test_public_pages_need_no_account(client):
    for path in ("/", "/sign-in", "/join", "/privacy", "/password/forgot", "/health"):
        assert client.get(path).status_code == 200, path


def test_signed_in_pages_send_strangers_to_sign_in(client):
    for path in ("/account", "/pending", "/classes/", "/members/pending"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/sign-in?next=")


def test_pending_member_sees_only_the_pending_page(client, make_school, make_member):
    school = make_school(name="Willow Primary")
    member = make_member(school, status=MembershipStatus.PENDING)
    sign_in(client, member.user.email)
    assert "Willow Primary" in client.get("/pending").get_data(as_text=True)
    for path in ("/classes/", "/members/pending", "/"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"] == "/pending"


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (Role.PARENT, 403),
        (Role.ROOM_PARENT, 403),
        (Role.STAFF, 200),
        (Role.ADMIN, 200),
        (Role.SUPERADMIN, 200),
    ],
)
def test_approval_queue_follows_role_defaults(client, make_school, make_member, role, expected):
    school = make_school()
    member = make_member(school, role=role)
    sign_in(client, member.user.email)
    assert client.get("/members/pending").status_code == expected


def test_grant_and_revoke_change_what_a_member_reaches(client, make_school, make_member):
    """P2: per-person changes on top of the role take effect on the next request."""
    school = make_school()
    parent = make_member(school, role=Role.PARENT)
    sign_in(client, parent.user.email)
    assert client.get("/members/pending").status_code == 403
    assert "Approvals" not in client.get("/").get_data(as_text=True)

    with tenancy.bound(school.id):
        change = PermissionChange(membership_id=parent.id, permission="members.approve", granted=True)
        db.session.add(change)
        db.session.commit()
    assert client.get("/members/pending").status_code == 200
    assert "Approvals" in client.get("/").get_data(as_text=True)

    with tenancy.bound(school.id):
        change.granted = False  # now a revocation of something the role never had
        db.session.commit()
    assert client.get("/members/pending").status_code == 403

    assert client.get("/classes/").status_code == 200
    with tenancy.bound(school.id):
        db.session.add(PermissionChange(membership_id=parent.id, permission="directory.view", granted=False))
        db.session.commit()
    assert client.get("/classes/").status_code == 403


def test_static_files_are_public(app):
    """Flask's static view is declared public (by the factory, with ``public``) and a stranger,
    signed in to nothing, gets a stylesheet from it; a missing file is a 404, not a sign-in."""
    assert access_of("static") == (Access.PUBLIC, ())
    assert public(lambda: None).access is Access.PUBLIC  # the decorator the factory applies
    client = app.test_client()
    response = client.get("/static/css/app.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    response.close()
    assert client.get("/static/css/no-such-file.css").status_code == 404


def test_platform_views_refuse_everyone_without_the_platform_role(app, make_school, make_member):
    """A platform view is refused to school admins; the matching platform role reaches it."""
    from app.permissions import platform

    extra = Blueprint("extra_platform", __name__)

    @extra.route("/platform-only")
    @platform(PlatformRole.SUPPORT, PlatformRole.ADMIN)
    def platform_only():
        return "operator page"

    app.register_blueprint(extra)
    school = make_school(name="Birch School")
    admin = make_member(school, role=Role.SUPERADMIN)
    operator = make_member(school, role=Role.PARENT)
    operator.user.platform_role = PlatformRole.SUPPORT
    db.session.commit()
    client = app.test_client()
    assert client.get("/platform-only").status_code == 302  # strangers sign in first
    sign_in(client, admin.user.email)
    assert client.get("/platform-only").status_code == 403
    client = app.test_client()
    sign_in(client, operator.user.email)
    response = client.get("/platform-only")
    assert response.status_code == 200
    assert b"operator page" in response.data
