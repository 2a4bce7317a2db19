"""Members blueprint: the approval queue, approve and reject in place with htmx."""

from __future__ import annotations

from flask import Blueprint, abort, flash, render_template, request, url_for
from flask_babel import gettext as _

from app.classes.families import waiting_changes_page
from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.lookup import or_404
from app.members import forms, lifecycle, services
from app.parsing import optional_id
from app.permissions import requires

bp = Blueprint("members", __name__, url_prefix="/members")


@bp.route("/pending")
@requires("members.approve")
def pending():
    """The queue of people waiting for approval, a page at a time (oldest first)."""
    after = optional_id(request.args.get("after"))
    queue = services.pending_memberships(after=after)
    changes = waiting_changes_page(after=optional_id(request.args.get("changes_after")))
    return render_template(
        "members/pending.html",
        pending=queue.memberships,
        queue=queue,
        later_page="after" in request.args,
        after=after,
        children=services.children_named(queue.memberships),
        approve_form=forms.ApproveForm(),
        reject_form=forms.RejectForm(),
        class_changes=changes.rows,
        changes=changes,
        later_changes="changes_after" in request.args,
    )


@bp.route("/<int:membership_id>/approve", methods=["POST"])
@requires("members.approve")
def approve(membership_id: int):
    """Approve one person; htmx swaps their row for a confirmation."""
    membership = or_404(services.get_pending(membership_id))
    if not forms.ApproveForm().validate_on_submit():
        abort(400)
    if not membership.user.active:
        return _account_closed(membership)
    if not lifecycle.approve(membership):
        abort(404)  # someone else decided a moment ago
    db.session.commit()
    return _decided(membership, "approved")


@bp.route("/<int:membership_id>/reject", methods=["POST"])
@requires("members.approve")
def reject(membership_id: int):
    """Reject one person with a reason; the row re-renders with errors if the reason is missing."""
    membership = or_404(services.get_pending(membership_id))
    form = forms.RejectForm()
    if not form.validate_on_submit():
        return render(
            "members/pending.html",
            block="row",
            target=f"pending-{membership.id}",
            pending=[membership],
            membership=membership,
            children=services.children_named([membership]),
            approve_form=forms.ApproveForm(),
            reject_form=form,
            status=400,
        )
    if not lifecycle.reject(membership, form.reason.data):
        abort(404)
    db.session.commit()
    return _decided(membership, "rejected")


def _account_closed(membership):
    """The person closed their account after the page was opened: say so where the row was."""
    if wants_fragment(f"pending-{membership.id}"):
        return render_template(
            "members/partials/_closed.html", membership=membership, message=lifecycle.CLOSED_ACCOUNT
        )
    flash(str(lifecycle.CLOSED_ACCOUNT), "error")
    return redirect_after_post(url_for("members.pending"))


def _decided(membership, outcome: str):
    """The decided row for htmx, or back to the queue for a plain form."""
    if wants_fragment(f"pending-{membership.id}"):
        return render_template("members/partials/_decided.html", membership=membership, outcome=outcome)
    flash(_("Request approved.") if outcome == "approved" else _("Request rejected."), "success")
    return redirect_after_post(url_for("members.pending"))
