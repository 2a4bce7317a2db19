"""Nothing typed is ever lost: every form, posted with one bad field, comes back with the error
next to that field and every other value exactly as it was typed (passwords excepted: they are
never written into a page).

Each case posts distinctive values, so finding one in the answer can only mean it was kept."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import PlatformRole, Role
from app.models.consent import PolicyVersion
from tests.conftest import sign_in


@dataclass
class World:
    school: object
    admin: object
    staff: object
    parent: object
    hazel: object
    juniper: object
    family_id: int
    event_id: int
    policy_number: int | None = None
    extra: dict = field(default_factory=dict)


@pytest.fixture
def world(app, make_school, make_member, make_class, make_family, make_event, clock):
    school = make_school(name="Oak School", code="OAK-1234")
    admin = make_member(school, role=Role.SUPERADMIN, email="ada.admin@example.org", name="Ada Admin")
    staff = make_member(school, role=Role.STAFF, email="sam.staff@example.org", name="Sam Staff")
    parent = make_member(school, email="pia.parent@example.org", name="Pia Parent")
    hazel, juniper = make_class(school, "Hazel"), make_class(school, "Juniper")
    family = make_family(school, [parent], name="Parent family", children=[("Mia", "Parent", [hazel.id])])
    event = make_event(school, title="Sports day")
    admin.user.platform_role = PlatformRole.ADMIN
    db.session.commit()
    return World(school, admin, staff, parent, hazel, juniper, family.id, event.id)


def _error_beside(page: str, field_id: str) -> None:
    """The error is next to its field: a paragraph the field's aria-describedby names."""
    assert f'id="{field_id}-error"' in page, f"no error shown for {field_id}"
    assert re.search(
        rf'id="{re.escape(field_id)}"[^>]*aria-describedby="[^"]*{re.escape(field_id)}-error', page
    ) or re.search(
        rf'aria-describedby="[^"]*{re.escape(field_id)}-error[^"]*"[^>]*id="{re.escape(field_id)}"', page
    ), f"{field_id} is not tied to its error"


def _kept_text(page: str, value: str) -> None:
    assert html.escape(value, quote=True) in page or html.escape(value, quote=False) in page, (
        f"{value!r} was typed but is not in the page"
    )


def _kept_choice(page: str, name: str, value: str) -> None:
    """The <select name=...> has the option of ``value`` selected."""
    menu = re.search(rf'<select[^>]*name="{re.escape(name)}"[^>]*>(.*?)</select>', page, re.S)
    assert menu, f"no menu {name}"
    options = re.findall(r"<option[^>]*>", menu.group(1))
    chosen = [o for o in options if f'value="{value}"' in o]
    assert chosen and re.search(r"\bselected\b", chosen[0]), f"{name} lost its choice {value!r}"


def _kept_ticked(page: str, field_id: str) -> None:
    box = re.search(rf'<input[^>]*\bid="{re.escape(field_id)}"[^>]*>', page)
    assert box and re.search(r"\bchecked\b", box.group(0)), f"{field_id} lost its tick"


def _refused(response) -> str:
    assert response.status_code in (200, 400, 422), response.status_code
    return response.get_data(as_text=True)


# -- signed out -----------------------------------------------------------------------------


def test_join_keeps_everything_when_the_email_is_wrong(client, world):
    data = {
        "invite_code": "oak 1234",
        "family_code": "",
        "name": "Nadia Keptname",
        "email": "nadia-at-nowhere",
        "password": "plum orchard lantern",
        "accept_policy": "y",
        "children-0-first_name": "Mirabel",
        "children-0-last_name": "Keptlast",
        "children-0-class_id": str(world.hazel.id),
        "children-1-first_name": "Orrin",
        "children-1-last_name": "Keptlast",
        "children-1-class_id": str(world.juniper.id),
    }
    page = _refused(client.form("/join", data))
    _error_beside(page, "email")
    for value in ("oak 1234", "Nadia Keptname", "nadia-at-nowhere", "Mirabel", "Orrin", "Keptlast"):
        _kept_text(page, value)
    _kept_choice(page, "children-0-class_id", str(world.hazel.id))
    _kept_choice(page, "children-1-class_id", str(world.juniper.id))
    _kept_ticked(page, "accept_policy")
    assert "plum orchard lantern" not in page


def test_join_keeps_everything_when_the_service_refuses_the_password(client, world):
    data = {
        "invite_code": "OAK1234",
        "name": "Nadia Keptname",
        "email": "nadia@example.org",
        "password": "password",
        "accept_policy": "y",
        "children-0-first_name": "Mirabel",
        "children-0-last_name": "Keptlast",
        "children-0-class_id": str(world.hazel.id),
    }
    page = _refused(client.form("/join", data))
    _error_beside(page, "password")
    for value in ("OAK1234", "Nadia Keptname", "nadia@example.org", "Mirabel", "Keptlast"):
        _kept_text(page, value)
    _kept_choice(page, "children-0-class_id", str(world.hazel.id))


