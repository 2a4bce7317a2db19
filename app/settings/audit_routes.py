"""The audit log (audit.view): who did what and when, newest first, paged by key.

Nested in the settings blueprint (``settings.audit.*``).
"""

from __future__ import annotations

from flask import Blueprint, request, url_for
from flask_babel import gettext as _

from app import clock
from app.htmx import render
from app.parsing import optional_id
from app.permissions import requires
from app.settings import audit_log, forms

bp = Blueprint("audit", __name__, url_prefix="/audit")


@bp.route("")
@requires("audit.view")
def index():
    """Who did what and when, newest first; filter by action and by day; sign-ins as counts."""
    form = forms.AuditFilterForm(request.args)
    form.action.choices = [("", _("Every action")), *audit_log.actions().items()]
    valid = form.validate()
    before = request.args.get("before", "")
    audit_filter = audit_log.AuditFilter(
        action=form.action.data or None if valid else None,
        since=form.since.data if valid else None,
        until=form.until.data if valid else None,
        before_id=optional_id(before),
    )
    page = audit_log.audit_page(audit_filter)
    next_args = {k: v for k, v in request.args.items() if k != "before" and v}
    return render(
        "settings/audit.html",
        block="results",
        target="audit-results",
        status=200 if valid else 400,
        form=form,
        page=page,
        labels=audit_log.actions(),
        sign_in_days=audit_log.SIGN_IN_DAYS,
        zone=clock.school_zone(),
        next_url=url_for("settings.audit.index", before=page.next_before_id, **next_args)
        if page.next_before_id
        else None,
    )
