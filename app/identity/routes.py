"""The school's crest and brand stylesheet, served with long caching, and what templates use of them.

Both are the signed-in member's own school's (the tenancy scope finds no other school's crest);
their URLs carry a checksum of what they serve, so a change is a new URL and the old one may be
cached for a year. No personal data is in them.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, g, request
from werkzeug.wrappers import Response as BaseResponse

from app.identity import avatars, services
from app.permissions import member

bp = Blueprint("identity", __name__)

# A year, and never revalidated while fresh: the URL changes when the content does. Private: the
# answer depends on the cookie's school, so no shared cache may keep it.
LONG_CACHE = "private, max-age=31536000, immutable"


def _cached(body: bytes | str, content_type: str, etag: str) -> BaseResponse:
    """The body with its ETag and long cache headers; 304 when the browser already has it."""
    response = Response(body, content_type=content_type)
    response.set_etag(etag)
    response.headers["Cache-Control"] = LONG_CACHE
    return response.make_conditional(request)


@bp.route("/school/crest/<checksum>")
@member
def crest(checksum: str):
    """The current school's crest image, if the checksum names its current crest."""
    found = services.crest_by_checksum(checksum)
    if found is None:
        abort(404)
    return _cached(found.data, found.content_type, found.checksum)


@bp.route("/school/brand/<version>.css")
@member
def stylesheet(version: str):
    """The current school's brand colour as CSS custom properties (the CSP forbids inline style)."""
    colour = g.school.brand_colour
    if colour is None or version != services.stylesheet_version(colour):
        abort(404)
    return _cached(services.stylesheet(colour), "text/css; charset=utf-8", version)


@bp.app_template_global("initials")
def initials(name: str | None) -> str:
    """The initials of a name, for macros/_avatar.html."""
    return avatars.initials(name)


@bp.app_template_global("avatar_tone")
def avatar_tone(name: str | None) -> int:
    """The palette index of a name, for macros/_avatar.html."""
    return avatars.tone(name)
