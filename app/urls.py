"""Checks on URLs that come from outside."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, has_request_context, url_for


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
