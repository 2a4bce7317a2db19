"""P12: CSRF on every state change. Every POST/PUT/PATCH/DELETE rule of ``url_map``, sent without a
token by someone who may reach it, answers 400 with the 'form expired' page and changes no row;
the only exemptions are those listed in ``app.security.CSRF_EXEMPT``, and Flask-WTF exempts
exactly those.
"""

from __future__ import annotations

import pytest
from flask import Blueprint

from app.extensions import csrf, db
from app.models import PlatformRole, User
from app.permissions import Access, public
from app.security import CSRF_EXEMPT, exempt_listed_views
from tests.conftest import _HASH, sign_in
from tests.factories_tenants import FILLERS, build_every_kind, kind_of_argument
from tests.hostile_world import ALWAYS_WRITTEN, build_side, declared_access, snapshot

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A form a person could have filled in, minus the token: the route would act on it if it had one.
FILLED_IN = {
    "confirm": "y",
    "name": "Walk Name",
    "email": "walker@example.org",
    "password": "correct horse battery",
    "reason": "walk",
    "mode": "off",
    "scope": "all",
    "List-Unsubscribe": "One-Click",
}


def state_changing_rules(app) -> list[tuple[str, object]]:
    """(method, rule) for every state-changing method of every rule (static files answer GET only)."""
    return sorted(
        ((method, rule) for rule in app.url_map.iter_rules() for method in rule.methods & STATE_CHANGING),
        key=lambda pair: (pair[1].rule, pair[0]),
    )


def exempt_endpoints(app) -> set[str]:
    """The endpoints Flask-WTF lets through without a token (its exempt views and blueprints)."""
    found = set()
    for endpoint, view in app.view_functions.items():
        if f"{view.__module__}.{view.__name__}" in csrf._exempt_views:
            found.add(endpoint)
        blueprint = endpoint.rpartition(".")[0]
        if blueprint and any(bp.name == blueprint for bp in csrf._exempt_blueprints):
            found.add(endpoint)
    return found


def _path(rule, values: dict[str, list]) -> str:
    """The rule's path with the school's own rows (the request would act on them with a token)."""
    arguments = {}
    for argument in rule.arguments:
        kind = kind_of_argument(rule, argument)
        arguments[argument] = FILLERS[argument] if kind is None else values[kind][-1]
    return rule.build(arguments)[1]


@pytest.fixture
def walkers(app, make_school, make_member):
    """A superadmin of a school full of rows of every kind, and a platform admin; each signed in."""
    side = build_side(make_school, make_member, "Walk")
    values = build_every_kind(side)
    member = app.test_client()
    assert sign_in(member, side.actors["superadmin"].user.email).status_code in (302, 303)
    operator = User(email="operator@walk.example", name="Operator Walker", password_hash=_HASH)
    operator.platform_role = PlatformRole.ADMIN
    db.session.add(operator)
    db.session.commit()
    platform = app.test_client()
    assert sign_in(platform, operator.email).status_code in (302, 303)
    return member, platform, values


def test_every_state_change_without_a_token_is_refused_and_changes_nothing(app, walkers):
    """Walk url_map: each POST/PUT/PATCH/DELETE without a token, plain and as htmx, is a 400 with
    the 'form expired' page, and no table (sessions aside) gains, loses or changes a row."""
    member, platform, values = walkers
    walked = []
    for method, rule in state_changing_rules(app):
        if rule.endpoint in CSRF_EXEMPT:
            continue
        access, _ = declared_access(app, rule.endpoint)
        client = platform if access is Access.PLATFORM else member
        path = _path(rule, values)
        for headers in ({}, {"HX-Request": "true", "HX-Target": "main"}):
            before = snapshot(ALWAYS_WRITTEN)
            response = client.open(path, method=method, data=FILLED_IN, headers=headers)
            where = (method, rule.rule, path, headers, response.status_code)
            assert response.status_code == 400, where
            assert "That form expired" in response.get_data(as_text=True), where
            response.close()
            assert snapshot(ALWAYS_WRITTEN) == before, where
        walked.append((method, rule.rule))
    assert len(walked) == len(state_changing_rules(app)) - len(CSRF_EXEMPT)
    assert len(walked) >= 50, len(walked)  # 59 when written


def test_the_exemptions_are_the_listed_ones_and_each_changes_state(app):
    """Flask-WTF exempts exactly the views of CSRF_EXEMPT, and each of them takes a state change
    (a listed GET-only view would be an exemption with nothing to protect)."""
    assert exempt_endpoints(app) == set(CSRF_EXEMPT)
    changing = {rule.endpoint for _, rule in state_changing_rules(app)}
    assert set(CSRF_EXEMPT) <= changing
    assert all(reason.strip() for reason in CSRF_EXEMPT.values())


def test_an_exemption_made_outside_the_list_is_caught(build_app):
    """The check is not vacuous: a view exempted with ``csrf.exempt`` directly shows up."""
    extra_app = build_app()
    extra = Blueprint("extra_csrf", __name__)

    @extra.route("/sneaky", methods=["POST"])
    @public
    @csrf.exempt
    def sneaky():
        return "changed"

    extra_app.register_blueprint(extra)
    try:
        assert exempt_endpoints(extra_app) - set(CSRF_EXEMPT) == {"extra_csrf.sneaky"}
        exempt_listed_views(extra_app)  # applying the list again adds nothing else
        assert exempt_endpoints(extra_app) - set(CSRF_EXEMPT) == {"extra_csrf.sneaky"}
    finally:
        csrf._exempt_views.discard(f"{sneaky.__module__}.{sneaky.__name__}")
