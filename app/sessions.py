"""Server-side sessions: the cookie carries a signed random id and nothing else.

Everything Flask, Flask-Login and Flask-WTF keep in ``session`` (the user id, the school,
flashed messages) lives in the ``web_session`` table, so no cookie ever holds personal data
(P8), sessions are shared by every web process, and ending a person's sessions is a DELETE.

The row is made only when there is something to keep. A visitor who merely reads a page with
a form gets the signed id and no row: the CSRF secret of a session is derived from its id
(an HMAC under the secret key), so Flask-WTF's check stays real (a forged POST carries no
token that matches the victim's id) while an anonymous GET writes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta
from typing import TypedDict

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, Signer
from sqlalchemy import delete, insert, select, update
from werkzeug.datastructures import CallbackDict

from app.extensions import db
from app.models import WebSession
from app.models.base import utcnow

# Refresh a session's expiry at most this often, so reads do not turn into writes.
TOUCH_EVERY = timedelta(hours=1)
ANONYMOUS_LIFETIME = timedelta(hours=2)


CSRF_KEY = "csrf_token"  # Flask-WTF's WTF_CSRF_FIELD_NAME, where it looks for the secret


def hash_id(session_id: str) -> str:
    """Only the hash is stored: a leaked table cannot be replayed as cookies."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_secret(secret_key: str | bytes, session_id: str) -> str:
    """The CSRF secret of a session: derived from its id, so it needs no row to be remembered."""
    key = secret_key.encode() if isinstance(secret_key, str) else secret_key
    # 160 bits as 40 hex digits, the shape of Flask-WTF's own secret: a longer one would be
    # zlib-compressed by itsdangerous into tokens of varying length (pages would differ in size).
    return hmac.new(key, b"csrf:" + session_id.encode(), hashlib.sha256).hexdigest()[:40]


class ServerSession(CallbackDict, SessionMixin):
    """A dict that remembers whether it changed and whether its id must be replaced."""

    def __init__(self, initial=None, session_id: str | None = None, expires_at=None, *, has_row=False):
        def on_update(this):
            this.modified = True

        super().__init__(initial or {}, on_update)
        self.session_id = session_id
        self.expires_at = expires_at
        self.has_row = has_row
        self.modified = False
        self.rotate = False
        self.csrf_handed_out = False

    def __getitem__(self, key):
        # Flask-WTF reads the secret when it signs a token for a form: the visitor then needs
        # the cookie, even though nothing was written.
        if key == CSRF_KEY:
            self.csrf_handed_out = True
        return super().__getitem__(key)

    def worth_a_row(self, secret_key) -> bool:
        """Anything to keep besides the secret derived from the id?"""
        derived = self.session_id and csrf_secret(secret_key, self.session_id)
        return any(key != CSRF_KEY or value != derived for key, value in self.items())

    def regenerate(self) -> None:
        """Give this session a new id (on sign-in, so a planted id is worthless)."""
        self.rotate = True
        self.modified = True


class _CookieArgs(TypedDict):
    """What setting and deleting the session cookie share."""

    domain: str | None
    path: str
    secure: bool
    httponly: bool
    samesite: str | None


