"""The settings page: every section per role, saving in place and as plain forms, the people rules
(last SuperAdmin, nobody raised beyond their own rights), changes effective on the next request,
tenant isolation, and the audit log (filters, keyset pages, sign-ins as a count)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from app import audit, permissions, tenancy
from app.auth.services import school_by_code
from app.extensions import db
from app.models import Membership, MembershipStatus, PermissionChange, Role, School, Visibility
from app.models.audit import AuditEntry
from app.models.support import SupportGrant
from app.permissions import ROLE_DEFAULTS, effective_permissions
from tests.conftest import count_queries, sign_in

ROLES = [Role.PARENT, Role.ROOM_PARENT, Role.STAFF, Role.ADMIN, Role.SUPERADMIN]


def _school(school_id: int) -> School:
    db.session.expire_all()
    return db.session.get(School, school_id)


def _membership(membership_id: int, school_id: int) -> Membership:
    db.session.expire_all()
    with tenancy.bound(school_id):
        return db.session.scalar(select(Membership).where(Membership.id == membership_id))


def _changes(membership_id: int, school_id: int) -> list[tuple[str, bool]]:
    """The single permission changes on a membership."""
    db.session.expire_all()
    with tenancy.bound(school_id):
        query = select(PermissionChange.permission, PermissionChange.granted)
        return list(db.session.execute(query.where(PermissionChange.membership_id == membership_id)).all())


def _actions(school_id: int) -> list[str]:
    db.session.expire_all()
    with tenancy.bound(school_id):
        return list(db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def _as(client, make_school, make_member, role: Role, **school):
    school = make_school(**school)
    member = make_member(school, role=role)
    sign_in(client, member.user.email)
    return school, member


# -- who reaches which section -----------------------------------------------------------------

SECTIONS = [
    # (method, path, allowed roles)
    ("GET", "/settings/", {Role.ADMIN, Role.SUPERADMIN}),
    ("POST", "/settings/profile", {Role.ADMIN, Role.SUPERADMIN}),
    ("POST", "/settings/invite-code/rotate", {Role.ADMIN, Role.SUPERADMIN}),
    ("POST", "/settings/invite-code/off", {Role.ADMIN, Role.SUPERADMIN}),
    ("POST", "/settings/joining", {Role.ADMIN, Role.SUPERADMIN}),
    ("POST", "/settings/support/grant", {Role.ADMIN, Role.SUPERADMIN}),
    ("GET", "/settings/people", {Role.ADMIN, Role.SUPERADMIN}),
    ("GET", "/settings/audit", {Role.ADMIN, Role.SUPERADMIN}),
    ("GET", "/settings/suppressions", {Role.ADMIN, Role.SUPERADMIN}),
    ("POST", "/settings/people/{me}/permissions", {Role.SUPERADMIN}),
]


@pytest.mark.parametrize("role", ROLES)
def test_every_section_follows_the_role_defaults(client, make_school, make_member, role):
    school, me = _as(client, make_school, make_member, role)
    make_member(school, role=Role.SUPERADMIN)  # so nobody here is the last SuperAdmin
    for method, path, allowed in SECTIONS:
        url = path.format(me=me.id)
        if method == "GET":
            response = client.get(url)
        else:
            data = {"name": "Renamed", "timezone": "Europe/Paris", "hours": "2"}
            data |= {"default_visibility": "classes", "approval_role": "staff", "confirmed": "yes"}
            data["permission"] = sorted(ROLE_DEFAULTS[role])
            response = client.form(url, data)
        expected = {200, 303} if role in allowed else {403}
        assert response.status_code in expected, (role, method, url, response.status_code)


def test_settings_link_is_in_the_nav_only_for_those_who_may_see_it(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.STAFF)
    assert 'href="/settings/"' not in client.get("/").get_data(as_text=True)
    admin = make_member(school, role=Role.ADMIN)
    client.form("/sign-out")
    sign_in(client, admin.user.email)
    assert 'href="/settings/"' in client.get("/").get_data(as_text=True)


def test_sections_are_shown_only_with_their_permission(client, make_school, make_member):
    school, admin = _as(client, make_school, make_member, Role.ADMIN)
    page = client.get("/settings/").get_data(as_text=True)
    assert 'id="section-support"' in page and 'id="section-data"' in page
    with tenancy.bound(school.id):
        for key in ("support.grant", "data.export", "settings.edit"):
            db.session.add(PermissionChange(membership_id=admin.id, permission=key, granted=False))
        db.session.commit()
    page = client.get("/settings/").get_data(as_text=True)
    assert 'id="section-support"' not in page and 'id="section-data"' not in page
    assert 'action="/settings/profile"' not in page  # read-only without settings.edit
    assert school.name in page


# -- school profile, code, joining rules -------------------------------------------------------


def test_profile_saves_in_place_with_htmx(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    response = client.htmx(
        "/settings/profile",
        {"name": "Oak Hill School", "timezone": "Europe/London"},
        target="section-profile",
    )
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "<html" not in body and 'value="Oak Hill School"' in body
    assert "School profile saved." in body  # the flash, out of band
    assert (_school(school.id).name, _school(school.id).timezone) == ("Oak Hill School", "Europe/London")
    assert _actions(school.id)[-1] == "settings.changed"


def test_profile_saves_as_a_plain_form_with_303_and_a_flash(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    response = client.form("/settings/profile", {"name": "Elm School", "timezone": "America/New_York"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/settings/#section-profile"
    assert "School profile saved." in client.get("/settings/").get_data(as_text=True)
    assert _school(school.id).timezone == "America/New_York"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../../etc/passwd", "Europe/London\x00", "x" * 500])
def test_an_unknown_time_zone_is_refused_next_to_the_field_and_kept(client, make_school, make_member, zone):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    response = client.htmx(
        "/settings/profile", {"name": "Typed Name", "timezone": zone}, target="section-profile"
    )
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    if "\x00" not in zone:
        assert 'id="timezone-error"' in body and 'value="Typed Name"' in body
    assert _school(school.id).timezone == "UTC"


def test_the_invite_code_is_rotated_and_switched_off(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN, code="OLD-CODE")
    assert "OLD-CODE" in client.get("/settings/").get_data(as_text=True)
    response = client.htmx("/settings/invite-code/rotate", {"confirmed": "yes"}, target="section-invite")
    assert response.status_code == 200
    new_code = _school(school.id).invite_code
    assert new_code and new_code != "OLD-CODE" and new_code in response.get_data(as_text=True)
    # The old code no longer finds the school.
    assert school_by_code("OLD-CODE") is None
    assert school_by_code(new_code.lower()).id == school.id
    assert client.form("/settings/invite-code/off", {"confirmed": "yes"}).status_code == 303
    assert _school(school.id).invite_code is None
    assert "switched off" in client.get("/settings/").get_data(as_text=True)
    assert _actions(school.id)[-2:] == ["invite_code.rotated", "invite_code.switched_off"]


def test_joining_rules_are_saved_and_approval_by_whom_is_enforced(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    staff = make_member(school, role=Role.STAFF)
    response = client.form(
        "/settings/joining",
        {"families_edit_own": "y", "default_visibility": "staff", "approval_role": "admin"},
    )
    assert response.status_code == 303
    saved = _school(school.id)
    assert saved.families_edit_own is True
    assert saved.default_visibility is Visibility.STAFF
    assert saved.approval_role is Role.ADMIN
    staff_client = client.application.test_client()
    sign_in(staff_client, staff.user.email)
    assert staff_client.get("/members/pending").status_code == 403  # staff no longer approve
    assert client.get("/members/pending").status_code == 200


def test_bad_joining_values_give_400_not_500(client, make_school, make_member):
    _as(client, make_school, make_member, Role.ADMIN)
    response = client.htmx(
        "/settings/joining",
        {"default_visibility": "martians", "approval_role": "parent"},
        target="section-joining",
    )
    assert response.status_code == 400
    assert "Not a valid choice" in response.get_data(as_text=True)


# -- people -----------------------------------------------------------------------------------


def test_people_search_finds_members_of_this_school_only(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    make_member(school, name="Findable Fiona")
    make_member(school, name="Other Otto")
    make_member(make_school(), name="Findable Foreigner")
    page = client.htmx("/settings/people?q=findable", method="GET", target="people-results")
    body = page.get_data(as_text=True)
    assert "Findable Fiona" in body and "Other Otto" not in body and "Findable Foreigner" not in body
    assert "<html" not in body


def test_people_are_listed_a_page_at_a_time(client, make_school, make_member):
    """55 matching members: 50 on page 1 with a Next link (search kept), the rest on page 2."""
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    for n in range(55):
        make_member(school, name=f"Pager Person {n:02d}")
    first = client.get("/settings/people?q=pager").get_data(as_text=True)
    assert first.count("Pager Person") == 50
    assert "Pager Person 49" in first and "Pager Person 50" not in first
    assert 'href="/settings/people?q=pager&amp;page=2"' in first
    second = client.htmx("/settings/people?q=pager&page=2", method="GET", target="people-results")
    body = second.get_data(as_text=True)
    assert body.count("Pager Person") == 5 and "Pager Person 54" in body
    assert "page=3" not in body and 'href="/settings/people?q=pager&amp;page=1"' in body
    for junk in ("abc", "-2", "0", "99999999999999999999"):
        response = client.get(f"/settings/people?q=pager&page={junk}")
        assert response.status_code == 200, junk
        assert "Pager Person 00" in response.get_data(as_text=True), junk


def test_another_schools_people_are_not_found(client, make_school, make_member):
    _as(client, make_school, make_member, Role.SUPERADMIN)
    stranger = make_member(make_school(), role=Role.PARENT)
    assert client.get(f"/settings/people/{stranger.id}").status_code == 404
    for action in ("role", "permissions", "deactivate", "reactivate"):
        response = client.form(f"/settings/people/{stranger.id}/{action}", {"role": "staff"})
        assert response.status_code == 404, action
    assert _membership(stranger.id, stranger.school_id).role is Role.PARENT


def test_a_role_change_takes_effect_on_the_next_request(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    parent = make_member(school, role=Role.PARENT)
    parent_client = client.application.test_client()
    sign_in(parent_client, parent.user.email)
    assert parent_client.get("/members/pending").status_code == 403

    response = client.htmx(f"/settings/people/{parent.id}/role", {"role": "staff"}, target="person")
    assert response.status_code == 200 and "Role changed to Staff." in response.get_data(as_text=True)
    assert parent_client.get("/members/pending").status_code == 200
    entry = _last_entry(school.id)
    assert (entry.action, entry.target, entry.detail) == (
        "member.role_changed",
        parent.user.name,
        {"old": "parent", "new": "staff"},
    )


def _last_entry(school_id: int) -> AuditEntry:
    db.session.expire_all()
    with tenancy.bound(school_id):
        return db.session.scalar(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1))


def test_nobody_gives_a_role_above_their_own(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    parent = make_member(school, role=Role.PARENT)
    page = client.get(f"/settings/people/{parent.id}").get_data(as_text=True)
    assert 'value="admin"' in page and 'value="superadmin"' not in page
    response = client.form(f"/settings/people/{parent.id}/role", {"role": "superadmin"})
    assert response.status_code == 403
    assert "only up to your own" in response.get_data(as_text=True)
    assert _membership(parent.id, school.id).role is Role.PARENT


def test_an_admin_cannot_change_a_superadmin(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    boss = make_member(school, role=Role.SUPERADMIN)
    make_member(school, role=Role.SUPERADMIN)
    assert client.form(f"/settings/people/{boss.id}/role", {"role": "parent"}).status_code == 403
    assert client.form(f"/settings/people/{boss.id}/deactivate", {"confirmed": "yes"}).status_code == 403
    assert _membership(boss.id, school.id).role is Role.SUPERADMIN


def test_the_last_superadmin_cannot_be_demoted_or_deactivated_even_by_themselves(
    client, make_school, make_member
):
    school, me = _as(client, make_school, make_member, Role.SUPERADMIN)
    for path, data in (
        (f"/settings/people/{me.id}/role", {"role": "admin"}),
        (f"/settings/people/{me.id}/deactivate", {"confirmed": "yes"}),
    ):
        response = client.htmx(path, data, target="person")
        assert response.status_code == 422, path
        assert "at least one SuperAdmin" in response.get_data(as_text=True)
    kept = _membership(me.id, school.id)
    assert (kept.role, kept.status) == (Role.SUPERADMIN, MembershipStatus.APPROVED)

    # With a second SuperAdmin, stepping down is allowed.
    make_member(school, role=Role.SUPERADMIN)
    assert client.form(f"/settings/people/{me.id}/role", {"role": "admin"}).status_code == 303
    assert _membership(me.id, school.id).role is Role.ADMIN


def test_an_admin_cannot_strip_a_superadmins_permissions(client, make_school, make_member):
    """The rank check covers single permissions too, not only roles and deactivation."""
    school, admin = _as(client, make_school, make_member, Role.ADMIN)
    with tenancy.bound(school.id):
        db.session.add(
            PermissionChange(membership_id=admin.id, permission="members.permissions", granted=True)
        )
        db.session.commit()
    boss = make_member(school, role=Role.SUPERADMIN)
    response = client.form(f"/settings/people/{boss.id}/permissions", {"permission": ["directory.view"]})
    assert response.status_code == 403
    assert _changes(boss.id, school.id) == []


def test_a_superadmin_always_keeps_managing_people(client, make_school, make_member):
    school, me = _as(client, make_school, make_member, Role.SUPERADMIN)
    other = make_member(school, role=Role.SUPERADMIN)
    everything_but_people = [key for key in permissions.BY_KEY if not key.startswith("members.")]
    for target in (me, other):
        response = client.form(
            f"/settings/people/{target.id}/permissions", {"permission": everything_but_people}
        )
        assert response.status_code == 422
        assert "always keeps managing people" in response.get_data(as_text=True)
        assert _changes(target.id, school.id) == []


def test_a_new_role_cannot_hand_over_permissions_the_actor_lost(client, make_school, make_member):
    """An admin whose data.export was revoked cannot make someone else an admin to export for them."""
    school, admin = _as(client, make_school, make_member, Role.ADMIN)
    with tenancy.bound(school.id):
        db.session.add(PermissionChange(membership_id=admin.id, permission="data.export", granted=False))
        db.session.commit()
    parent = make_member(school, role=Role.PARENT)
    response = client.form(f"/settings/people/{parent.id}/role", {"role": "admin"})
    assert response.status_code == 403
    assert "permissions you do not have yourself" in response.get_data(as_text=True)
    assert _membership(parent.id, school.id).role is Role.PARENT
    staff = client.form(f"/settings/people/{parent.id}/role", {"role": "staff"})  # nothing beyond theirs
    assert staff.status_code == 303 and _membership(parent.id, school.id).role is Role.STAFF


def test_a_closed_account_does_not_count_as_the_other_superadmin(client, make_school, make_member):
    school, me = _as(client, make_school, make_member, Role.SUPERADMIN)
    gone = make_member(school, role=Role.SUPERADMIN)
    gone.user.active = False  # closed their account; the membership is still approved
    db.session.commit()
    response = client.form(f"/settings/people/{me.id}/role", {"role": "admin"})
    assert response.status_code == 422
    assert _membership(me.id, school.id).role is Role.SUPERADMIN


def test_deactivating_first_does_not_get_round_the_role_check(client, make_school, make_member):
    """Deactivate, promote, reactivate: the promotion is still judged by what the role would give."""
    school, admin = _as(client, make_school, make_member, Role.ADMIN)
    with tenancy.bound(school.id):
        db.session.add(PermissionChange(membership_id=admin.id, permission="audit.view", granted=False))
        db.session.commit()
    staff = make_member(school, role=Role.STAFF)
    assert client.form(f"/settings/people/{staff.id}/deactivate", {"confirmed": "yes"}).status_code == 303
    response = client.form(f"/settings/people/{staff.id}/role", {"role": "admin"})
    assert response.status_code == 403
    assert _membership(staff.id, school.id).role is Role.STAFF


def test_a_new_superadmin_keeps_managing_people_whatever_was_revoked_before(client, make_school, make_member):
    school, me = _as(client, make_school, make_member, Role.SUPERADMIN)
    admin = make_member(school, role=Role.ADMIN)
    with tenancy.bound(school.id):
        db.session.add(PermissionChange(membership_id=admin.id, permission="members.manage", granted=False))
        db.session.commit()
    assert client.form(f"/settings/people/{admin.id}/role", {"role": "superadmin"}).status_code == 303
    assert _changes(admin.id, school.id) == []
    with tenancy.bound(school.id):
        promoted = db.session.get(Membership, admin.id)
        assert "members.manage" in effective_permissions(promoted)


def test_a_closed_superadmin_account_can_be_demoted_by_the_open_one(client, make_school, make_member):
    school, me = _as(client, make_school, make_member, Role.SUPERADMIN)
    gone = make_member(school, role=Role.SUPERADMIN)
    gone.user.active = False
    db.session.commit()
    assert client.form(f"/settings/people/{gone.id}/role", {"role": "parent"}).status_code == 303
    assert _membership(gone.id, school.id).role is Role.PARENT


def test_saving_a_deactivated_persons_permissions_keeps_their_role_defaults(client, make_school, make_member):
    """The form shows what they would have back; saving one change must not revoke the rest."""
    school, me = _as(client, make_school, make_member, Role.SUPERADMIN)
    staff = make_member(school, role=Role.STAFF)
    assert client.form(f"/settings/people/{staff.id}/deactivate", {"confirmed": "yes"}).status_code == 303
    page = client.get(f"/settings/people/{staff.id}").get_data(as_text=True)
    ticked = re.findall(r'<input[^>]*name="permission"[^>]*value="([^"]+)"[^>]*checked', page)
    assert set(ticked) == set(ROLE_DEFAULTS[Role.STAFF])
    response = client.form(
        f"/settings/people/{staff.id}/permissions", {"permission": [*ticked, "audit.view"]}
    )
    assert response.status_code == 303
    assert _changes(staff.id, school.id) == [("audit.view", True)]


def test_grant_and_revoke_single_permissions_effective_on_the_next_request(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.SUPERADMIN)
    parent = make_member(school, role=Role.PARENT)
    parent_client = client.application.test_client()
    sign_in(parent_client, parent.user.email)
    assert parent_client.get("/members/pending").status_code == 403

    page = client.get(f"/settings/people/{parent.id}").get_data(as_text=True)
    assert "<legend>Directory</legend>" in page and "<legend>Settings</legend>" in page
    response = client.htmx(
        f"/settings/people/{parent.id}/permissions",
        {"permission": ["directory.view", "members.approve"]},
        target="person",
    )
    assert response.status_code == 200
    assert parent_client.get("/members/pending").status_code == 200
    assert "granted" in response.get_data(as_text=True)

    # Untick the directory: a revocation on top of the role, effective at once.
    client.form(f"/settings/people/{parent.id}/permissions", {"permission": ["members.approve"]})
    assert parent_client.get("/classes/").status_code == 403
    with tenancy.bound(school.id):
        changes = dict(
            db.session.execute(
                select(PermissionChange.permission, PermissionChange.granted).where(
                    PermissionChange.membership_id == parent.id
                )
            ).all()
        )
    assert changes == {"members.approve": True, "directory.view": False}

    # Back to the role's defaults: the single changes are gone, not stacked.
    client.form(f"/settings/people/{parent.id}/permissions", {"permission": ["directory.view"]})
    with tenancy.bound(school.id):
        left = db.session.scalar(
            select(func.count(PermissionChange.id)).where(PermissionChange.membership_id == parent.id)
        )
    assert left == 0
    assert parent_client.get("/classes/").status_code == 200
    assert _actions(school.id).count("member.permission_changed") == 4


def test_nobody_grants_a_permission_they_do_not_have(client, make_school, make_member):
    """A SuperAdmin who lost support.grant cannot hand it out, even with a crafted form."""
    school, me = _as(client, make_school, make_member, Role.SUPERADMIN)
    parent = make_member(school, role=Role.PARENT)
    with tenancy.bound(school.id):
        db.session.add(PermissionChange(membership_id=me.id, permission="support.grant", granted=False))
        db.session.commit()
    page = client.get(f"/settings/people/{parent.id}").get_data(as_text=True)
    support_box = re.search(r'<input[^>]*value="support.grant"[^>]*>', page).group(0)
    assert "disabled" in support_box
    response = client.form(
        f"/settings/people/{parent.id}/permissions", {"permission": ["directory.view", "support.grant"]}
    )
    assert response.status_code == 403
    assert "only give permissions you have yourself" in response.get_data(as_text=True)
    with tenancy.bound(school.id):
        assert (
            db.session.scalar(
                select(func.count(PermissionChange.id)).where(PermissionChange.membership_id == parent.id)
            )
            == 0
        )


def test_permissions_the_actor_lacks_are_left_alone_when_others_change(client, make_school, make_member):
    school, me = _as(client, make_school, make_member, Role.SUPERADMIN)
    admin = make_member(school, role=Role.ADMIN)  # has support.grant by role
    with tenancy.bound(school.id):
        db.session.add(PermissionChange(membership_id=me.id, permission="support.grant", granted=False))
        db.session.commit()
    # The disabled box is not submitted; the admin keeps support.grant.
    kept = sorted(ROLE_DEFAULTS[Role.ADMIN] - {"support.grant", "data.export"})
    assert client.form(f"/settings/people/{admin.id}/permissions", {"permission": kept}).status_code == 303
    with tenancy.bound(school.id):
        now = effective_permissions(_membership(admin.id, school.id))
    assert "support.grant" in now and "data.export" not in now


def test_a_staff_member_with_members_permissions_cannot_raise_beyond_their_own(
    client, make_school, make_member
):
    school = make_school()
    staff = make_member(school, role=Role.STAFF)
    with tenancy.bound(school.id):
        for key in ("members.manage", "members.permissions"):
            db.session.add(PermissionChange(membership_id=staff.id, permission=key, granted=True))
        db.session.commit()
    parent = make_member(school, role=Role.PARENT)
    sign_in(client, staff.user.email)
    assert client.form(f"/settings/people/{parent.id}/role", {"role": "admin"}).status_code == 403
    assert client.form(f"/settings/people/{parent.id}/role", {"role": "staff"}).status_code == 303
    assert (
        client.form(
            f"/settings/people/{parent.id}/permissions", {"permission": ["directory.view", "settings.edit"]}
        ).status_code
        == 403
    )


def test_deactivation_ends_access_on_the_next_request_and_is_audited(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    parent = make_member(school, role=Role.PARENT)
    parent_client = client.application.test_client()
    sign_in(parent_client, parent.user.email)
    assert parent_client.get("/classes/").status_code == 200
    response = client.form(f"/settings/people/{parent.id}/deactivate", {"confirmed": "yes"})
    assert response.status_code == 303
    assert parent_client.get("/classes/").status_code in (302, 403)
    assert parent_client.get("/classes/").headers.get("Location", "") in ("/pending", "")
    assert _membership(parent.id, school.id).status is MembershipStatus.DEACTIVATED
    assert client.form(f"/settings/people/{parent.id}/reactivate").status_code == 303
    assert parent_client.get("/classes/").status_code == 200
    assert _actions(school.id)[-2:] == ["member.deactivated", "member.reactivated"]


# -- support access ---------------------------------------------------------------------------


def test_support_access_is_granted_listed_and_revoked(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    response = client.htmx("/settings/support/grant", {"hours": "5"}, target="section-support")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "Revoke now" in body and "<html" not in body
    with tenancy.bound(school.id):
        grant = db.session.scalar(select(SupportGrant))
        assert grant.expires_at - grant.starts_at == timedelta(hours=5)
    assert client.form(f"/settings/support/{grant.id}/revoke").status_code == 303
    page = client.get("/settings/").get_data(as_text=True)
    assert "Support has no access now." in page and "revoked" in page
    assert _actions(school.id)[-2:] == ["support.granted", "support.revoked"]


@pytest.mark.parametrize("hours", ["0", "169", "-3", "abc", "", "99999999999999999999"])
def test_grant_hours_must_be_between_1_and_168(client, make_school, make_member, hours):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    response = client.htmx("/settings/support/grant", {"hours": hours}, target="section-support")
    assert response.status_code == 400
    assert "between 1 and 168" in response.get_data(as_text=True)
    with tenancy.bound(school.id):
        assert db.session.scalar(select(func.count(SupportGrant.id))) == 0


def test_another_schools_grant_cannot_be_revoked(client, make_school, make_member, make_support_grant):
    _as(client, make_school, make_member, Role.ADMIN)
    grant = make_support_grant(make_school(), hours=1)
    assert client.form(f"/settings/support/{grant.id}/revoke").status_code == 404


# -- the data section -------------------------------------------------------------------------


def test_the_data_section_links_the_export_form(client, make_school, make_member):
    """An admin's data section links the school export, and the link opens its form."""
    _as(client, make_school, make_member, Role.ADMIN)
    page = client.get("/settings/").get_data(as_text=True)
    assert 'id="section-data"' in page
    assert "coming soon" not in page
    assert 'href="/school/export"' in page
    export_page = client.get("/school/export")
    assert export_page.status_code == 200
    assert 'action="/school/export"' in export_page.get_data(as_text=True)


