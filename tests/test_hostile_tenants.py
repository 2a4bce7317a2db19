"""The tenant matrix: every route with an id or token in its path, as every role of one school,
with the ids of rows that really exist in another school. The answer is a refusal (403/404, or a
redirect to sign in or to the pending page), never that school's data, and nothing of that
school changes.

Routes come from ``url_map``; each argument is mapped to an id kind by
``tests/factories_tenants.py``, which builds one object of every kind in the other school and
fails on a kind it cannot build, so routes added later are covered with ids that exist.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from flask import Blueprint

from app import tenancy
from app.extensions import db
from app.models import PlatformRole, User
from app.models.support import SupportGrant
from app.permissions import public
from tests.conftest import _HASH, sign_in
from tests.factories_tenants import (
    FILLERS,
    KINDS,
    NOT_IDS,
    build_every_kind,
    id_kinds_in,
    kind_of_argument,
    school_of,
)
from tests.hostile_world import (
    ROLES,
    build_world,
    interesting_rules,
    may_reach,
    rows_of_school,
    signed_in_client,
    snapshot,
)

REFUSED = {403, 404}
SENT_AWAY = ("/sign-in", "/pending")
# Links that are their own credential (calendar apps and mail clients send no cookie): whoever
# holds one gets what it opens, so the matrix checks only that nothing of the *requester's* school
# shows and nothing changes; test_a_calendar_feed_shows_its_own_school_only checks the feed's side.
CAPABILITY_LINKS = frozenset(
    {"calendar.feed", "auth.email_link", "auth.reset_link", "unsubscribe.confirm", "unsubscribe.apply"}
)
# Platform views that work across schools on purpose, for the operator's staff only.
CROSS_SCHOOL_BY_DESIGN = {
    "platform.mark_deletion": "support marks any school's deletion request; that school's admin "
    "confirms it, and the console shows no school data (P3)",
    "platform.suppressions.lift": "platform admins lift any address's suppression (addresses only, "
    "no school data shown); the schools of its owner are told in their audit log",
}
# What those views write into a school on purpose, for the operator's staff: (table, action).
WRITTEN_BY_DESIGN = {("audit_entry", "suppression.lifted")}
# Id kinds that name no school's row: tried with a real one, only school data must not show.
EXPECTED_KINDS = 18


def _id_rules(app, method: str):
    return [rule for rule in interesting_rules(app, method) if _kinds_of(rule)]


def _kinds_of(rule) -> dict[str, str]:
    """argument -> id kind, for the arguments of the rule that name a row."""
    kinds = {argument: kind_of_argument(rule, argument) for argument in rule.arguments}
    return {argument: kind for argument, kind in kinds.items() if kind is not None}


def _paths(rule, values: dict[str, list]) -> list[str]:
    """The rule's paths with each id argument set to each row of its kind, the others to a filler."""
    fixed = {a: FILLERS[a] for a in rule.arguments if a in NOT_IDS}
    kinds = _kinds_of(rule)
    paths = []
    for chosen in itertools.product(*(values[kind] for kind in kinds.values())):
        paths.append(rule.build({**fixed, **dict(zip(kinds, chosen, strict=True))})[1])
    return paths


def _is_strict(rule, platform_actor: bool) -> bool:
    """Must the answer be a refusal? Yes when the rule names a school's row, unless the link is its
    own credential or (for the operator's staff) the view is cross-school by design."""
    if rule.endpoint in CAPABILITY_LINKS or (platform_actor and rule.endpoint in CROSS_SCHOOL_BY_DESIGN):
        return False
    return any(KINDS[kind].school_data for kind in _kinds_of(rule).values())


@pytest.fixture
def world(app, make_school, make_member):
    """Two schools, each with one object of every id kind; ``world.other.values``: kind -> value."""
    world = build_world(make_school, make_member)
    for side in (world.mine, world.other):
        side.values = build_every_kind(side)
    return world


def _assert_the_ids_exist(world) -> None:
    """Each value names a row, and a school's row is the other school's: a 404 then means refused."""
    for kind, values in world.other.values.items():
        for value in values:
            school_id = school_of(kind, value)
            if KINDS[kind].school_data:
                assert school_id == world.other.school.id, (kind, value, school_id)


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


def _try_every_id_route(app, client, world, role: str, reachable, *, platform_actor=False) -> int:
    """GET and POST every id route with the other school's ids; each answer must refuse."""
    _assert_the_ids_exist(world)
    before = _rows_of(world.other.school.id, platform_actor)
    checked = 0
    for method in ("GET", "POST"):
        for rule in _id_rules(app, method):
            markers = world.other.markers
            if rule.endpoint in CAPABILITY_LINKS:
                markers = () if platform_actor else world.mine.markers
            strict = _is_strict(rule, platform_actor)
            for path in _paths(rule, world.other.values):
                if method == "GET":
                    response = client.get(path)
                else:
                    response = client.form(path, {"reason": "hostile", "confirm": "y"})
                _assert_refused(response, role, reachable(rule), strict, path, markers)
                response.close()
                checked += 1
    assert _rows_of(world.other.school.id, platform_actor) == before
    return checked


