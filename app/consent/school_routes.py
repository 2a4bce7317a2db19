"""School administrators: consent counts per policy version, and the school's data export.

Nested in the consent blueprint (``consent.school.*``, under /school/).
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, render_template, url_for
from flask_login import current_user

from app import audit, tenancy
from app.consent import export as exports
from app.consent import forms, ledger, policy
from app.extensions import db
from app.htmx import redirect_after_post, render
from app.lookup import or_404
from app.models.consent import ConsentKind, ExportStatus
from app.permissions import requires

bp = Blueprint("school", __name__, url_prefix="/school")


@bp.route("/consent")
@requires("settings.view")
def summary():
    """How many of the school's people are at each step for each version (counts, never names)."""
    return render_template(
        "consent/summary.html",
        versions=policy.posted_versions(),
        counts=ledger.counts_for_school(),
        kinds=ConsentKind,
    )


@bp.route("/export", methods=["GET", "POST"])
@requires("data.export")
def export():
    """Export the school's data (JSON and CSV in a ZIP), built by the worker."""
    form = forms.ExportForm()
    if form.validate_on_submit():
        _, raw = exports.request_school_export(current_user)
        audit.record("export.school_data", target=g.school.name)
        db.session.commit()
        return redirect_after_post(url_for(".export_status", token=raw))
    return render_template("consent/export.html", form=form), 400 if form.errors else 200


@bp.route("/export/<token>")
@requires("data.export")
def export_status(token: str):
    """The export's progress; htmx polls the status block until the link appears."""
    found = or_404(exports.find_export(token))
    expired = exports.forget_if_expired(found)
    return render(
        "consent/export_status.html",
        block="status",
        target="export-status",
        export=found,
        token=token,
        expired=expired,
        ExportStatus=ExportStatus,
    )


@bp.route("/export/<token>/download")
@requires("data.export")
def export_download(token: str):
    """The ZIP, while the link has not expired, streamed a stored piece at a time."""
    found = or_404(exports.find_export(token))
    if exports.forget_if_expired(found) or found.status is not ExportStatus.READY:
        return render_template("consent/export_gone.html"), 410
    first = exports.chunk_of(found.id, 0)
    if first is None:
        return render_template("consent/export_gone.html"), 410
    stamp = found.created_at.strftime("%Y-%m-%d")
    headers = {"Content-Disposition": f'attachment; filename="school-data-{stamp}.zip"'}
    if found.size is not None:
        headers["Content-Length"] = str(found.size)
    pieces = _pieces(current_app._get_current_object(), found.school_id, found.id, first)  # type: ignore[attr-defined]
    return Response(pieces, mimetype="application/zip", headers=headers)


def _pieces(app: Flask, school_id: int, export_id: int, first: bytes) -> Iterator[bytes]:
    """The first piece (read before answering, so a missing file is a 410), then the rest.

    The server reads the body after the request's context is gone, so each piece is read in an
    app context of its own, bound to the school, pushed and popped within the piece (as the
    directory's CSV export does: a context held across a ``yield`` may be popped from another
    contextvars context). Only one piece is in memory at a time.
    """
    yield first
    seq = 1
    while True:
        with app.app_context(), tenancy.bound(school_id):
            piece = exports.chunk_of(export_id, seq)
        if piece is None:
            return
        yield piece
        seq += 1
