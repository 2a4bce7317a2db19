"""Hostile input to every form and htmx control, as every role (hypothesis, bounded and repeatable).

The forms come from the pages themselves: each role GETs every route of ``url_map`` and the
forms and htmx controls it is shown are collected, with the field names the page gives them;
POST routes no page offered are added with every field name seen anywhere. Then hypothesis
sends random, oversized (100 KB), mis-encoded, NUL-containing and malicious values, as a plain
form, as htmx, as raw bytes and as multipart. After every request:

- never a 500 (TESTING propagates exceptions, so a crash fails here with its traceback);
- no script or markup we sent comes back unescaped, and no template expression is evaluated;
- no row of the other school (or of its members' accounts) changed;
- a request the view's declared access refuses changed no table at all.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from io import BytesIO
from urllib.parse import parse_qsl, quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.test import encode_multipart

from app.extensions import db
from app.security import refuse_nul_characters
from tests.hostile_world import (
    BIG,
    MALICIOUS,
    REFLECTION_CHECKS,
    ROLES,
    TEMPLATE,
    TEMPLATE_RESULT,
    FormTarget,
    WriteRecorder,
    build_world,
    crawl_forms,
    fill_rule,
    int_arguments,
    interesting_rules,
    may_reach,
    overreaching,
    permissions_of,
    rows_of_school,
    signed_in_client,
    snapshot,
)

EXAMPLES_PER_TARGET = 5
HOSTILE_SETTINGS = settings(
    max_examples=EXAMPLES_PER_TARGET,
    deadline=None,  # one request may hash a password (scrypt, slow on purpose)
    derandomize=True,  # CI runs the same examples every time
    database=None,
    suppress_health_check=list(HealthCheck),
)
PATH_SLOT = "\x01"  # stands for a string argument of a route (a token, a category) in a path
EXECUTABLE = b"MZ\x90\x00" + b"\xff" * 512  # not a spreadsheet, not an image, not UTF-8
NEVER_FUZZED = {"auth.sign_out"}  # it would end the role under test


def hostile_text() -> st.SearchStrategy[str]:
    """A value a hostile client might send in one field."""
    return st.one_of(
        st.sampled_from(MALICIOUS),
        st.just(BIG),
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12).map(lambda s: s + "\x00"),
        st.integers(min_value=-(2**63), max_value=2**64).map(str),
        st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.example", fullmatch=True),
    )


HOSTILE = hostile_text()  # built once: building strategies costs more than drawing from them


def _value_for(draw, name: str, page_value: str, good: dict[str, str]) -> str:
    """Mostly hostile, sometimes what the page had or a valid value, so deeper code runs too."""
    kind = draw(st.integers(min_value=0, max_value=5))
    if kind == 4:
        return page_value
    if kind == 5 and name in good:
        return good[name]
    return draw(HOSTILE)


def _targets_for(client, app, world, role: str) -> list[FormTarget]:
    """The forms this role is shown, plus every POST route no page offered it."""
    mine_ids = world.mine.ids
    paths = [fill_rule(rule, mine_ids) for rule in interesting_rules(app, "GET") if not rule.arguments]
    paths += [fill_rule(rule, mine_ids) for rule in interesting_rules(app, "GET") if rule.arguments]
    found = [t for t in crawl_forms(client, paths) if t.path.split("?")[0] != "/sign-out"]
    every_field = _commonest_fields(found)
    adapter = app.url_map.bind("localhost")
    offered = set()
    for target in found:
        with contextlib.suppress(HTTPException):  # a control pointing nowhere is still posted
            endpoint, _ = adapter.match(target.path.split("?")[0], method=target.method)
            offered.add((endpoint, target.method))
    for rule in interesting_rules(app, "POST"):
        if rule.endpoint in NEVER_FUZZED or (rule.endpoint, "POST") in offered:
            continue
        path = fill_rule(rule, mine_ids, strings=PATH_SLOT)
        found.append(FormTarget("POST", path, dict.fromkeys(every_field, "")))
    # Routes with a string argument (tokens, categories) get hostile path segments too.
    for rule in interesting_rules(app, "GET"):
        if set(rule.arguments) - set(int_arguments(rule)):
            found.append(FormTarget("GET", fill_rule(rule, mine_ids, strings=PATH_SLOT), {"q": ""}))
    return _one_per_endpoint(adapter, found)


def _commonest_fields(found: list[FormTarget], limit: int = 12) -> list[str]:
    """The field names pages use most, for POST routes that no page offered."""
    counts = Counter(name for target in found for name in target.fields if name != "csrf_token")
    return [name for name, _ in counts.most_common(limit)]


def _one_per_endpoint(adapter, targets: list[FormTarget]) -> list[FormTarget]:
    """A page listing fifty people has fifty approve forms: one of each kind is enough."""
    kept: dict[tuple, FormTarget] = {}
    for target in targets:
        endpoint = _endpoint_of(adapter, target) or target.path
        kept.setdefault((endpoint, target.method, tuple(sorted(target.fields))), target)
    return list(kept.values())


def _endpoint_of(adapter, target: FormTarget) -> str | None:
    """The endpoint a target's path routes to, or None when routing refuses it (404/405)."""
    try:
        endpoint, _ = adapter.match(target.path.split("?")[0].replace(PATH_SLOT, "x"), method=target.method)
    except HTTPException:
        return None
    return endpoint


def _good_values(world) -> dict[str, str]:
    mine = world.mine
    return {
        "invite_code": mine.school.invite_code,
        "js-invite_code": mine.school.invite_code,
        "email": "newcomer@hostile.example",
        "password": "violet tundra marmalade ferry",
        "accept_policy": "y",
        "children-0-class_id": str(mine.ids["school_class"]),
        "class_id": str(mine.ids["school_class"]),
    }


