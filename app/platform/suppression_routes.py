"""Platform administrators see every email suppression and lift one (``platform.suppressions.*``).

Nested in the platform blueprint, under /platform/suppressions/. The list shows addresses and
the provider's reasons only (no names, no schools); a lift is written to the audit log of
every school the address's owner belongs to.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import Blueprint, request, url_for
from flask_login import current_user

from app.extensions import db
from app.mail import suppressions
from app.models import PlatformRole
from app.parsing import optional_id
from app.permissions import platform
from app.settings.suppression_routes import GONE, lifted_answer, list_page

bp = Blueprint("suppressions", __name__, url_prefix="/suppressions")
UTC = ZoneInfo("UTC")


@bp.route("/")
@platform(PlatformRole.ADMIN)
def index():
    """Every suppressed address, newest first, with the provider's reason and the date."""
    return _page()


def _page(status: int = 200, notice: str | None = None):
    page = suppressions.platform_page(optional_id(request.args.get("before")))
    return list_page(
        "platform/suppressions.html",
        page,
        suppressions.pending_lifts(school=False),
        UTC,
        url_for("platform.suppressions.index", before=page.next_before_id) if page.next_before_id else None,
        status,
        notice,
    )


@bp.route("/<int:suppression_id>/lift", methods=["POST"])
@platform(PlatformRole.ADMIN)
def lift(suppression_id: int):
    """Lift any suppression; the schools of the address's owner see it in their audit log."""
    listed = suppressions.any_suppression(suppression_id)
    lifted = suppressions.lift(listed.suppression, by=current_user) if listed else None
    if lifted is None:
        return _page(404, GONE)
    suppressions.audit_in_schools_of(lifted.email, lifted.reason)
    db.session.commit()
    return lifted_answer(lifted.email, suppression_id, url_for("platform.suppressions.index"))
