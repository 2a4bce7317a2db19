"""Shared by the clients of outside services (Mailgun, Zendesk): safe HTTP, readable failures.

Failure reasons end up in database columns and logs that many people read, so nothing
here ever includes a URL, an address or a credential.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
ADDRESS = re.compile(r"[^\s<>\"',;:()\[\]]+@[^\s<>\"',;:()\[\]]+")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would forward the Authorization header to the new host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: either a number of seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def network_reason(error: BaseException) -> str:
    """Which network trouble, in words that hold no address, key or URL."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error.reason, str):
        error = error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, http.client.RemoteDisconnected):  # before ConnectionResetError, its base
        return "connection closed without a response"
    if isinstance(error, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return "connection reset"
    if isinstance(error, ssl.SSLError):
        return "TLS error"
    if isinstance(error, http.client.HTTPException):
        return "malformed response"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return type(error).__name__


def checked_base_url(base_url: str, timeout: float, *, setting: str, example: str) -> str:
    """An http(s) base URL without a trailing slash; plain http only for a loopback stand-in."""
    base_url = base_url.rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise RuntimeError(f"{setting}_BASE_URL must be an http(s) URL such as {example}.")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        # Basic auth over plain HTTP would hand the credentials to anyone on the path.
        raise RuntimeError(f"{setting}_BASE_URL must use https (plain http is only for a loopback fake).")
    if timeout <= 0:
        raise RuntimeError(f"{setting}_TIMEOUT must be a positive number of seconds.")
    return base_url


class _Deadline:
    """Cuts a call's connection once its whole time is up.

    urllib's timeout bounds each socket operation, not the call: a server dribbling a byte a
    second holds a call for ever. The mail claims count on a call ending by its timeout (a
    batch not shown accepted after that, plus the event lag, was never taken).

    The watchdog cuts through a duplicate of the socket's descriptor, its own until the call
    ends: the call's socket may be closed meanwhile and its number reused by another
    connection (the database's), which a cut by number would hit.
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._twin: socket.socket | None = None
        self._over = False
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket | None) -> None:
        """The connection's socket, once connected (cut at once if the time is already up)."""
        if sock is None:
            return
        with self._lock:
            if self._over:
                return
            try:
                self._twin = socket.socket(fileno=os.dup(sock.fileno()))
            except OSError:
                return  # closed already: nothing left to cut
            if self.expired:
                self._cut()

    def cancel(self) -> None:
        """The call is over: the timer has nothing left to do."""
        self._timer.cancel()
        with self._lock:
            self._over = True
            self._let_go()

    def _expire(self) -> None:
        with self._lock:
            if self._over:
                return
            self.expired = True
            self._cut()

    def _cut(self) -> None:
        """Shut the socket both ways: a thread blocked reading or writing it gets an error at once.

        Through the plain descriptor, also under TLS (SSLSocket.shutdown would unwrap the TLS
        object under the feet of the thread reading it). Called with the lock held.
        """
        if self._twin is not None:
            with contextlib.suppress(OSError):
                self._twin.shutdown(socket.SHUT_RDWR)
            self._let_go()

    def _let_go(self) -> None:
        if self._twin is not None:
            self._twin.close()
            self._twin = None


def _with_deadline(http_class, seconds: float, made: list[_Deadline]):
    """A connection factory for urllib whose connections are cut ``seconds`` after they start."""

    def connection(host, **kwargs):
        conn = http_class(host, **kwargs)
        deadline = _Deadline(seconds)
        made.append(deadline)
        connect, getresponse = conn.connect, conn.getresponse

        def watched_connect():
            connect()
            deadline.watch(conn.sock)

        def watched_getresponse(*args, **kw):
            response = getresponse(*args, **kw)
            close = response.close

            def closing():
                deadline.cancel()
                close()

            response.close = closing  # the body is read before close: the deadline covers it
            return response

        conn.connect, conn.getresponse = watched_connect, watched_getresponse
        return conn

    return connection


class _DeadlineOpen:
    """Mixin for urllib's HTTP(S) handlers: the request's timeout bounds the whole call."""

    def do_open(self, http_class, req, **kwargs):
        timeout = req.timeout
        if not isinstance(timeout, int | float):
            return super().do_open(http_class, req, **kwargs)
        made = []  # the deadline of each connection urllib makes for this call
        try:
            return super().do_open(_with_deadline(http_class, timeout, made), req, **kwargs)
        except (OSError, http.client.HTTPException) as error:
            cut = any(deadline.expired for deadline in made)
            for deadline in made:
                deadline.cancel()
            if cut and not isinstance(error, urllib.error.URLError):
                # Cut while waiting for the answer: a timeout, as a slow socket operation would be.
                raise TimeoutError("the call ran past its timeout") from error
            raise
        except BaseException:
            for deadline in made:
                deadline.cancel()
            raise


class DeadlineHTTPHandler(_DeadlineOpen, urllib.request.HTTPHandler):
    """Plain HTTP (loopback stand-ins) with a whole-call deadline."""


class DeadlineHTTPSHandler(_DeadlineOpen, urllib.request.HTTPSHandler):
    """HTTPS with a whole-call deadline."""


def opener_for(base_url: str) -> urllib.request.OpenerDirector:
    """An opener that never follows redirects, bypasses proxies for a loopback stand-in, and
    ends every call by its timeout (the whole call, not each socket operation)."""
    handlers: list[urllib.request.BaseHandler] = [NoRedirect(), DeadlineHTTPHandler(), DeadlineHTTPSHandler()]
    if urlsplit(base_url).hostname in LOOPBACK_HOSTS:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)