def _encode_bytes(fields: dict[str, str], broken: bytes) -> bytes:
    """An urlencoded body whose values carry bytes that are not UTF-8."""
    parts = []
    for name, value in fields.items():
        raw = value.encode("utf-8", "surrogatepass") + (broken if name != "csrf_token" else b"")
        parts.append(quote_from_bytes(name.encode()).encode() + b"=" + quote_from_bytes(raw).encode())
    return b"&".join(parts)


def _send(client, target: FormTarget, fields: dict[str, str], how: str, slot: str, token: str):
    path = target.path.replace(PATH_SLOT, quote(slot, safe="") or "x")
    if target.method == "GET":  # a form's own query (action="?month=...") goes with its fields
        base, _, query = path.partition("?")
        return client.get(base, query_string={**dict(parse_qsl(query)), **fields})
    headers = {}
    if how == "htmx":
        headers = {"HX-Request": "true", "HX-Target": target.htmx_target or "main", "X-CSRFToken": token}
    data = {**fields, "csrf_token": token} if how != "htmx" else dict(fields)
    if how == "bytes":
        body = _encode_bytes(data, b"\xff\xfe\xc3\x28\xed\xa0\x80")
        return client.open(
            path, method=target.method, data=body, content_type="application/x-www-form-urlencoded"
        )
    if how == "multipart":
        # Encoded here, in memory: the test client would spool a large body to a temporary file.
        files = {
            name: FileStorage(
                BytesIO(EXECUTABLE), "..\\..\\evil.exe", content_type="application/x-msdownload"
            )
            for name in target.file_fields or ("file", "upload")
        }
        boundary, body = encode_multipart(MultiDict({**data, **files}))
        return client.open(
            path, method=target.method, data=body, content_type=f"multipart/form-data; boundary={boundary}"
        )
    if how == "json":
        return client.open(path, method=target.method, json=data, headers={"X-CSRFToken": token})
    return client.open(path, method=target.method, data=data, headers=headers)


@pytest.mark.parametrize("role", ROLES)
def test_hostile_values_in_every_form_never_break_escape_or_overreach(
    app, build_app, make_school, make_member, role
):
    """Every form and htmx control this role is shown, and every POST route, with hostile values."""
    world = build_world(make_school, make_member)
    fuzz_app = build_app(RATELIMIT_ENABLED=False)  # reach the code, not the limiter's 429
    client = signed_in_client(fuzz_app, world.mine, role)
    targets = _targets_for(client, fuzz_app, world, role)
    assert len(targets) >= 10, [t.path for t in targets]
    good = _good_values(world)
    other_before = rows_of_school(snapshot(), world.other.school.id)
    permissions = permissions_of(world.mine, role)
    with fuzz_app.app_context():
        engine = db.engine  # the fuzzed app's own engine: its writes are the ones to watch
    adapter = fuzz_app.url_map.bind("localhost")
    answered: dict[int, int] = {}

    def send_one(target: FormTarget, reachable: bool, data) -> None:
        fields = {
            name: _value_for(data.draw, name, value, good)
            for name, value in target.fields.items()
            if name != "csrf_token"
        }
        how = data.draw(st.sampled_from(["form", "htmx", "bytes", "multipart", "json"]), label="how")
        slot = data.draw(st.sampled_from(MALICIOUS[:12]), label="path segment")
        token = client.csrf_token()
        with WriteRecorder(engine) as writes:
            response = _send(client, target, fields, how, slot, token)
            body = response.get_data(as_text=True)
            response.close()
        where = (role, target.method, target.path, how, response.status_code)
        assert response.status_code < 500, where
        sent = " ".join(fields.values()) + slot
        for payload in REFLECTION_CHECKS:
            if payload in sent:
                assert payload not in body, ("reflected unescaped", payload, where)
        if TEMPLATE in sent:
            assert TEMPLATE_RESULT not in body, ("template evaluated", where)
        if not reachable:
            assert writes.tables == [], ("refused request wrote", writes.tables, where)
        bad = overreaching(writes.writes, permissions)
        assert bad == [], ("a write beyond the actor's permissions", bad, where)
        answered[response.status_code] = answered.get(response.status_code, 0) + 1

    # Every target gets its own examples: hypothesis alone would favour the first few.
    for target in targets:
        endpoint = _endpoint_of(adapter, target)
        db.session.expire_all()
        reachable = endpoint is not None and may_reach(fuzz_app, endpoint, world.mine, role)
        _examples_for(target, reachable, send_one)()
        after = rows_of_school(snapshot(), world.other.school.id)
        assert after == other_before, ("the other school changed", role, target.method, target.path)
    # Not everything was turned away at the door: some requests were answered as accepted.
    assert sum(n for code, n in answered.items() if code < 400) >= 3, answered


def _examples_for(target: FormTarget, reachable: bool, send_one):
    """A hypothesis run of its own for one target."""

    @HOSTILE_SETTINGS
    @given(data=st.data())
    def run(data):
        send_one(target, reachable, data)

    return run


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sign-in", {"email": "a\x00@example.org"}),
        ("/sign-in", {"x": [{"deep": "a\x00b"}]}),
        ("/sign-in", {"a\x00b": "key"}),
        ("/unsubscribe/abc%00def", None),
    ],
)
def test_a_nul_in_a_json_body_or_a_path_segment_is_refused(app, path, body):
    """Flask-WTF reads a JSON body as the form, and string route arguments reach queries: a NUL in
    either is refused before any view runs (PostgreSQL cannot store one; the fuzzing found it)."""
    method = "POST" if body is not None else "GET"
    with app.test_request_context(path, method=method, json=body), pytest.raises(BadRequest):
        refuse_nul_characters()
