"""The tenant matrix: every route with an id in its path, as every role of one school, with the
ids of another school's rows. The answer is a refusal (403/404, or a redirect to sign in or to
the pending page), never that school's data, and nothing of that school changes.

Routes come from ``url_map``; an ``<int:x_id>`` argument is matched to the table named ``x``
or ending in ``_x`` (``class_id`` -> ``school_class``), so routes added later are covered.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import PlatformRole, User
from app.models.support import SupportGrant
from tests.conftest import _HASH, sign_in
from tests.test_hostile_world import (
    ROLES,
    build_world,
    fill_rule,
    int_arguments,
    interesting_rules,
    may_reach,
    rows_of_school,
    signed_in_client,
    snapshot,
    table_for_argument,
)

REFUSED = {403, 404}
SENT_AWAY = ("/sign-in", "/pending")


def _id_rules(app, method: str):
    return [rule for rule in interesting_rules(app, method) if int_arguments(rule)]


NO_SUCH_ROW = 10**9


def _other_school_ids(world) -> dict[str, int]:
    """One id per table for the other school: the world's rows, then any row of that school that
    other code created (found by its school_id), else an id that exists nowhere."""
    ids = {**world.other.ids, "school": world.other.school.id}
    for table in db.metadata.sorted_tables:
        if table.name in ids or "school_id" not in table.columns:
            continue
        with db.engine.connect() as conn:
            row_id = conn.execute(
                select(table.c.id).where(table.c.school_id == world.other.school.id).limit(1)
            ).scalar()
        ids[table.name] = row_id or NO_SUCH_ROW
    return ids


def _is_school_data(table_name: str | None) -> bool:
    if table_name is None:
        return False
    return table_name == "school" or "school_id" in db.metadata.tables[table_name].columns


def _variants(rule, ids: dict[str, int]) -> tuple[bool, list[str]]:
    """(strict, paths): every argument names school data, so the answer must be a refusal; or
    some argument is not a school's row (a policy version number), so each of the other school's
    ids is tried and only its data must not show."""
    tables = [table_for_argument(name) for name in int_arguments(rule)]
    if all(_is_school_data(table) for table in tables):
        return True, [fill_rule(rule, {t: ids.get(t, NO_SUCH_ROW) for t in tables})]
    return False, sorted({fill_rule(rule, {table: row_id}) for table, row_id in ids.items()})


def _assert_refused(response, role: str, reachable: bool, strict: bool, path: str, markers) -> None:
    body = response.get_data(as_text=True)
    where = (role, response.request.method, path, response.status_code)
    assert response.status_code < 500, where
    for marker in markers:
        assert marker not in body, ("another school's data shown", marker, where)
    if not strict:
        return
    if response.status_code in (302, 303):
        assert response.headers["Location"].startswith(SENT_AWAY), where
        assert not reachable, ("a member who may reach the view was sent away", where)
    else:
        assert response.status_code in REFUSED, where


def _try_every_id_route(app, client, world, role: str, reachable) -> None:
    """GET and POST every id route with the other school's ids; each answer must refuse."""
    other_ids = _other_school_ids(world)
    before = rows_of_school(snapshot(), world.other.school.id)
    checked = 0
    for method in ("GET", "POST"):
        for rule in _id_rules(app, method):
            strict, paths = _variants(rule, other_ids)
            for path in paths:
                if method == "GET":
                    response = client.get(path)
                else:
                    response = client.form(path, {"reason": "hostile", "confirm": "y"})
                _assert_refused(response, role, reachable(rule), strict, path, world.other.markers)
                response.close()
                checked += 1
    assert checked >= 5
    assert rows_of_school(snapshot(), world.other.school.id) == before


@pytest.mark.parametrize("role", ROLES)
def test_other_schools_ids_are_refused_on_every_route(app, make_school, make_member, role):
    """GET and POST every id route with the other school's ids: 403/404 (or sign-in), nothing shown
    or changed."""
    world = build_world(make_school, make_member)
    client = signed_in_client(app, world.mine, role)
    _try_every_id_route(
        app, client, world, role, lambda rule: may_reach(app, rule.endpoint, world.mine, role)
    )


PLATFORM_ACTORS = ("support", "support_in_granted_view", "platform_admin")


def _platform_client(app, world, actor: str):
    """The operator's staff, in no school: support, support inside my school's granted view, admin."""
    role = PlatformRole.ADMIN if actor == "platform_admin" else PlatformRole.SUPPORT
    user = User(email=f"{actor}@operator.example", name="Operator Person", password_hash=_HASH)
    user.platform_role = role
    db.session.add(user)
    db.session.commit()
    client = app.test_client()
    assert sign_in(client, user.email).status_code in (302, 303)
    if actor == "support_in_granted_view":
        now = datetime.now(UTC)
        with tenancy.bound(world.mine.school.id):
            db.session.add(SupportGrant(starts_at=now, expires_at=now + timedelta(hours=2)))
            db.session.commit()
        entered = client.form(f"/platform/schools/{world.mine.school.id}/enter")
        assert entered.status_code == 303, entered.status_code
        # Not vacuous: the granted view opens my school's own class page.
        assert client.get(f"/classes/{world.mine.ids['school_class']}").status_code == 200
    assert client.get("/platform/").status_code == 200  # signed in, on the console
    return client


@pytest.mark.parametrize("actor", PLATFORM_ACTORS)
def test_platform_staff_get_no_other_schools_rows_on_any_route(app, make_school, make_member, actor):
    """The operator's staff sit outside every school: with no grant, or with a grant to a different
    school, the other school's ids are refused everywhere and nothing of it shows or changes."""
    world = build_world(make_school, make_member)
    client = _platform_client(app, world, actor)
    _try_every_id_route(app, client, world, actor, lambda rule: False)


def test_the_matrix_is_not_vacuous_own_ids_open_the_pages(app, make_school, make_member):
    """With my own school's ids the same GET routes answer 200 for a superadmin, so a 404 with the
    other school's ids means the row was refused, not that the path was wrong."""
    world = build_world(make_school, make_member)
    client = signed_in_client(app, world.mine, "superadmin")
    opened = []
    for rule in _id_rules(app, "GET"):
        if not all(table_for_argument(name) in world.mine.ids for name in int_arguments(rule)):
            continue
        response = client.get(fill_rule(rule, world.mine.ids))
        assert response.status_code < 500
        if response.status_code == 200:
            opened.append(rule.rule)
        response.close()
    assert len(opened) >= 1, "no id route opened with the school's own ids"
