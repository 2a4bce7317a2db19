"""Email suppressions of the school's members (members.manage): why, since when, and lifting one.

Nested in the settings blueprint (``settings.suppressions.*``). Lifting answers the row in
place for htmx, or a 303 back to the list with a flash for a plain form.
"""

from __future__ import annotations

from flask import Blueprint, flash, get_template_attribute, make_response, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from app import audit, clock
from app.extensions import db
from app.htmx import redirect_after_post, wants_fragment
from app.lazytext import lazy_gettext as _l
from app.mail import suppressions
from app.parsing import optional_id
from app.permissions import requires

bp = Blueprint("suppressions", __name__, url_prefix="/suppressions")

GONE = _l("That address is not on the list (any more): nothing was lifted.")


@bp.route("")
@requires("members.manage")
def index():
    """Members' addresses we stopped emailing, with the provider's reason and the date."""
    return _page()


def _page(status: int = 200, notice: str | None = None):
    page = suppressions.school_page(optional_id(request.args.get("before")))
    return list_page(
        "settings/suppressions.html",
        page,
        suppressions.pending_lifts(school=True),
        clock.school_zone(),
        url_for("settings.suppressions.index", before=page.next_before_id) if page.next_before_id else None,
        status,
        notice,
    )


@bp.route("/<int:suppression_id>/lift", methods=["POST"])
@requires("members.manage")
def lift(suppression_id: int):
    """Lift a member's suppression: email reaches them again, and Mailgun forgets it too."""
    listed = suppressions.school_suppression(suppression_id)
    lifted = suppressions.lift(listed.suppression, by=current_user) if listed else None
    if listed is None or lifted is None:
        return _page(404, GONE)  # another school's id looks the same as one lifted already
    audit.record("suppression.lifted", target=listed.name, reason=lifted.reason)
    db.session.commit()
    return lifted_answer(lifted.email, suppression_id, url_for("settings.suppressions.index"))


def list_page(template: str, page, lifts, zone, next_url: str | None, status: int, notice: str | None):
    """The list page (a school's or the platform's) with the words each reason is shown in."""
    body = render_template(
        template,
        page=page,
        lifts=lifts,
        zone=zone,
        next_url=next_url,
        notice=notice,
        reason_text=suppressions.reason_text,
        stops_text=suppressions.stops_text,
    )
    return body, status


def lifted_answer(email: str, suppression_id: int, back: str):
    """The lifted row in place for htmx; a flash and a 303 back to the list for a plain form."""
    if wants_fragment(f"suppression-{suppression_id}"):
        row = get_template_attribute("macros/suppressions.html", "lifted_row")
        response = make_response(str(row(email, suppression_id)).strip())
        response.vary.update(["HX-Request", "HX-Target"])
        return response
    # The address stays out of the flash: the session keeps no personal data (P8), even server-side.
    lifted = _(
        "Suppression lifted: email goes to that address again, and Mailgun's own list is updated next."
    )
    flash(lifted, "success")
    return redirect_after_post(back)
