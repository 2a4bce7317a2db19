"""Shared by the clients of outside services (Mailgun, Zendesk): safe HTTP, readable failures.

Failure reasons end up in database columns and logs that many people read, so nothing
here ever includes a URL, an address or a credential.
"""

from __future__ import annotations

import http.client
import re
import ssl
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


def opener_for(base_url: str) -> urllib.request.OpenerDirector:
    """An opener that never follows redirects, and bypasses proxies for a loopback stand-in."""
    handlers: list[urllib.request.BaseHandler] = [NoRedirect()]
    if urlsplit(base_url).hostname in LOOPBACK_HOSTS:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)
