"""The school's crest and brand stylesheet, served with long caching, and what templates use of them.

Both are the signed-in member's own school's (the tenancy scope finds no other school's crest);
their URLs carry a checksum of what they serve, so a change is a new URL and the old one may be
cached for a year. No personal data is in them.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, g, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from app import tenancy
from app.identity import avatars, services
from app.permissions import Access, access_of, member

bp = Blueprint("identity", __name__)

# A year, and never revalidated while fresh: the URL changes when the content does. Private: the
# answer depends on the cookie's school, so no shared cache may keep it.
LONG_CACHE = "private, max-age=31536000, immutable"
# The one public page that is the member's own school's once they are signed in (their home).
SCHOOL_HOME = frozenset({"main.home"})


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


def school_brand() -> dict | None:
    """The current school's name, colour and the URLs of its stylesheet and crest, for the header;
    None outside a school, before approval, on public pages, and in a support view (which opens no
    identity pages)."""
    school, membership = g.get("school"), g.get("membership")
    if school is None or membership is None or not membership.is_approved or g.get("support_grant"):
        return None
    endpoint = request.endpoint
    if endpoint is None or (access_of(endpoint)[0] is Access.PUBLIC and endpoint not in SCHOOL_HOME):
        # Public pages (sign-in, privacy, a link from an email, which may be someone else's) are
        # the platform's: they show nothing of the school the visitor happens to be signed in to.
        return None
    if tenancy.current_school_id() != school.id:
        return None
    colour, checksum = school.brand_colour, school.crest_checksum
    return {
        "name": school.name,
        "colour": colour,
        "stylesheet_url": (
            url_for("identity.stylesheet", version=services.stylesheet_version(colour)) if colour else None
        ),
        "crest_url": url_for("identity.crest", checksum=checksum) if checksum else None,
    }


@bp.app_context_processor
def brand_globals() -> dict:
    """``school_brand`` for the header and base.html's stylesheet link."""
    return {"school_brand": school_brand()}


@bp.app_template_global("initials")
def initials(name: str | None) -> str:
    """The initials of a name, for macros/_avatar.html."""
    return avatars.initials(name)


@bp.app_template_global("avatar_tone")
def avatar_tone(name: str | None) -> int:
    """The palette index of a name, for macros/_avatar.html."""
    return avatars.tone(name)
