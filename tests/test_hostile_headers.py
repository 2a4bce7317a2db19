"""Headers on every answer of the production configuration, and uploads of the wrong kind or size.

tests/test_security.py checks the headers of GET pages in the test configuration; here every
route of ``url_map`` is asked with every method it takes, as a stranger and as a superadmin,
plus error answers (404, 405, 413, CSRF), under ProductionConfig: HSTS, CSP, nosniff,
frame-ancestors, Referrer-Policy, and the flags of every cookie set.
"""

from __future__ import annotations

from io import BytesIO

import pytest
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from config import ProductionConfig
from tests.conftest import PASSWORD, make_config
from tests.hostile_world import (
    MALICIOUS,
    REFLECTION_CHECKS,
    SCRIPT,
    build_world,
    crawl_forms,
    fill_rule,
    interesting_rules,
    rows_of_school,
    signed_in_client,
    snapshot,
)

ONE_YEAR = 31_536_000


def _production_app(build_app, database_url, monkeypatch, **overrides):
    monkeypatch.setenv("SECRET_KEY", "production-like-secret-for-this-test")
    monkeypatch.setenv("PUBLIC_URL", "https://school.example.org")
    monkeypatch.setenv("MAIL_BACKEND", "memory")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")  # production requires one...
    config = ProductionConfig()
    config.REDIS_URL = None  # ...but this app runs its jobs in-process, as the test's own
    config.RATELIMIT_STORAGE_URI = "memory://"
    config.SQLALCHEMY_DATABASE_URI = make_config(database_url).SQLALCHEMY_DATABASE_URI
    config.RATELIMIT_ENABLED = False
    for key, value in overrides.items():
        setattr(config, key, value)
    return build_app(config)


def _check_headers(response, where) -> None:
    headers = response.headers
    csp = headers.get("Content-Security-Policy", "")
    directives = {part.strip().split(" ")[0]: part.strip() for part in csp.split(";") if part.strip()}
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", where
    assert "default-src" in directives and "object-src" in directives and "base-uri" in directives, where
    script = directives.get("script-src", directives.get("default-src", ""))
    assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script and "*" not in script, where
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    assert headers.get("Referrer-Policy") in ("same-origin", "no-referrer", "strict-origin"), where
    hsts = headers.get("Strict-Transport-Security", "")
    assert hsts.startswith("max-age=") and int(hsts.split(";")[0].split("=")[1]) >= ONE_YEAR, where
    assert "includeSubDomains" in hsts, where
    if response.mimetype == "text/html":
        assert response.mimetype_params.get("charset", "").lower() == "utf-8", where
    for cookie in headers.getlist("Set-Cookie"):
        flags = [flag.strip().lower() for flag in cookie.split(";")[1:]]
        assert "secure" in flags and "httponly" in flags, (cookie, where)
        assert any(flag in ("samesite=lax", "samesite=strict") for flag in flags), (cookie, where)


@pytest.mark.parametrize("role", ["anonymous", "superadmin"])
def test_production_headers_on_every_route_and_method(
    app, build_app, database_url, monkeypatch, make_school, make_member, role
):
    """Every rule, every method it takes, plus error answers: the production headers are there."""
    world = build_world(make_school, make_member)
    production = _production_app(build_app, database_url, monkeypatch)
    client = signed_in_client(production, world.mine, role, https=True)
    answered = 0
    for method in ("GET", "POST"):
        for rule in interesting_rules(production, method):
            if rule.endpoint == "auth.sign_out":
                continue
            path = fill_rule(rule, world.mine.ids)
            response = client.get(path) if method == "GET" else client.form(path, {"q": "x"})
            assert response.status_code < 500, (method, path)
            _check_headers(response, (role, method, path, response.status_code))
            response.close()
            answered += 1
    for method, path in [("GET", "/no-such-page"), ("DELETE", "/sign-in"), ("POST", "/sign-in")]:
        response = client.open(path, method=method)  # a 404, a 405, and a form with no CSRF token
        assert response.status_code in (400, 404, 405), (method, path)
        _check_headers(response, (role, method, path, response.status_code))
    assert answered >= 20


def test_sign_in_over_production_sets_only_secure_http_only_cookies(
    app, build_app, database_url, monkeypatch, make_school, make_member
):
    world = build_world(make_school, make_member)
    production = _production_app(build_app, database_url, monkeypatch)
    client = signed_in_client(production, world.mine, "anonymous", https=True)
    client.get("/sign-in")
    response = client.form(
        "/sign-in", {"email": world.mine.actors["parent"].user.email, "password": PASSWORD}
    )
    assert response.status_code == 303
    assert response.headers.getlist("Set-Cookie"), "signing in issues a new session id"
    _check_headers(response, "sign-in")


