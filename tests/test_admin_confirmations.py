"""Impactful admin actions ask first: a new invitation code, switching joining off, deactivating
someone. The button is a link to a confirmation page (a GET that changes nothing); the POST acts
only with ``confirmed=yes``; with JS the same form sits in a <dialog> that app.js opens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import Membership, MembershipStatus, Role, School
from app.models.audit import AuditEntry
from tests.conftest import sign_in


def _school(school_id: int) -> School:
    db.session.expire_all()
    return db.session.get(School, school_id)


def _status(membership_id: int, school_id: int) -> MembershipStatus:
    db.session.expire_all()
    with tenancy.bound(school_id):
        return db.session.scalar(select(Membership.status).where(Membership.id == membership_id))


def _actions(school_id: int) -> list[str]:
    db.session.expire_all()
    with tenancy.bound(school_id):
        actions = db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id))
        return [action for action in actions if action != "auth.signed_in"]


@pytest.fixture
def admin_world(client, make_school, make_member):
    school = make_school(code="OLD-CODE")
    admin = make_member(school, role=Role.ADMIN)
    parent = make_member(school, role=Role.PARENT, name="Pat Parent")
    sign_in(client, admin.user.email)
    return school, admin, parent


def _unchanged(school, parent) -> bool:
    kept = _school(school.id)
    return kept.invite_code == "OLD-CODE" and _status(parent.id, school.id) is MembershipStatus.APPROVED


def _paths(school, parent) -> dict[str, str]:
    return {
        "rotate": "/settings/invite-code/rotate",
        "off": "/settings/invite-code/off",
        "deactivate": f"/settings/people/{parent.id}/deactivate",
    }


@pytest.mark.parametrize("action", ["rotate", "off", "deactivate"])
def test_the_confirmation_page_says_what_will_happen_and_changes_nothing(client, admin_world, action):
    school, _admin, parent = admin_world
    path = _paths(school, parent)[action]
    response = client.get(path)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    words = {
        "rotate": "The code OLD-CODE stops working at once.",
        "off": "nobody can ask to join until you make a new one",
        "deactivate": "Pat Parent loses access to this school on their next click",
    }[action]
    assert words in page
    # The page posts back to the action itself.
    form = re.search(rf'<form method="post" action="{re.escape(path)}"[^>]*>(.*?)</form>', page, re.DOTALL)
    assert form, "the confirmation form posts to the action"
    assert '<input type="hidden" name="confirmed" value="yes">' in form.group(1)
    assert _unchanged(school, parent)
    assert not _actions(school.id)


@pytest.mark.parametrize("action", ["rotate", "off", "deactivate"])
def test_a_post_without_the_confirmation_changes_nothing(client, admin_world, action):
    school, _admin, parent = admin_world
    path = _paths(school, parent)[action]
    response = client.form(path)
    assert response.status_code == 200
    assert 'name="confirmed" value="yes"' in response.get_data(as_text=True)  # it asks instead
    assert _unchanged(school, parent)
    htmx = client.htmx(path, target="section-invite")
    assert htmx.headers["HX-Redirect"] == path  # htmx is sent to the page that asks
    assert _unchanged(school, parent)
    assert client.form(path, {"confirmed": "no"}).status_code == 200
    assert _unchanged(school, parent)
    assert not _actions(school.id)


def test_confirming_does_it(client, admin_world):
    school, _admin, parent = admin_world
    paths = _paths(school, parent)
    assert client.form(paths["rotate"], {"confirmed": "yes"}).status_code == 303
    new_code = _school(school.id).invite_code
    assert new_code and new_code != "OLD-CODE"
    response = client.htmx(paths["off"], {"confirmed": "yes"}, target="section-invite")
    assert response.status_code == 200 and "switched off" in response.get_data(as_text=True)
    assert _school(school.id).invite_code is None
    assert client.form(paths["deactivate"], {"confirmed": "yes"}).status_code == 303
    assert _status(parent.id, school.id) is MembershipStatus.DEACTIVATED
    assert _actions(school.id)[-3:] == [
        "invite_code.rotated",
        "invite_code.switched_off",
        "member.deactivated",
    ]


def test_a_confirmation_without_its_csrf_token_is_refused(client, admin_world):
    school, _admin, parent = admin_world
    response = client.post("/settings/invite-code/off", data={"confirmed": "yes"})
    assert response.status_code == 400
    assert _unchanged(school, parent)


def test_who_may_not_act_is_not_even_asked(client, make_school, make_member):
    school = make_school(code="OLD-CODE")
    staff = make_member(school, role=Role.STAFF)
    parent = make_member(school, role=Role.PARENT)
    sign_in(client, staff.user.email)
    for path in _paths(school, parent).values():
        assert client.get(path).status_code == 403, path
        assert client.form(path, {"confirmed": "yes"}).status_code == 403, path
    assert _unchanged(school, parent)


def test_the_buttons_link_to_the_page_and_hold_the_same_form_in_a_dialog(client, admin_world):
    school, _admin, parent = admin_world
    pages = {
        "/settings/": ["rotate", "off"],
        f"/settings/people/{parent.id}": ["deactivate"],
    }
    for page_path, actions in pages.items():
        page = client.get(page_path).get_data(as_text=True)
        for action in actions:
            path = _paths(school, parent)[action]
            link = re.search(
                rf'<a class="button[^"]*" href="{re.escape(path)}" data-confirm="([^"]+)">', page
            )
            assert link, (page_path, action)
            dialog = re.search(rf'<dialog id="{link.group(1)}"[^>]*>(.*?)</dialog>', page, re.DOTALL)
            assert dialog, action
            assert re.search(
                rf'<form method="post" action="{re.escape(path)}" data-hx-post="{re.escape(path)}"', dialog[1]
            )
            assert '<input type="hidden" name="confirmed" value="yes">' in dialog[1]
            assert '<form method="dialog">' in dialog[1]  # Cancel closes it, no script needed
            # No form on the page posts to the action without the confirmation.
            for form in re.finditer(
                rf'<form method="post" action="{re.escape(path)}"[^>]*>(.*?)</form>', page, re.DOTALL
            ):
                assert 'name="confirmed" value="yes"' in form[1]


def test_the_dialog_behaviour_is_in_the_csp_safe_script():
    script = (Path(__file__).parent.parent / "app" / "static" / "js" / "app.js").read_text()
    assert 'closest("a[data-confirm]")' in script and "showModal()" in script
