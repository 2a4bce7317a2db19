"""Every rendered form is sent once: a repeat of its submission key answers the first result.

A form carries a fresh random key (``app.forms``). ``claim`` (the last before-request hook)
inserts the key's row on its own connection, committed at once, before the view runs: of two
identical POSTs only one inserts, on SQLite and on PostgreSQL alike (a unique column). The
other is a repeat and its view never runs:

- the first is done: the repeat answers what the first answered, if that was a redirect (the
  same 303 and Location, or the same HX-Redirect), else in words: "already sent";
- the first is still running: the repeat waits for it (``FORM_REPEAT_WAIT_SECONDS``), then
  answers as above, or "still being processed" if it is still not done.

``settle`` (the first after-request hook, before any job runs) writes the outcome on the row,
or deletes the row when the view changed nothing: a form re-rendered with its errors (4xx), an
error page (5xx), a preview that committed nothing, a sign-in (its answer is the new session's
cookie, which no repeat may be given). The corrected form can then be sent with the same key.
``release_unsettled`` (teardown) deletes a row whose request ended without a response.

The row is keyed by a keyed hash of the key and the sender (the signed-in person, else the
session), so a key sent from another session is a fresh form there and replays nothing of
someone else's. Nothing of a response body is kept. Rows are deleted after ``LIFETIME`` (the
outbox sweeper; an expired row found on a claim is taken over there and then). A request
without a key (an API client, a webhook, an older page) runs as it always did.

A claim on its own connection, not in the request's transaction: the session store and
``end_sessions`` write on their own connections during a request, and on SQLite a claim held
in the request's transaction would hold the one write lock against them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta

from flask import current_app, g, has_request_context, make_response, render_template, request, session
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import and_, delete, event, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.extensions import db
from app.forms import KEY_FIELD, KEY_SHAPE
from app.models.base import utcnow
from app.models.submissions import FormSubmission

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LIFETIME = timedelta(hours=24)  # a key older than this is a fresh form again; the sweeper deletes it
# A claim with no outcome this old belongs to a request that died (its worker was killed): a
# repeat takes it over. Far beyond any request's run (gunicorn's timeout is 30 s).
ABANDONED = timedelta(minutes=5)
POLL_SECONDS = 0.1
# The headers a repeat answers with (never a body: it may hold personal data).
REPLAYED_HEADERS = ("Location", "HX-Redirect", "HX-Location", "HX-Refresh")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _token_hash(key: str) -> str:
    """The row's key: the submission key bound to who sends it, under the app's secret key."""
    if current_user.is_authenticated:
        sender = f"user:{current_user.id}"
    else:
        sender = f"session:{getattr(session, 'session_id', None) or ''}"
    secret = current_app.secret_key
    secret_bytes = secret.encode() if isinstance(secret, str) else (secret or b"")
    message = f"form-submission:{sender}:{key}".encode()
    return hmac.new(secret_bytes, message, hashlib.sha256).hexdigest()


def _insert(values: dict):
    dialect_insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    return (
        dialect_insert(FormSubmission)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["token_hash"])
        .returning(FormSubmission.id)
    )


def claim():
    """before_request, last: claim the form's submission key, or answer a repeat without the view."""
    if request.method not in STATE_CHANGING:
        return None
    key = request.form.get(KEY_FIELD, "")
    if not KEY_SHAPE.fullmatch(key):
        return None  # no key (or not one we made): runs unguarded, as before
    token = _token_hash(key)
    school = g.get("school")
    wait = float(current_app.config.get("FORM_REPEAT_WAIT_SECONDS", 3))
    for _attempt in range(max(1, int(wait / POLL_SECONDS)) + 1):
        now = utcnow()
        with db.engine.begin() as conn:
            conn.execute(
                delete(FormSubmission).where(
                    FormSubmission.token_hash == token,
                    or_(
                        FormSubmission.created_at < now - LIFETIME,
                        and_(FormSubmission.status.is_(None), FormSubmission.created_at < now - ABANDONED),
                    ),
                )
            )
            claimed = conn.execute(
                _insert(
                    {
                        "token_hash": token,
                        "school_id": school.id if school is not None else None,
                        "created_at": now,
                        "headers": {},
                    }
                )
            ).scalar()
            if claimed is not None:
                g.submission = _Claim(request._get_current_object(), claimed)
                return None
            first = conn.execute(
                select(FormSubmission.status, FormSubmission.headers).where(
                    FormSubmission.token_hash == token
                )
            ).first()
        if first is not None and first.status is not None:
            return _repeat(first.status, first.headers)
        # Still running (or released meanwhile: the next attempt claims it).
        time.sleep(POLL_SECONDS)
    return _answer_in_words(still_running=True)


