"""People edit their own name on the account page."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import Family, Membership, User
from tests.conftest import sign_in


@pytest.fixture
def signed_in_parent(client, make_school, make_member, make_family):
    school = make_school()
    member = make_member(school, email="rena@example.org", name="Rena Oldname")
    family = make_family(school, [member], name="Oldname")
    assert sign_in(client, "rena@example.org").status_code == 303
    return school, member, family


def test_a_person_changes_their_own_name(client, signed_in_parent):
    school, member, family = signed_in_parent
    page = client.get("/account").get_data(as_text=True)
    assert 'value="Rena Oldname"' in page  # the form starts from the current name
    response = client.form("/account/name", {"nm-name": "  Rena   Newname "})
    assert response.status_code == 303
    db.session.expire_all()
    assert db.session.get(User, member.user_id).name == "Rena Newname"  # spaces tidied
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Name saved." in page and "Rena Newname" in page
    # The kept search texts follow (the suite also checks nothing is stale after each test).
    with tenancy.bound(school.id):
        kept = db.session.scalar(select(Membership.search_text).where(Membership.id == member.id))
        family_text = db.session.scalar(select(Family.search_text).where(Family.id == family.id))
    assert "rena newname" in kept and "rena newname" in family_text


@pytest.mark.parametrize(
    ("typed", "error"),
    [("   ", "Enter your name."), ("N" * 121, "Use at most 120 characters.")],
)
def test_a_refused_name_comes_back_with_its_error_and_the_typed_value(client, signed_in_parent, typed, error):
    _school, member, _family = signed_in_parent
    response = client.form("/account/name", {"nm-name": typed})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and error in page
    if typed.strip():
        assert f'value="{typed}"' in page
    db.session.expire_all()
    assert db.session.get(User, member.user_id).name == "Rena Oldname"


def test_htmx_gets_the_name_form_only(client, signed_in_parent):
    response = client.htmx("/account/name", {"nm-name": "N" * 121}, target="name-section")
    body = response.get_data(as_text=True)
    assert response.status_code == 400 and body.lstrip().startswith("<form")
    assert "Use at most 120 characters." in body and f'value="{"N" * 121}"' in body
    saved = client.htmx("/account/name", {"nm-name": "Rena Newname"}, target="name-section")
    assert saved.status_code == 204 and saved.headers["HX-Redirect"].endswith("/account")


def test_signed_out_nobody_changes_a_name(client, make_school, make_member):
    member = make_member(make_school(), name="Kept Name")
    response = client.form("/account/name", {"nm-name": "Someone Else"})
    assert response.status_code == 302 and "/sign-in" in response.headers["Location"]
    db.session.expire_all()
    assert db.session.get(User, member.user_id).name == "Kept Name"
