"""Server-side sessions: the cookie carries a signed random id and nothing else.

Everything Flask, Flask-Login and Flask-WTF keep in ``session`` (the user id, the school,
the CSRF secret, flashed messages) lives in the ``web_session`` table, so no cookie ever
holds personal data (P8), sessions are shared by every web process, and ending a person's
sessions is a DELETE.
"""

from __future__ import annotations

import hashlib
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


def hash_id(session_id: str) -> str:
    """Only the hash is stored: a leaked table cannot be replayed as cookies."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class ServerSession(CallbackDict, SessionMixin):
    """A dict that remembers whether it changed and whether its id must be replaced."""

    def __init__(self, initial=None, session_id: str | None = None, expires_at=None):
        def on_update(this):
            this.modified = True

        super().__init__(initial or {}, on_update)
        self.session_id = session_id
        self.expires_at = expires_at
        self.modified = False
        self.rotate = False

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

    def _signer(self, app: Flask) -> Signer:
        if app.secret_key is None:  # every config sets one; production refuses to start without
            raise RuntimeError("SECRET_KEY is not set: session cookies cannot be signed.")
        return Signer(app.secret_key, salt="server-session")

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        static = app.static_url_path or "/static"
        if request.path.startswith(static + "/"):
            return ServerSession()
        cookie = request.cookies.get(self.get_cookie_name(app))
        if not cookie:
            return ServerSession()
        try:
            session_id = self._signer(app).unsign(cookie).decode()
        except BadSignature:
            return ServerSession()
        with db.engine.connect() as conn:
            row = conn.execute(
                select(WebSession.data, WebSession.expires_at).where(
                    WebSession.id_hash == hash_id(session_id)
                )
            ).first()
        if row is None or row.expires_at <= utcnow():
            return ServerSession()
        return ServerSession(json.loads(row.data), session_id, row.expires_at)

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
        if not session:
            if session.session_id:
                self._delete(session.session_id)
                response.delete_cookie(name, **cookie_args)
            return
        # A visitor who never signs in gets hours, not weeks: every page view by a bot or a
        # passer-by would otherwise leave a row for 14 days.
        lifetime = app.permanent_session_lifetime if "_user_id" in session else ANONYMOUS_LIFETIME
        expires_at = utcnow() + lifetime
        touch_due = session.expires_at is None or (expires_at - session.expires_at > TOUCH_EVERY)
        if not (session.modified or session.rotate or touch_due):
            return
        if session.rotate and session.session_id:
            self._delete(session.session_id)
            session.session_id = None
        is_new = session.session_id is None
        session_id = session.session_id or secrets.token_urlsafe(32)
        session.session_id = session_id
        self._write(session, session_id, expires_at, is_new)
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