class DatabaseSessionInterface(SessionInterface):
    """Keep session data in the database through its own connection, apart from the request's."""

    @staticmethod
    def _secret_key(app: Flask) -> str | bytes:
        if app.secret_key is None:  # every config sets one; production refuses to start without
            raise RuntimeError("SECRET_KEY is not set: session cookies cannot be signed.")
        return app.secret_key

    def _signer(self, app: Flask) -> Signer:
        return Signer(self._secret_key(app), salt="server-session")

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        static = app.static_url_path or "/static"
        if request.path.startswith(static + "/"):
            return ServerSession()
        session_id = self._session_id_of(app, request)
        if session_id is None:
            return self._rowless(app, secrets.token_urlsafe(32))  # a new visitor: nothing written yet
        with db.engine.connect() as conn:
            row = conn.execute(
                select(WebSession.data, WebSession.expires_at).where(
                    WebSession.id_hash == hash_id(session_id)
                )
            ).first()
        if row is None:
            # Never made (a visitor who only read pages) or ended: no user, no data. Keeping the
            # id keeps the form the visitor has open valid; it grants nothing else.
            return self._rowless(app, session_id)
        if row.expires_at <= utcnow():
            return self._rowless(app, secrets.token_urlsafe(32))  # its row is pruned later
        data = json.loads(row.data)
        data.setdefault(CSRF_KEY, csrf_secret(DatabaseSessionInterface._secret_key(app), session_id))
        return ServerSession(data, session_id, row.expires_at, has_row=True)

    def _session_id_of(self, app: Flask, request: Request) -> str | None:
        cookie = request.cookies.get(self.get_cookie_name(app))
        if not cookie:
            return None
        try:
            return self._signer(app).unsign(cookie).decode()
        except BadSignature:
            return None

    @staticmethod
    def _rowless(app: Flask, session_id: str) -> ServerSession:
        return ServerSession(
            {CSRF_KEY: csrf_secret(DatabaseSessionInterface._secret_key(app), session_id)}, session_id
        )

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, ServerSession):  # open_session makes every session
            raise TypeError(f"Expected a ServerSession, got {type(session).__name__}.")
        name = self.get_cookie_name(app)
        cookie_args: _CookieArgs = {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "httponly": self.get_cookie_httponly(app),
            "samesite": self.get_cookie_samesite(app),
        }
        if not session.rotate and not session.worth_a_row(app.secret_key):
            self._save_rowless(app, session, response, name, cookie_args)
            return
        # A visitor who never signs in gets hours, not weeks: every page view by a bot or a
        # passer-by would otherwise leave a row for 14 days.
        lifetime = app.permanent_session_lifetime if "_user_id" in session else ANONYMOUS_LIFETIME
        expires_at = utcnow() + lifetime
        touch_due = session.expires_at is None or (expires_at - session.expires_at > TOUCH_EVERY)
        if not (session.modified or session.rotate or touch_due):
            return
        if session.rotate:
            if session.has_row and session.session_id is not None:
                self._delete(session.session_id)
            session.session_id, session.has_row = None, False
        is_new = not session.has_row
        if session.session_id is None:
            session.session_id = secrets.token_urlsafe(32)
        self._write(session, session.session_id, expires_at, is_new)
        self._set_cookie(app, session.session_id, response, name, expires_at, cookie_args)

    def _save_rowless(
        self, app: Flask, session: ServerSession, response: Response, name: str, cookie_args: _CookieArgs
    ) -> None:
        """Nothing to keep: no row (an emptied one is deleted); the cookie only if a form needs it."""
        if session.session_id is None:  # a static file's session: nothing to keep or hand out
            return
        if session.has_row:
            self._delete(session.session_id)
            if not session.csrf_handed_out:
                response.delete_cookie(name, **cookie_args)
        if session.csrf_handed_out:
            expires_at = utcnow() + ANONYMOUS_LIFETIME
            self._set_cookie(app, session.session_id, response, name, expires_at, cookie_args)

    def _set_cookie(
        self,
        app: Flask,
        session_id: str,
        response: Response,
        name: str,
        expires_at: datetime,
        cookie_args: _CookieArgs,
    ) -> None:
        response.set_cookie(
            name,
            self._signer(app).sign(session_id).decode(),
            expires=expires_at,
            **cookie_args,
        )
        response.vary.add("Cookie")

    def _write(self, session: ServerSession, session_id: str, expires_at: datetime, is_new: bool) -> None:
        values = {
            "data": json.dumps(dict(session), default=str),
            "user_id": _user_id(session),
            "expires_at": expires_at,
        }
        id_hash = hash_id(session_id)
        with db.engine.begin() as conn:
            if is_new:
                conn.execute(insert(WebSession).values(id_hash=id_hash, created_at=utcnow(), **values))
            else:
                done = conn.execute(update(WebSession).where(WebSession.id_hash == id_hash).values(**values))
                if done.rowcount == 0:  # ended elsewhere meanwhile (password change): stay ended
                    return

    def _delete(self, session_id: str) -> None:
        with db.engine.begin() as conn:
            conn.execute(delete(WebSession).where(WebSession.id_hash == hash_id(session_id)))


def _user_id(session: ServerSession) -> int | None:
    raw = session.get("_user_id")
    return int(raw) if raw is not None else None


def end_sessions(user_id: int, keep_session_id: str | None = None) -> int:
    """End every session of a person (except, optionally, the one making the change)."""
    query = delete(WebSession).where(WebSession.user_id == user_id)
    if keep_session_id:
        query = query.where(WebSession.id_hash != hash_id(keep_session_id))
    with db.engine.begin() as conn:
        return conn.execute(query).rowcount


def prune_expired() -> int:
    """Delete sessions past their expiry (run by the sweeper)."""
    with db.engine.begin() as conn:
        return conn.execute(delete(WebSession).where(WebSession.expires_at < utcnow())).rowcount
