"""One visible request pipeline: every app-wide hook is app/pipeline.py's, in its order, and
reading pages (anonymously, or signed in with a policy notice showing) writes no row."""

from __future__ import annotations

import functools
import re
from datetime import timedelta

import time_machine
from sqlalchemy import func, select

from app import pipeline
from app.extensions import db
from app.models import WebSession
from app.models.consent import ConsentEvent
from tests.conftest import CLOCK_START, PASSWORD, count_queries, publish_material, sign_in

FLASK_DEFAULT_CONTEXT = "flask.templating._default_template_ctx_processor"
# Blueprint-local hooks that only concern their own blueprint's pages.
BLUEPRINT_LOCAL_CONTEXT = {"messages": ["app.messages.routes._helpers"]}
WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


def hook_name(hook) -> str:
    """module.qualname of a hook, seeing through functools.partial and bound methods."""
    if isinstance(hook, functools.partial):
        hook = hook.func
    hook = getattr(hook, "__func__", hook)
    return f"{hook.__module__}.{hook.__qualname__}"


def names(hooks) -> list[str]:
    """The names of a list of hooks."""
    return [hook_name(hook) for hook in hooks]


def test_the_app_wide_hooks_are_exactly_the_pipelines_in_order(app):
    assert names(app.before_request_funcs[None]) == pipeline.BEFORE
    # Flask runs after_request hooks last-registered first; AFTER is written in running order.
    assert list(reversed(names(app.after_request_funcs[None]))) == pipeline.AFTER
    assert names(app.teardown_request_funcs[None]) == pipeline.TEARDOWN
    assert names(app.template_context_processors[None]) == [FLASK_DEFAULT_CONTEXT, *pipeline.CONTEXT]
    assert names(app.url_value_preprocessors[None]) == []
    assert names(app.url_default_functions[None]) == []


def test_no_blueprint_has_hooks_of_its_own_beyond_the_listed_ones(app):
    for registry in (
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
        app.url_value_preprocessors,
    ):
        assert {key: hooks for key, hooks in registry.items() if key is not None and hooks} == {}
    local = {
        key: [name for name in names(hooks) if name != FLASK_DEFAULT_CONTEXT]
        for key, hooks in app.template_context_processors.items()
        if key is not None
    }
    assert {key: found for key, found in local.items() if found} == BLUEPRINT_LOCAL_CONTEXT


def test_a_hook_registered_elsewhere_breaks_the_comparison(build_app):
    app = build_app()

    @app.before_request
    def sneaky():
        return None

    assert names(app.before_request_funcs[None]) != pipeline.BEFORE
    assert names(app.before_request_funcs[None])[-1].endswith("sneaky")


def test_the_csrf_check_runs_in_the_pipelines_hook_not_flask_wtfs(app):
    assert app.config["WTF_CSRF_CHECK_DEFAULT"] is False  # Flask-WTF's own hook does nothing
    assert app.config["WTF_CSRF_ENABLED"] is True


def test_anonymous_pages_write_no_session_row(client):
    for path in ("/", "/sign-in", "/sign-in", "/"):
        with count_queries() as statements:
            response = client.get(path, follow_redirects=True)
        assert response.status_code == 200, path
        assert [s for s in statements if WRITES.match(s)] == [], path
    assert db.session.scalar(select(func.count()).select_from(WebSession)) == 0
    # The visitor still holds a signed id, so the sign-in form's token has a session to match.
    assert client.get_cookie("session") is not None
    assert 'name="csrf_token"' in client.get("/sign-in").get_data(as_text=True)  # the form has its token


def test_a_token_from_a_rowless_session_signs_in_and_a_forged_post_is_refused(
    client, make_school, make_member
):
    member = make_member(make_school())
    page = client.get("/sign-in").get_data(as_text=True)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    forged = client.post("/sign-in", data={"email": member.user.email, "password": "x" * 12})
    assert forged.status_code == 400  # no token: refused, though the visitor has a session cookie
    stranger = client.application.test_client()
    stranger.get("/sign-in")  # another visitor's token does not match this visitor's id
    stolen_elsewhere = stranger.post(
        "/sign-in", data={"email": member.user.email, "password": "x" * 12, "csrf_token": token}
    )
    assert stolen_elsewhere.status_code == 400
    signed_in = client.post(
        "/sign-in", data={"email": member.user.email, "password": PASSWORD, "csrf_token": token}
    )
    assert signed_in.status_code in (302, 303)
    assert db.session.scalar(select(func.count()).select_from(WebSession)) == 1  # made at sign-in


def test_a_signed_in_person_reading_pages_under_a_notice_writes_no_ledger_line(
    client, clock, make_school, make_member
):
    parent = make_member(make_school())  # joins at CLOCK_START
    at = CLOCK_START + timedelta(days=120)  # a version posted after they joined
    with time_machine.travel(at, tick=False):
        publish_material(email=False, summary="A change.")
    with time_machine.travel(at + timedelta(days=40), tick=False):  # in force, banner still up
        sign_in(client, parent.user.email)
        lines = db.session.scalar(select(func.count()).select_from(ConsentEvent))
        for path in ("/", "/classes/", "/account", "/"):
            with count_queries() as statements:
                page = client.get(path).get_data(as_text=True)
            assert 'id="consent-banner"' in page, path
            assert [s for s in statements if WRITES.match(s)] == [], path
        assert db.session.scalar(select(func.count()).select_from(ConsentEvent)) == lines
