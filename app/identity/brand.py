"""What pages show of the current school's identity: its name, colour and crest in the header."""

from __future__ import annotations

from flask import g, has_request_context, request, url_for

from app import tenancy
from app.identity import services
from app.permissions import Access, access_of

# The one public page that is the member's own school's once they are signed in (their home).
SCHOOL_HOME = frozenset({"main.home"})


def school_brand() -> dict | None:
    """The current school's name, colour and the URLs of its stylesheet and crest, for the header;
    None outside a school, before approval, on public pages, and in a support view (which opens no
    identity pages)."""
    if not has_request_context():
        return None  # email rendered by the worker: its layout has a brand of its own
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
