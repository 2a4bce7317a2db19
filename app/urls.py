"""Checks on URLs that come from outside."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, has_request_context, url_for
from werkzeug.routing import IntegerConverter, Map, ValidationError

from app.parsing import LARGEST_ID


class RowIdConverter(IntegerConverter):
    """``<int:...>`` in every route: ASCII digits naming a value an id column can hold, or no match.

    Werkzeug's own ``int`` takes any length (and any Unicode digit): PostgreSQL then refuses
    ``WHERE id = 2147483648`` with "integer out of range", a 500. Registered as ``int`` in
    ``create_app`` before any blueprint adds a rule, so every route and ``url_for`` use it.
    """

    regex = r"[0-9]+"

    def __init__(self, map: Map, *args, **kwargs) -> None:
        kwargs.setdefault("max", LARGEST_ID)
        super().__init__(map, *args, **kwargs)

    def to_python(self, value: str) -> int:
        """The id, or ValidationError (the route does not match: 404) when no column could hold it."""
        if len(value.lstrip("0")) > len(str(LARGEST_ID)):
            raise ValidationError()  # before int(): a 5,000-digit value is refused, not parsed
        return super().to_python(value)


def safe_next(target: str | None) -> str | None:
    """A ``next`` value only if it is a path on this site (no scheme, host or '//' trick)."""
    if not target or len(target) > 500:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 32 for c in target):
        return None
    return target


def external_url(endpoint: str, **values) -> str:
    """An absolute URL for emails: PUBLIC_URL when configured, else the current request's host.

    Jobs run outside any request, so there PUBLIC_URL is required.
    """
    base = current_app.config.get("PUBLIC_URL")
    if not base and has_request_context():
        return url_for(endpoint, _external=True, **values)
    if not base:
        raise RuntimeError("Set PUBLIC_URL so jobs can put links to this site in emails.")
    with current_app.test_request_context(base_url=base):
        return url_for(endpoint, _external=True, **values)
