"""Input beyond any reason, found by an outside attack run: an id no column can hold answers 404
on every route, and a JSON body nested 100,000 deep answers 400 on every route; never a 500.

On PostgreSQL every id column is an INTEGER and ``WHERE id = 2147483648`` is "integer out of
range"; SQLite fails only past 2**63. Both run this file (TEST_DATABASE_URL).
"""

from __future__ import annotations

import logging

import pytest
from flask import url_for
from werkzeug.routing import IntegerConverter

from app.models import Role
from app.parsing import LARGEST_ID, optional_id
from app.permissions import Access
from app.security import MAX_JSON_DEPTH, json_nesting_exceeds
from app.urls import RowIdConverter
from tests.conftest import PASSWORD, sign_in
from tests.factories_tenants import FILLERS, kind_of_argument
from tests.hostile_world import declared_access
from tests.test_csrf_walk import walkers  # noqa: F401 - the fixture: a school full of rows, signed in

# 2**31: one past PostgreSQL's integer; 2**63: past SQLite's; 30 digits; 5,000 digits (past the
# length int() reads at all).
OUT_OF_RANGE = (str(2**31), str(2**63), "9" * 30, "9" * 5000)
SENDABLE = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEEP = b"[" * 100_000


def _int_arguments(rule) -> list[str]:
    return [name for name, converter in rule._converters.items() if isinstance(converter, IntegerConverter)]


def _path_with(rule, values: dict[str, list], argument: str, raw: str) -> str:
    """The rule's path with the school's own rows, except ``argument``, which is ``raw`` as typed."""
    marker = 7_654_321  # an id no row has, replaced by the raw text after building
    arguments = {}
    for name in rule.arguments:
        kind = kind_of_argument(rule, name)
        arguments[name] = FILLERS[name] if kind is None else values[kind][-1]
    arguments[argument] = marker
    path = rule.build(arguments)[1]
    assert path.count(str(marker)) == 1, path
    return path.replace(str(marker), raw)


def test_every_int_route_is_bounded_and_url_for_is_unchanged(app):
    rules = [rule for rule in app.url_map.iter_rules() if "<int:" in rule.rule]
    assert len(rules) >= 25, len(rules)
    converters = {type(rule._converters[name]) for rule in rules for name in _int_arguments(rule)}
    assert converters == {RowIdConverter}  # every <int:> is the bounded one
    with app.test_request_context():
        assert url_for("classes.show", class_id=42) == "/classes/42"
        assert url_for("consent.show_version", number=LARGEST_ID) == f"/privacy/versions/{LARGEST_ID}"


def test_every_route_answers_404_for_an_id_no_column_can_hold(app, walkers):  # noqa: F811
    """Each <int:> of each rule, given 2**31, 2**63, 30 and 5,000 digits by a person who may use
    the route (token sent): 404. The largest id a column holds reaches the database and finds
    nothing. The same path with the school's real row is not refused."""
    member, platform, values = walkers
    tokens = {id(member): member.csrf_token(), id(platform): platform.csrf_token()}
    walked = 0
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        for argument in _int_arguments(rule):
            access, _ = declared_access(app, rule.endpoint)
            client = platform if access is Access.PLATFORM else member
            headers = {"X-CSRFToken": tokens[id(client)]}
            for method in sorted(rule.methods & set(SENDABLE)):
                for raw in OUT_OF_RANGE:
                    path = _path_with(rule, values, argument, raw)
                    response = client.open(path, method=method, headers=headers)
                    assert response.status_code == 404, (method, rule.rule, path[:80], response.status_code)
                    response.close()
                # The largest value a column holds reaches the database and finds nothing there
                # (the platform's "enter a school" says 403: no grant for it).
                path = _path_with(rule, values, argument, str(LARGEST_ID))
                largest = client.open(path, method=method, headers=headers)
                assert largest.status_code in (403, 404), (method, rule.rule, largest.status_code)
                walked += 1
    assert walked >= 30, walked
    # Not vacuous: the rule still matches an id in range (the class page of the school's class).
    real = _path_with(app.url_map._rules_by_endpoint["classes.show"][0], values, "class_id", "")
    assert member.get(real + str(values["school_class"][-1])).status_code == 200