# -- uploads -------------------------------------------------------------------------------------------

SMALL_LIMIT = 64 * 1024
WRONG_FILES = {
    "executable named .csv": (b"MZ\x90\x00\x03" + b"\x00" * 200, "families.csv", "text/csv"),
    "empty": (b"", "empty.csv", "text/csv"),
    "not UTF-8": (b"name,email\n\xff\xfe\xc3\x28,\xed\xa0\x80@example.org\n", "latin.csv", "text/csv"),
    "NUL bytes": (b"name,email\nA\x00B,a@example.org\n", "nul.csv", "text/csv"),
    "markup file name": (b"name\nx\n", SCRIPT + ".csv", "text/html"),
    "path in the name": (b"name\nx\n", "../../../../etc/passwd", "application/octet-stream"),
    "zip bomb header": (b"PK\x03\x04" + b"\x00" * 100, "families.xlsx", "application/zip"),
    "image": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "photo.png", "image/png"),
    "too big": (b"a," * (SMALL_LIMIT // 2 + 10), "big.csv", "text/csv"),
    "formula injection": (b"name,email\n=cmd|' /C calc'!A0,a@example.org\n", "formula.csv", "text/csv"),
}


def _file_forms(client, app, world):
    paths = [fill_rule(rule, world.mine.ids) for rule in interesting_rules(app, "GET")]
    return [form for form in crawl_forms(client, paths) if form.file_fields and form.method == "POST"]


@pytest.mark.parametrize("role", ["parent", "admin", "superadmin"])
def test_wrong_uploads_to_every_file_field_are_refused_plainly(
    app, build_app, make_school, make_member, role
):
    """Every file field a page offers gets files of the wrong type, encoding, name and size."""
    world = build_world(make_school, make_member)
    small = build_app(MAX_CONTENT_LENGTH=SMALL_LIMIT, RATELIMIT_ENABLED=False)
    client = signed_in_client(small, world.mine, role)
    forms = _file_forms(client, small, world)
    if role == "parent" and not forms:
        return  # parents are offered no upload; the admins' runs below must find them
    other_before = rows_of_school(snapshot(), world.other.school.id)
    if not forms:
        pytest.skip("no page offers a file field yet")
    for form in forms:
        for label, (content, filename, mimetype) in WRONG_FILES.items():
            fields = MultiDict({**form.fields, "csrf_token": client.csrf_token()})
            for name in form.file_fields:
                fields[name] = FileStorage(BytesIO(content), filename, content_type=mimetype)
            boundary, body = encode_multipart(fields)
            response = client.post(
                form.path, data=body, content_type=f"multipart/form-data; boundary={boundary}"
            )
            where = (role, form.path, label, response.status_code)
            assert response.status_code < 500, where
            text = response.get_data(as_text=True)
            for payload in REFLECTION_CHECKS:
                assert payload not in text, where
            if label == "too big":
                assert response.status_code in (400, 413), where
            response.close()
    assert rows_of_school(snapshot(), world.other.school.id) == other_before


def test_a_body_over_the_limit_is_413_on_every_post_route(app, build_app, make_school, make_member):
    """Bigger than MAX_CONTENT_LENGTH, to every POST route as an admin: 413 or a refusal, never 500."""
    world = build_world(make_school, make_member)
    small = build_app(MAX_CONTENT_LENGTH=SMALL_LIMIT, RATELIMIT_ENABLED=False)
    client = signed_in_client(small, world.mine, "admin")
    token = client.csrf_token()
    posted = 0
    for rule in interesting_rules(small, "POST"):
        if rule.endpoint == "auth.sign_out":
            continue
        path = fill_rule(rule, world.mine.ids, strings=MALICIOUS[8].replace("/", "-"))
        for body in (
            {"csrf_token": token, "name": "x" * (SMALL_LIMIT + 1)},
            {"csrf_token": token, "file": (BytesIO(b"x" * (SMALL_LIMIT + 1)), "big.csv")},
        ):
            response = client.post(path, data=body)
            assert response.status_code < 500, (path, response.status_code)
            assert response.status_code in (302, 303, 400, 403, 404, 413), (path, response.status_code)
            response.close()
            posted += 1
    assert posted >= 20