def test_sign_in_keeps_the_email(client, world):
    page = _refused(client.form("/sign-in", {"email": "kept.person@example.org", "password": "wrong one"}))
    _error_beside(page, "password")
    _kept_text(page, "kept.person@example.org")


def test_forgot_password_keeps_the_address(client, world):
    page = _refused(client.form("/password/forgot", {"email": "kept-not-an-address"}))
    _error_beside(page, "email")
    _kept_text(page, "kept-not-an-address")


def test_the_contact_form_keeps_name_and_message(client, world):
    data = {
        "name": "Keptname Contact",
        "email": "contact-not-an-address",
        "message": "Kept words\nover two lines",
    }
    page = _refused(client.form("/contact", data))
    _error_beside(page, "email")
    for value in data.values():
        _kept_text(page, value)


# -- signed in: account -----------------------------------------------------------------------


def test_the_email_change_keeps_the_new_address(client, world):
    sign_in(client, world.parent.user.email)
    page = _refused(
        client.form("/account/email", {"em-new_email": "kept.new@example.org", "em-current_password": ""})
    )
    _error_beside(page, "em-current_password")
    _kept_text(page, "kept.new@example.org")


def test_joining_another_school_keeps_the_code(client, world):
    sign_in(client, world.parent.user.email)
    page = _refused(client.form("/schools/join", {"js-invite_code": "KEPT-NOPE-99"}))
    _error_beside(page, "js-invite_code")
    _kept_text(page, "KEPT-NOPE-99")


def test_the_help_form_keeps_everything(client, world):
    sign_in(client, world.parent.user.email)
    data = {
        "name": "Keptname Helper",
        "email": "help-not-an-address",
        "subject": "Kept subject line",
        "message": "Kept question\nacross lines",
        "deletion": "y",
    }
    page = _refused(client.form("/help", data))
    _error_beside(page, "email")
    for key in ("name", "email", "subject", "message"):
        _kept_text(page, data[key])
    _kept_ticked(page, "deletion")


def test_my_details_keep_the_address_and_choices(client, world):
    sign_in(client, world.parent.user.email)
    data = {
        "phone": "call me kept",
        "address": "12 Kept Lane\nOaktown",
        "email_visibility": "school",
        "phone_visibility": "staff",
        "address_visibility": "classes",
    }
    page = _refused(client.form("/directory/me", data))
    _error_beside(page, "phone")
    _kept_text(page, "call me kept")
    _kept_text(page, "12 Kept Lane\nOaktown")
    for name in ("email_visibility", "phone_visibility", "address_visibility"):
        _kept_choice(page, name, data[name])


# -- signed in: the school's staff and admins --------------------------------------------------


@pytest.mark.parametrize("editing", [False, True], ids=["create", "edit"])
def test_the_class_form_keeps_everything(client, world, editing):
    sign_in(client, world.admin.user.email)
    url = f"/classes/{world.hazel.id}/edit" if editing else "/classes/new"
    data = {
        "name": "Kept Class Name",
        "grade": "Kept grade",
        "school_year": "twenty26",
        "teachers": [str(world.staff.id)],
        "room_parents": [str(world.parent.id)],
    }
    page = _refused(client.form(url, data))
    _error_beside(page, "school_year")
    for value in ("Kept Class Name", "Kept grade", "twenty26"):
        _kept_text(page, value)
    _kept_choice(page, "teachers", str(world.staff.id))
    _kept_choice(page, "room_parents", str(world.parent.id))


def test_the_staff_directory_entry_keeps_its_title_and_classes(client, world):
    sign_in(client, world.admin.user.email)
    title = "Kept title " * 10
    data = {"member": str(world.staff.id), "title": title, "classes": [str(world.juniper.id)]}
    page = _refused(client.form("/classes/staff", data))
    _error_beside(page, "title")
    _kept_text(page, title)
    _kept_choice(page, "classes", str(world.juniper.id))


def test_a_childs_form_keeps_the_name_and_classes(client, world):
    sign_in(client, world.admin.user.email)
    data = {
        "form_prefix": "new",
        "family_id": str(world.family_id),
        "new-student_id": "",
        "new-first_name": "Keptfirst",
        "new-last_name": "",
        "new-classes": [str(world.juniper.id)],
    }
    page = _refused(client.form(f"/classes/families/{world.family_id}/students", data))
    _error_beside(page, "new-last_name")
    _kept_text(page, "Keptfirst")
    _kept_choice(page, "new-classes", str(world.juniper.id))


