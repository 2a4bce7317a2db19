"""A LibreTranslate-compatible translation API: one POST per message and language, made by the worker.

``POST {TRANSLATE_URL}/translate`` with JSON ``{"q": [texts], "source": "en", "target": "es",
"format": "text"|"html", "api_key": KEY}`` answers ``{"translatedText": [texts]}`` (a list for
a list ``q``); errors are JSON ``{"error": "..."}`` with 400, 403 (a wrong or missing key),
429 (its request limit) or 500. ``GET {TRANSLATE_URL}/languages`` lists
``[{"code": "en", "name": "English", "targets": ["es", ...]}]``. A school may host its own.

Only the standard library is used (``urllib.request``), through app/providers.py: no redirect
is followed, a loopback stand-in bypasses proxies, and TRANSLATE_TIMEOUT bounds the whole call.
The API key travels in the JSON body only; it is never logged nor put into a failure reason.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from app.providers import LOOPBACK_HOSTS, network_reason, opener_for, retry_after_seconds

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
MAX_REASON = 300
# An announcement body is at most 20,000 characters; its translation as HTML fits well within.
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
FORMATS = frozenset({"text", "html"})


class TranslateFailure(Exception):
    """The service gave no usable translation; ``reason`` is short and holds no key or URL."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def url_problem(url: str) -> str | None:
    """Why TRANSLATE_URL cannot be used, or None: http(s) with a host, plain http only on loopback."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "TRANSLATE_URL must be an http(s) URL such as https://translate.example.org."
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        # The API key and every announcement would cross the network in the clear.
        return "TRANSLATE_URL must use https (plain http is only for a service on this machine)."
    return None


class TranslateClient:
    """Translate texts through a LibreTranslate-compatible API."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT):
        base_url = (base_url or "").strip().rstrip("/")
        problem = url_problem(base_url)
        if problem:
            raise RuntimeError(problem)
        if timeout <= 0:
            raise RuntimeError("TRANSLATE_TIMEOUT must be a positive number of seconds.")
        self.base_url = base_url
        self.timeout = timeout
        self._api_key = api_key or None
        self._opener = opener_for(base_url)

    def __repr__(self) -> str:  # the key stays out of reprs, tracebacks and debuggers' displays
        return f"TranslateClient(base_url={self.base_url!r})"

    @classmethod
    def from_config(cls, config: Mapping) -> TranslateClient | None:
        """Build from TRANSLATE_* settings; None when TRANSLATE_URL is not set (no translation)."""
        url = str(config.get("TRANSLATE_URL") or "").strip()
        if not url:
            return None
        raw_timeout = config.get("TRANSLATE_TIMEOUT")
        try:
            timeout = float(raw_timeout) if raw_timeout not in (None, "") else DEFAULT_TIMEOUT
        except (TypeError, ValueError):
            raise RuntimeError("TRANSLATE_TIMEOUT must be a number of seconds.") from None
        return cls(url, str(config.get("TRANSLATE_API_KEY") or "") or None, timeout=timeout)

    # -- calls ----------------------------------------------------------------------------------

    def translate(self, texts: Sequence[str], *, source: str, target: str, format: str = "text") -> list[str]:
        """The translations of ``texts`` in order (one call); TranslateFailure otherwise."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}")
        texts = list(texts)
        if not texts:
            return []
        payload: dict[str, object] = {"q": texts, "source": source, "target": target, "format": format}
        if self._api_key:
            payload["api_key"] = self._api_key
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            f"{self.base_url}/translate",
            data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            method="POST",
            headers=_HEADERS | {"Content-Type": "application/json; charset=utf-8"},
        )
        data = self._call(request, f"translation {source}->{target}")
        translated = data.get("translatedText") if isinstance(data, dict) else None
        if isinstance(translated, str) and len(texts) == 1:
            translated = [translated]  # a service that answers one text with a bare string
        if (
            not isinstance(translated, list)
            or len(translated) != len(texts)
            or not all(isinstance(item, str) for item in translated)
        ):
            failure = TranslateFailure("the translation service answered without the translated texts")
            log.warning("translation %s->%s failed: %s", source, target, failure.reason)
            raise failure
        return translated

    def languages(self) -> dict[str, frozenset[str]]:
        """{language code: the codes it translates to}, as the service lists them."""
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            f"{self.base_url}/languages", method="GET", headers=_HEADERS
        )
        data = self._call(request, "translation languages")
        if not isinstance(data, list):
            raise TranslateFailure("the translation service answered without a language list")
        found: dict[str, frozenset[str]] = {}
        for entry in data:
            if isinstance(entry, dict) and isinstance(entry.get("code"), str):
                targets = entry.get("targets")
                listed = targets if isinstance(targets, list) else []
                found[entry["code"]] = frozenset(t for t in listed if isinstance(t, str))
        return found

    def _call(self, request: urllib.request.Request, what: str) -> object:
        """Send the request and parse its JSON answer; TranslateFailure (logged) otherwise."""
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                body = _read(response)
        except urllib.error.HTTPError as error:
            with error:
                failure = self._failure(error.code, _read(error), error.headers)
            log.warning("%s failed: %s", what, failure.reason)
            raise failure from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = network_reason(error)
            failure = TranslateFailure(f"the translation service could not be reached: {reason}")
            log.warning("%s failed: %s", what, failure.reason)
            raise failure from None
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            failure = TranslateFailure("the translation service answered with something other than JSON")
            log.warning("%s failed: %s", what, failure.reason)
            raise failure from None

    def _failure(self, status: int, payload: bytes, headers) -> TranslateFailure:
        """A failure for an HTTP error status, with the service's own words if it gave any."""
        retry_after = retry_after_seconds(headers.get("Retry-After") if headers is not None else None)
        if status == 403:
            reason = f"the translation service refused the API key ({status}); check TRANSLATE_API_KEY"
        elif status == 429:
            reason = f"the translation service's rate limit was reached ({status})"
        elif status >= 500:
            reason = f"the translation service had an error ({status})"
        elif 300 <= status < 400:
            reason = f"the translation service answered with a redirect ({status}); check TRANSLATE_URL"
        else:
            reason = f"the translation service refused the request ({status})"
        message = self._scrub(_error_message(payload))
        if message and status not in (403, 429) and status < 500:
            reason = f"{reason}: {message}"
        return TranslateFailure(reason[:MAX_REASON], status=status, retry_after=retry_after)

    def _scrub(self, text: str) -> str:
        """The service's own message might quote what it was sent, the key included."""
        return text.replace(self._api_key, "[key]") if self._api_key else text


_HEADERS = {"Accept": "application/json", "User-Agent": "join-our-class-translate"}


def _read(response) -> bytes:
    """At most MAX_RESPONSE_BYTES of a body (never an unbounded read), or nothing if it broke off."""
    try:
        return response.read(MAX_RESPONSE_BYTES) or b""
    except (OSError, http.client.HTTPException):
        return b""


def _error_message(payload: bytes) -> str:
    """LibreTranslate's ``{"error": "..."}`` in one line, or ''."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    return " ".join(error.split())[:200] if isinstance(error, str) else ""
