"""Members blueprint: the approval queue, approve and reject in place with htmx."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, render_template, request, url_for
from flask_babel import gettext as _

from app.classes.families import waiting_changes_page
from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.lookup import or_404
from app.members import forms, lifecycle, notices, services
from app.models import JoinNotices
from app.parsing import optional_id
from app.permissions import requires

bp = Blueprint("members", __name__, url_prefix="/members")


@bp.route("/pending")
@requires("members.approve")
def pending():
    """The queue of people waiting for approval, a page at a time (oldest first)."""
    return _pending_page()


def _pending_page(*, notices_form: forms.JoinNoticesForm | None = None, status: int = 200):
    """The approvals page; ``notices_form``: the join-notice choice just refused, with its error."""
    after = optional_id(request.args.get("after"))
    queue = services.pending_memberships(after=after)
    changes = waiting_changes_page(after=optional_id(request.args.get("changes_after")))
    if notices_form is None and g.membership is not None:  # (support staff viewing have no choice)
        notices_form = forms.JoinNoticesForm(prefix="jn", data={"mode": g.membership.join_notices.value})
    return render_template(
        "members/pending.html",
        pending=queue.memberships,
        queue=queue,
        later_page="after" in request.args,
        after=after,
        children=services.children_named(queue.memberships),
        approve_form=forms.ApproveForm(),
        reject_form=forms.RejectForm(),
        notices_form=notices_form,
        class_changes=changes.rows,
        changes=changes,
        later_changes="changes_after" in request.args,
    ), status


@bp.route("/join-notices", methods=["POST"])
@requires("members.approve")
def join_notices():
    """Choose how one hears of join requests here; "no emails" only while another approver does."""
    if g.membership is None:
        abort(403)  # platform support viewing the school: nobody's choice to make
    form = forms.JoinNoticesForm(prefix="jn")
    if not form.validate_on_submit():
        return _pending_page(notices_form=form, status=400)
    mode = JoinNotices(form.mode.data)
    if mode is JoinNotices.OFF and not notices.may_turn_off(g.membership):
        form.mode.errors = [
            _(
                "Someone here has to hear of requests to join, and nobody else does yet. Choose "
                '"No emails" once another approver gets them, or choose the daily email.'
            )
        ]
        return _pending_page(notices_form=form, status=400)
    g.membership.join_notices = mode
    db.session.commit()
    flash(_("Your choice is saved."), "success")
    return redirect_after_post(url_for("members.pending"))


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