def _rows_of(school_id: int, platform_actor: bool) -> dict[str, list[tuple]]:
    """The school's rows; for the operator's staff, less what a cross-school view writes by design."""
    rows = rows_of_school(snapshot(), school_id)
    if platform_actor:
        columns = [c.name for c in db.metadata.tables["audit_entry"].columns]
        action = columns.index("action")
        by_design = {name for table, name in WRITTEN_BY_DESIGN if table == "audit_entry"}
        rows["audit_entry"] = [row for row in rows["audit_entry"] if row[action] not in by_design]
    return rows


def test_every_id_kind_of_url_map_has_a_factory(app):
    """Each argument of each rule names a kind built in the other school, or is named in NOT_IDS."""
    kinds = id_kinds_in(app)
    assert set(kinds) <= set(KINDS), sorted(set(kinds) - set(KINDS))
    assert len(kinds) == EXPECTED_KINDS, sorted(kinds)
    assert set(KINDS) == set(kinds), "a factory for a kind no route takes"


def test_a_route_with_a_new_kind_of_id_fails_the_check(build_app):
    """The check above is not vacuous: a route taking an id of a kind with no factory is found."""
    extra_app = build_app()
    extra = Blueprint("extra_kind", __name__)

    @extra.route("/badges/<int:badge_id>")
    @public
    def badge(badge_id: int):
        return "a badge"

    @extra.route("/wallets/<secret>")
    @public
    def wallet(secret: str):
        return "a wallet"

    extra_app.register_blueprint(extra)
    with extra_app.app_context():
        unknown = set(id_kinds_in(extra_app)) - set(KINDS)
    assert unknown == {"unknown int badge_id", "unknown extra_kind.wallet:secret"}


def test_the_other_schools_objects_exist_in_that_school(world):
    """The ids the matrix tries are real rows of the other school (not of mine, not of nobody)."""
    _assert_the_ids_exist(world)
    for kind in world.other.values:
        if KINDS[kind].school_data:
            assert {school_of(kind, v) for v in world.mine.values[kind]} == {world.mine.school.id}, kind


@pytest.mark.parametrize("role", ROLES)
def test_other_schools_ids_are_refused_on_every_route(app, world, role):
    """GET and POST every id route with the other school's ids: 403/404 (or sign-in), nothing shown
    or changed."""
    client = signed_in_client(app, world.mine, role)
    checked = _try_every_id_route(
        app, client, world, role, lambda rule: may_reach(app, rule.endpoint, world.mine, role)
    )
    rules = _id_rules(app, "GET") + _id_rules(app, "POST")
    assert checked == sum(len(_paths(rule, world.other.values)) for rule in rules)


def test_a_calendar_feed_shows_its_own_school_only(app, world):
    """The public feed (no cookie) opens its owner's school, bound to it: each school's secret
    address lists that school's event and nothing of the other school."""
    client = app.test_client()
    for side, other in ((world.mine, world.other), (world.other, world.mine)):
        [token] = side.values["calendar feed token"]
        response = client.get(f"/calendar/feed/{token}.ics")
        body = response.get_data(as_text=True)
        assert response.status_code == 200, side.markers
        assert f"{side.markers[0]} picnic" in body
        for marker in other.markers:
            assert marker not in body, (side.markers, marker)


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
def test_platform_staff_get_no_other_schools_rows_on_any_route(app, world, actor):
    """The operator's staff sit outside every school: with no grant, or with a grant to a different
    school, the other school's ids are refused everywhere and nothing of it shows or changes."""
    client = _platform_client(app, world, actor)
    assert _try_every_id_route(app, client, world, actor, lambda rule: False, platform_actor=True) >= 5


# GET routes that a superadmin of the school does not open with its own ids, and why.
NOT_OPENED_BY_OWN_IDS = {
    "dev.mail": "the development mailbox is off outside development",
    "dev.mail_html": "the development mailbox is off outside development",
    "auth.email_link": "keeps the token in the session and redirects to the confirmation form",
    "auth.reset_link": "keeps the token in the session and redirects to the reset form",
    "platform.policy.edit_version": "policy authoring is the operator's: a school's superadmin is refused",
}


def test_the_matrix_is_not_vacuous_own_ids_open_the_pages(app, world):
    """With my own school's ids every GET id route answers 200 for a superadmin (the named few
    aside), so a 404 with the other school's ids means the row was refused, not that the path was
    wrong."""
    client = signed_in_client(app, world.mine, "superadmin")
    opened, closed = [], []
    for rule in _id_rules(app, "GET"):
        statuses = []
        for path in _paths(rule, world.mine.values):
            response = client.get(path)
            assert response.status_code < 500
            statuses.append(response.status_code)
            response.close()
        (opened if 200 in statuses else closed).append(rule.endpoint)
    assert sorted(closed) == sorted(NOT_OPENED_BY_OWN_IDS), closed
    assert len(opened) >= 10, opened
