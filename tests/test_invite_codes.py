"""Invitation codes are typed by hand: case, spaces, hyphens and other dashes never refuse one."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app import tenancy
from app.codes import code_key
from app.extensions import db
from app.models import Enrollment, Membership, School, Student
from app.settings import school as school_settings
from tests.conftest import make_config, sign_in

PASSWORD = "plum orchard lantern"

TYPED = [
    "MAPLE-2026",
    "maple-2026",
    "maple2026",
    " Maple 2026 ",
    "MAPLE\u20132026",  # en dash, as autocorrect types it
    "maple\u2011 2026",  # a non-breaking hyphen and a space
    "MAPLE\u22122026",  # a minus sign
    "m a p l e\u00a02026",  # non-breaking space
    "\uff4d\uff41\uff50\uff4c\uff45\uff12\uff10\uff12\uff16",  # full-width letters and digits
]


@pytest.mark.parametrize("typed", TYPED)
def test_every_way_of_typing_a_code_has_the_same_key(typed):
    assert code_key(typed) == "MAPLE2026"


def test_a_different_code_keeps_a_different_key():
    assert code_key("MAPLE-2027") != code_key("MAPLE-2026")
    assert code_key("") == "" and code_key(None) == "" and code_key(" - ") == ""


def _join_data(code, **extra):
    return {
        "invite_code": code,
        "name": "Nadia Newparent",
        "email": "nadia@example.org",
        "password": PASSWORD,
        "accept_policy": "y",
    } | extra


@pytest.mark.parametrize("typed", ["maple2026", "  maple 2026", "Maple\u20142026"])
def test_joining_accepts_the_code_however_it_is_typed(client, make_school, typed):
    school = make_school(code="MAPLE-2026")
    response = client.form("/join", _join_data(typed))
    assert response.status_code == 303
    with tenancy.bound(school.id):
        assert db.session.scalar(select(Membership)) is not None


def test_an_unknown_code_is_still_refused_and_kept_as_typed(client, make_school):
    make_school(code="MAPLE-2026")
    response = client.form("/join", _join_data("maple 2027"))
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "We don&#39;t recognise this code." in page and 'value="maple 2027"' in page


def test_the_class_menus_come_for_a_code_typed_without_its_hyphen(client, make_school, make_class):
    school = make_school(code="MAPLE-2026")
    hazel = make_class(school, "Hazel")
    partial = client.get("/join/classes?invite_code=maple2026", headers={"HX-Request": "true"})
    assert f'value="{hazel.id}"' in partial.get_data(as_text=True)


def test_joining_another_school_accepts_the_code_without_its_hyphen(client, make_school, make_member):
    home = make_school(code="OAK-1")
    other = make_school(code="MAPLE-2026")
    member = make_member(home)
    sign_in(client, member.user.email)
    response = client.form("/schools/join", {"js-invite_code": "maple 2026"})
    assert response.status_code == 303
    with tenancy.bound(other.id):
        assert db.session.scalar(select(Membership).where(Membership.user_id == member.user_id))


def test_a_new_or_switched_off_code_moves_its_key_along(app, make_school):
    school = make_school(code="MAPLE-2026")
    assert school.invite_code_key == "MAPLE2026"
    with tenancy.bound(school.id):
        fresh = school_settings.rotate_invite_code(school)
        assert school.invite_code_key == code_key(fresh) and "-" not in school.invite_code_key
        school_settings.switch_off_invite_code(school)
        db.session.commit()
    assert school.invite_code_key is None
    assert db.session.scalar(select(School).where(School.invite_code_key == "MAPLE2026")) is None


def test_a_child_without_a_class_joins_and_the_approvers_see_them_unplaced(
    client, make_school, make_member, make_class
):
    """Without JavaScript the menus are empty until the code is known: the class may wait."""
    from app.models import Role

    school = make_school(code="MAPLE-2026")
    make_class(school, "Hazel")
    staff = make_member(school, role=Role.STAFF)
    data = _join_data("maple2026") | {"children-0-first_name": "Mia", "children-0-last_name": "Newparent"}
    assert client.form("/join", data).status_code == 303
    with tenancy.bound(school.id):
        assert [s.first_name for s in db.session.scalars(select(Student))] == ["Mia"]
        assert db.session.scalars(select(Enrollment)).all() == []
    approver = client.application.test_client()
    sign_in(approver, staff.user.email)
    assert "Mia Newparent (no class chosen)" in approver.get("/members/pending").get_data(as_text=True)


def test_the_migration_gives_existing_codes_their_keys(build_app, tmp_path):
    from flask_migrate import upgrade as upgrade_to
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'codes.db'}"
    app = build_app(make_config(url))
    with app.app_context():
        upgrade_to(revision="9a4e2c6b8d10")
        with db.engine.begin() as conn:
            for n, code in enumerate(["MAPLE-2026", "k7qm-2xpd", None], start=1):
                conn.execute(
                    text(
                        "INSERT INTO school (id, name, slug, invite_code, timezone, created_at) "
                        "VALUES (:id, 'S', :slug, :code, 'UTC', '2020-01-01 00:00:00')"
                    ),
                    {"id": n, "slug": f"s{n}", "code": code},
                )
        upgrade_to(revision="3f8b1d2c7e54")
        with db.engine.connect() as conn:
            keys = conn.execute(text("SELECT id, invite_code_key FROM school ORDER BY id")).all()
        db.engine.dispose()
    assert keys == [(1, "MAPLE2026"), (2, "K7QM2XPD"), (3, None)]