def test_an_id_beyond_the_column_in_a_query_string_is_no_id(client, make_school, make_member):
    """Ids typed into forms and query strings share the bound (app.parsing.optional_id)."""
    assert optional_id(str(LARGEST_ID)) == LARGEST_ID
    assert optional_id(str(2**31)) is None and optional_id(2**31) is None
    admin = make_member(make_school(), role=Role.ADMIN)
    sign_in(client, admin.user.email)
    for raw in (*OUT_OF_RANGE, str(LARGEST_ID)):
        response = client.get(f"/messages/new?copy={raw}")  # "start from a copy of message <id>"
        assert response.status_code == 200, raw


# --- JSON nested beyond reason ---------------------------------------------------------------


def test_the_nesting_scan_counts_brackets_as_the_parser_would():
    assert not json_nesting_exceeds(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_nesting_exceeds(b"[" * (MAX_JSON_DEPTH + 1))
    assert not json_nesting_exceeds(b"[]" * 10_000)  # many brackets, none deep
    assert not json_nesting_exceeds(b'{"subject": "' + b"[" * 1000 + b'"}')  # inside a string
    assert json_nesting_exceeds(b'["\\"' + b"[" * 100 + b'"' + b"[" * 100)  # an escaped quote
    assert not json_nesting_exceeds(b'["\\\\"' + b"]")  # an escaped backslash ends no string early
    assert json_nesting_exceeds(("[" * 100).encode("utf-16"))  # the parser reads UTF-16 too
    assert json_nesting_exceeds(("[" * 100).encode("utf-32-le"))
    assert not json_nesting_exceeds(b'"' + b'\\"' * 100_000)  # unterminated: no quadratic rescans
    assert not json_nesting_exceeds(b"\xff\xfe\xfd")  # not text: the parser refuses it itself


@pytest.fixture
def decoded(app, monkeypatch) -> list[int]:
    """The length of every body the app's JSON parser is asked to decode."""
    seen: list[int] = []
    real = app.json.loads

    def loads(s, **kwargs):
        seen.append(len(s))
        return real(s, **kwargs)

    monkeypatch.setattr(app.json, "loads", loads)
    return seen


def test_every_route_refuses_a_deeply_nested_json_body_with_400(app, client, decoded, caplog):
    """Every method of every rule, sent 100,000 "[" as application/json: 400, with a valid CSRF
    token (refused by the nesting check) and without (state changes: refused by the CSRF check
    first, as any tokenless form is; the rest by the nesting check). The parser never sees it."""
    token = client.csrf_token()
    walked = 0
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        ints = _int_arguments(rule)
        arguments = {name: FILLERS.get(name, 1 if name in ints else "t" * 43) for name in rule.arguments}
        path = rule.build(arguments)[1]
        for method in sorted(rule.methods & set(SENDABLE)):
            for headers in ({"X-CSRFToken": token}, {}):
                with caplog.at_level(logging.ERROR):
                    response = client.open(
                        path, method=method, data=DEEP, content_type="application/json", headers=headers
                    )
                where = (method, rule.rule, bool(headers), response.status_code)
                assert response.status_code == 400, where
                if headers:
                    assert "That form expired" not in response.get_data(as_text=True), where
                response.close()
            walked += 1
    assert walked >= 90, walked
    assert [n for n in decoded if n >= len(DEEP)] == []  # never handed to the parser: no RecursionError
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_json_within_the_bound_is_still_read(client, make_school, make_member, decoded):
    """Flask-WTF reads a JSON body as the form: signing in with one nested MAX_JSON_DEPTH deep
    works; one level deeper is refused by the nesting check (not by CSRF, not by the form)."""
    member = make_member(make_school())
    body = client.application.json.dumps({"email": member.user.email, "password": PASSWORD})
    # Inside the body's own object: MAX_JSON_DEPTH levels in all, then one more.
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    too_deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    headers = {"X-CSRFToken": client.csrf_token()}

    deep = body.replace("{", '{"pad": ' + too_deep + ", ", 1)
    refused = client.post("/sign-in", data=deep, content_type="application/json", headers=headers)
    assert refused.status_code == 400
    assert "Something in that request was not right" in refused.get_data(as_text=True)
    assert decoded == []

    fine = body.replace("{", '{"pad": ' + nested + ", ", 1)
    signed_in = client.post("/sign-in", data=fine, content_type="application/json", headers=headers)
    assert signed_in.status_code == 303 and decoded == [len(fine)]
    assert client.get("/account").status_code == 200