def test_without_data_export_there_is_no_export_link_and_no_export(client, make_school, make_member):
    """An admin whose data.export is revoked sees no export link, and the export refuses them."""
    school, admin = _as(client, make_school, make_member, Role.ADMIN)
    with tenancy.bound(school.id):
        db.session.add(PermissionChange(membership_id=admin.id, permission="data.export", granted=False))
        db.session.commit()
    page = client.get("/settings/")
    assert page.status_code == 200
    assert 'href="/school/export"' not in page.get_data(as_text=True)
    assert client.get("/school/export").status_code == 403


# -- the audit log ----------------------------------------------------------------------------


def _entries(school_id: int, action: str, n: int, at: datetime | None = None) -> None:
    with tenancy.bound(school_id):
        for i in range(n):
            entry = audit.record(action, target=f"{action} {i}", school_id=school_id)
            if at is not None:
                entry.created_at = at
        db.session.commit()


def test_the_audit_log_pages_with_a_constant_number_of_queries(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    _entries(school.id, "class.created", 120)
    client.get("/settings/audit")  # warm up
    with count_queries() as small:
        first = client.get("/settings/audit").get_data(as_text=True)
    assert first.count("<tr>") >= 50
    assert "class.created 119" in first and "class.created 69" not in first
    older = re.search(r'href="(/settings/audit\?before=\d+)"', first).group(1)
    second = client.get(older.replace("&amp;", "&")).get_data(as_text=True)
    assert "class.created 69" in second and "class.created 119" not in second
    _entries(school.id, "class.created", 300)
    with count_queries() as large:
        client.get("/settings/audit")
    assert len(large) == len(small)


def test_the_audit_log_filters_by_action_and_day(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    _entries(school.id, "class.created", 2, at=datetime(2026, 3, 1, 10, tzinfo=UTC))
    _entries(school.id, "class.deleted", 2, at=datetime(2026, 3, 5, 10, tzinfo=UTC))
    by_action = client.get("/settings/audit?action=class.deleted").get_data(as_text=True)
    assert "class.deleted 0" in by_action and "class.created 0" not in by_action
    by_day = client.get("/settings/audit?since=2026-03-01&until=2026-03-02").get_data(as_text=True)
    assert "class.created 1" in by_day and "class.deleted 1" not in by_day
    bad = client.get("/settings/audit?since=2026-03-09&until=2026-03-01&action=nonsense")
    assert bad.status_code == 400
    far = client.get("/settings/audit?until=9999-12-31")  # the day after would not exist
    assert far.status_code == 400 and "Choose a day between" in far.get_data(as_text=True)
    for junk in ("²", "١٢", "-1", "9" * 20):
        assert client.get(f"/settings/audit?before={junk}").status_code == 200
        assert client.get(f"/settings/people?page={junk}").status_code == 200


def test_sign_ins_are_counted_per_day_not_listed(client, make_school, make_member):
    school = make_school()
    admin = make_member(school, role=Role.ADMIN)
    parent = make_member(school, name="Signing Sam")
    with time_machine.travel(datetime(2026, 4, 2, 9, tzinfo=UTC), tick=False):
        for _ in range(3):
            other = client.application.test_client()
            sign_in(other, parent.user.email)
    with time_machine.travel(datetime(2026, 4, 3, 9, tzinfo=UTC), tick=False):
        sign_in(client, admin.user.email)
        page = client.get("/settings/audit").get_data(as_text=True)
    assert "<td>2026-04-02</td><td>3</td>" in page
    assert "Signing Sam" not in page  # a count, not a list of who signed in
    assert _actions(school.id).count("auth.signed_in") == 4


def test_the_sign_ins_box_counts_the_last_60_days_only(client, make_school, make_member):
    """Counting every sign-in the school ever had would grow with its history on every view."""
    school = make_school()
    admin = make_member(school, role=Role.ADMIN)
    parent = make_member(school)
    for moment in (datetime(2026, 2, 3, 9, tzinfo=UTC), datetime(2026, 2, 2, 23, tzinfo=UTC)):
        with time_machine.travel(moment, tick=False):
            sign_in(client.application.test_client(), parent.user.email)
    with time_machine.travel(datetime(2026, 4, 3, 9, tzinfo=UTC), tick=False):  # 59 days after 3 Feb
        sign_in(client, admin.user.email)
        page = client.get("/settings/audit").get_data(as_text=True)
        asked = client.get("/settings/audit?since=2026-02-01&until=2026-02-10").get_data(as_text=True)
    assert "<td>2026-02-03</td><td>1</td>" in page
    assert "2026-02-02</td>" not in page  # the 61st day back
    assert "<td>2026-02-02</td><td>1</td>" in asked  # a range asked for is counted, in full


def test_the_audit_log_counts_days_and_shows_times_on_the_schools_clock(client, make_school, make_member):
    """A school in Los Angeles: 18:30 there on 1 April is 01:30 UTC on 2 April."""
    school = make_school()
    school.timezone = "America/Los_Angeles"
    admin = make_member(school, role=Role.ADMIN)
    parent = make_member(school, name="Evening Eve")
    db.session.commit()
    for moment in (datetime(2026, 4, 2, 1, 30, tzinfo=UTC), datetime(2026, 4, 2, 6, 59, tzinfo=UTC)):
        with time_machine.travel(moment, tick=False):
            sign_in(client.application.test_client(), parent.user.email)
    _entries(school.id, "class.created", 1, at=datetime(2026, 4, 2, 1, 30, tzinfo=UTC))
    _entries(school.id, "class.deleted", 1, at=datetime(2026, 4, 2, 7, 30, tzinfo=UTC))
    sign_in(client, admin.user.email)
    page = client.get("/settings/audit?since=2026-04-01&until=2026-04-01").get_data(as_text=True)
    assert "<td>2026-04-01</td><td>2</td>" in page  # both before midnight in Los Angeles
    assert "2026-04-02</td>" not in page
    assert "class.created 0" in page and "Apr 1, 2026, 6:30\u202fPM" in page  # Babel puts U+202F before PM
    assert "class.deleted 0" not in page  # 00:30 on 2 April there
    assert "America/Los_Angeles" in page


def test_a_day_filter_across_a_clock_change_keeps_the_whole_day(client, make_school, make_member):
    """8 March 2026 in Los Angeles has 23 hours; its last minute is 06:59 UTC on 9 March."""
    school = make_school()
    school.timezone = "America/Los_Angeles"
    admin = make_member(school, role=Role.ADMIN)
    db.session.commit()
    _entries(school.id, "class.created", 1, at=datetime(2026, 3, 9, 6, 59, tzinfo=UTC))
    _entries(school.id, "class.deleted", 1, at=datetime(2026, 3, 9, 7, 0, tzinfo=UTC))
    sign_in(client, admin.user.email)
    page = client.get("/settings/audit?since=2026-03-08&until=2026-03-08").get_data(as_text=True)
    assert "class.created 0" in page and "class.deleted 0" not in page


def test_approving_and_rejecting_are_audited(client, make_school, make_member):
    school, _ = _as(client, make_school, make_member, Role.ADMIN)
    waiting = make_member(school, status=MembershipStatus.PENDING, name="Waiting Wendy")
    client.form(f"/members/{waiting.id}/approve")
    entry = _last_entry(school.id)
    assert (entry.action, entry.target) == ("member.approved", "Waiting Wendy")
    assert "Waiting Wendy" in client.get("/settings/audit").get_data(as_text=True)


def test_the_audit_log_is_append_only(app, make_school):
    from app.models.audit import AuditLogIsAppendOnly

    school = make_school()
    _entries(school.id, "class.created", 1)
    with tenancy.bound(school.id):
        entry = db.session.scalar(select(AuditEntry))
        entry.target = "rewritten"
        with pytest.raises(AuditLogIsAppendOnly):
            db.session.commit()
        db.session.rollback()


def test_two_superadmins_demoting_each_other_at_once_leave_one(
    app, database_url, make_school, make_member, monkeypatch
):
    """The last-SuperAdmin check locks the rows it counts: the second demotion waits, then is refused."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks (SELECT ... FOR UPDATE) are what is tested; SQLite has one writer")
    import threading
    import time

    from app.members import rules

    school = make_school()
    first, second = make_member(school, role=Role.SUPERADMIN), make_member(school, role=Role.SUPERADMIN)
    clients = []
    for member in (first, second):
        member_client = app.test_client()
        sign_in(member_client, member.user.email)
        clients.append(member_client)
    original = rules._superadmins_left

    def slow_count():
        count = original()
        time.sleep(0.5)  # hold the lock while the other request arrives
        return count

    monkeypatch.setattr(rules, "_superadmins_left", slow_count)
    results = {}

    def demote(index, target):
        results[index] = (
            clients[index].form(f"/settings/people/{target.id}/role", {"role": "admin"}).status_code
        )

    threads = [
        threading.Thread(target=demote, args=(0, second)),
        threading.Thread(target=demote, args=(1, first)),
    ]
    threads[0].start()
    time.sleep(0.15)
    threads[1].start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(results.values()) == [303, 422]
    with tenancy.bound(school.id):
        db.session.expire_all()
        roles = db.session.scalars(select(Membership.role).where(Membership.school_id == school.id)).all()
    assert roles.count(Role.SUPERADMIN) == 1