class _Claim:
    """The key this request claimed. Kept with its request: a request context pushed inside it
    (``app.urls`` builds links for emails in one) shares ``g`` and runs the teardown hooks."""

    def __init__(self, owner, submission_id: int) -> None:
        self.owner = owner
        self.submission_id = submission_id
        self.committed = False


def _own_claim() -> _Claim | None:
    found = g.get("submission")
    if found is None or found.owner is not request._get_current_object():  # type: ignore[attr-defined]
        return None
    return found


def settle(response):
    """after_request, first: keep the outcome for repeats, or release the key if nothing changed."""
    found = _own_claim()
    if found is None:
        return response
    g.pop("submission")
    redirected = response.status_code in _REDIRECTS or any(
        name in response.headers for name in REPLAYED_HEADERS if name != "Location"
    )
    # A response that hands out a new session (sign-in) cannot be replayed: its cookie is that
    # session, and a repeat answered without it would leave the browser signed out. Released,
    # a repeat signs in anew (which changes nothing twice).
    rotated = getattr(session, "rotate", False)
    if response.status_code >= 400 or rotated or not (found.committed or redirected):
        if not found.committed:
            db.session.rollback()  # nothing of the view is kept; and SQLite's write lock is free
        _release(found.submission_id)
        return response
    headers = {name: response.headers[name] for name in REPLAYED_HEADERS if name in response.headers}
    with db.engine.begin() as conn:
        conn.execute(
            update(FormSubmission)
            .where(FormSubmission.id == found.submission_id)
            .values(status=response.status_code if redirected else 200, headers=headers, done_at=utcnow())
        )
    return response


def release_unsettled(_error=None) -> None:
    """teardown_request: a claimed key whose request ended with no response (an exception that
    propagated) is released, so the form can be sent again."""
    found = _own_claim()
    if found is not None:
        g.pop("submission")
        db.session.rollback()
        _release(found.submission_id)


def _release(submission_id: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(delete(FormSubmission).where(FormSubmission.id == submission_id))


def listen_for_commits() -> None:
    """Hear every session's commits (once per process), as app.jobs does."""
    if not event.contains(Session, "after_commit", _note_commit):
        event.listen(Session, "after_commit", _note_commit)


def _note_commit(session: Session) -> None:
    """after_commit: the request's own session committed after the claim (the view changed something)."""
    if not has_request_context():
        return
    found = _own_claim()
    if found is not None and session is db.session.registry():
        found.committed = True


def _repeat(status: int, headers: dict):
    """The first submission's answer again: its redirect, or words when it was not one."""
    if status in _REDIRECTS or any(name in headers for name in REPLAYED_HEADERS if name != "Location"):
        response = make_response("", status)
        for name, value in headers.items():
            response.headers[name] = value
        return response
    return _answer_in_words(still_running=False)


def _answer_in_words(*, still_running: bool):
    """'Already sent' (or 'still being processed'): a notice for htmx, a page without it.

    The session is left as it was: the first request may have changed it (signed in, switched
    school), and writing this request's stale copy back would undo that.
    """
    if still_running:
        message = _("This form is still being sent. Wait a moment, then reload the page to see the result.")
    else:
        message = _("This form was already sent. Nothing was sent or changed a second time.")
    if request.headers.get("HX-Request") == "true":
        body = render_template("macros/_flashes_oob.html", flashes=[("success", message)])
        response = make_response(body, 200)
        response.headers["HX-Reswap"] = "none"  # keep what the first answer put on the page
    else:
        response = make_response(
            render_template("errors/already_sent.html", message=message, still_running=still_running), 409
        )
    _leave_session_alone()
    return response


def _leave_session_alone() -> None:
    if hasattr(session, "csrf_handed_out"):
        session.csrf_handed_out = False
    session.modified = False


def prune_expired() -> int:
    """Delete claims past ``LIFETIME`` (run by the outbox sweeper); how many."""
    with db.engine.begin() as conn:
        return conn.execute(
            delete(FormSubmission).where(FormSubmission.created_at < utcnow() - LIFETIME)
        ).rowcount