@pytest.mark.parametrize("editing", [False, True], ids=["create", "edit"])
def test_the_event_form_keeps_everything(client, world, editing):
    sign_in(client, world.admin.user.email)
    url = f"/calendar/{world.event_id}/edit" if editing else "/calendar/new"
    data = {
        "title": "Kept Event Title",
        "starts_at": "2026-02-10T18:30",
        "ends_at": "2026-02-10T17:05",
        "location": "Kept Hall",
        "description": "Kept description\nwith two lines",
        "class_id": str(world.juniper.id),
    }
    page = _refused(client.form(url, data))
    _error_beside(page, "ends_at")
    for key in ("title", "starts_at", "ends_at", "location", "description"):
        _kept_text(page, data[key])
    _kept_choice(page, "class_id", str(world.juniper.id))


def test_compose_keeps_the_body_language_and_time(client, world):
    sign_in(client, world.admin.user.email)
    data = {
        "subject": "",
        "body": "Kept **body** words\n\n- and a list",
        "language": "es",
        "send_at": "2026-01-20T09:15",
        "submission": "kept-submission-key",
        "action": "send",
    }
    page = _refused(client.form("/messages/new?kind=school", data))
    _error_beside(page, "subject")
    _kept_text(page, "Kept **body** words\n\n- and a list")
    _kept_text(page, "2026-01-20T09:15")
    _kept_choice(page, "language", "es")


def test_the_school_profile_keeps_name_and_language(client, world):
    sign_in(client, world.admin.user.email)
    data = {"name": "Kept School Name", "timezone": "Mars/Kept_Base", "default_language": "ar"}
    page = _refused(client.form("/settings/profile", data))
    _error_beside(page, "timezone")
    _kept_text(page, "Kept School Name")
    _kept_text(page, "Mars/Kept_Base")
    _kept_choice(page, "default_language", "ar")


def test_the_support_grant_keeps_the_hours(client, world):
    sign_in(client, world.admin.user.email)
    page = _refused(client.form("/settings/support/grant", {"hours": "999"}))
    _error_beside(page, "hours")
    assert re.search(r'<input[^>]*id="hours"[^>]*value="999"', page)


# -- the platform's policy editor -------------------------------------------------------------


def _policy_data():
    return {
        "body": "## Kept heading\n\nKept policy words.",
        "summary": "Kept summary of changes",
        "language": "es",
        "material": "y",
    }


def test_the_new_policy_form_keeps_everything(client, world):
    sign_in(client, world.admin.user.email)
    page = _refused(client.form("/platform/policy/new", _policy_data()))
    _error_beside(page, "material")
    _kept_text(page, "## Kept heading\n\nKept policy words.")
    _kept_text(page, "Kept summary of changes")
    _kept_choice(page, "language", "es")
    _kept_ticked(page, "material")


def test_the_policy_edit_form_keeps_everything(client, world):
    sign_in(client, world.admin.user.email)
    draft = client.form("/platform/policy/new", {"body": "First draft", "summary": "Draft"})
    assert draft.status_code == 303
    number = db.session.scalar(select(PolicyVersion.number).order_by(PolicyVersion.number.desc()).limit(1))
    page = _refused(client.form(f"/platform/policy/{number}/edit", _policy_data()))
    _error_beside(page, "material")
    _kept_text(page, "## Kept heading\n\nKept policy words.")
    _kept_text(page, "Kept summary of changes")
    _kept_choice(page, "language", "es")
    _kept_ticked(page, "material")


def test_closing_the_account_keeps_the_tick_when_the_password_is_missing(client, world):
    sign_in(client, world.parent.user.email)
    page = _refused(client.form("/account/close", {"password": "", "confirm": "y"}))
    _error_beside(page, "password")
    _kept_ticked(page, "confirm")


def test_the_joining_rules_keep_the_other_choices(client, world):
    sign_in(client, world.admin.user.email)
    data = {"families_edit_own": "y", "default_visibility": "no-such-choice", "approval_role": "superadmin"}
    page = _refused(client.form("/settings/joining", data))
    _error_beside(page, "default_visibility")
    _kept_ticked(page, "families_edit_own")
    _kept_choice(page, "approval_role", "superadmin")


def test_the_code_check_keeps_each_class_picked_that_the_school_offers(
    client, world, make_school, make_class
):
    """The menus the code check sends back keep a picked class by value; another school's is dropped."""
    elsewhere = make_class(make_school(code="ELM-1"), "Elm")
    query = (
        f"/join/classes?invite_code=oak1234&children-0-class_id={world.juniper.id}"
        f"&children-1-class_id={elsewhere.id}"
    )
    page = client.get(query, headers={"HX-Request": "true"}).get_data(as_text=True)
    _kept_choice(page, "children-0-class_id", str(world.juniper.id))
    assert f'value="{elsewhere.id}"' not in page
    menu = re.search(r'<select[^>]*name="children-1-class_id"[^>]*>(.*?)</select>', page, re.S).group(1)
    assert "selected" not in menu.split("</option>", 1)[1]
