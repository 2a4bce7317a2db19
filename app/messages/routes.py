"""Messages blueprint: write, preview and send (or schedule) announcements, and follow them.

The three kinds need different permissions (and a class announcement its class), so the
views declare ``@member`` and check the kind's permission themselves, before anything else.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from sqlalchemy.exc import IntegrityError

from app import clock
from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.lookup import or_404
from app.mail import provider_events
from app.messages import forms, services
from app.models.base import utcnow
from app.parsing import optional_id
from app.permissions import can, member

bp = Blueprint("messages", __name__, url_prefix="/messages")


@bp.context_processor
def _helpers():
    return {"local_time": services.local_time}


def _require_a_sender() -> None:
    if not services.may_send_any():
        abort(403)


@bp.route("")
@member
def index():
    """Sent and scheduled messages of the current school, with their delivery counts."""
    _require_a_sender()
    rows = services.list_messages()
    counts = services.delivery_counts(row.message.id for row in rows)
    page = render_template(
        "messages/index.html",
        rows=rows,
        counts=counts,
        kinds=services.allowed_kinds(),
        kind_of=services.kind_of,
        waiting_for_its_time=services.is_waiting_for_its_time,
        preparing=services.is_preparing,
        limit=services.LIST_LIMIT,
    )
    _commit_kept_counts()  # after rendering: a commit expires the messages the page shows
    return page


def _commit_kept_counts() -> None:
    """Commit the counts of messages found done just now, so later views read them kept."""
    if db.session.info.pop("counts_written", False):
        db.session.commit()


def _audience_or_abort():
    """The audience named by ?kind=…&class_id=…, once the member may write to it (else 403/404).

    Returns None for a class announcement with no class chosen yet.
    """
    allowed = services.allowed_kinds()
    if not allowed:
        abort(403)
    kind = or_404(services.KINDS.get(request.args.get("kind") or allowed[0].key))
    if not can(kind.permission):
        abort(403)
    if kind.key != "class":
        return services.audience_for(kind)
    class_id = optional_id(request.args.get("class_id"))
    if class_id is None:
        return None
    school_class = or_404(services.get_class(class_id))
    if not services.may_email_class(school_class):
        abort(403)
    return services.audience_for(kind, school_class)


@bp.route("/new", methods=["GET", "POST"])
@member
def compose():
    """Write a message; Preview shows it in place (htmx) or above the form; Send sends or schedules."""
    audience = _audience_or_abort()
    if audience is None:
        if request.method != "GET":
            abort(400)
        return render_template("messages/choose_class.html", classes=services.classes_to_email())
    form = forms.ComposeForm(zone=clock.school_zone())
    if request.method == "GET":
        _start_from_copy(form)
        form.submission.data = forms.new_submission_key()
    now = utcnow()
    form.send_at.render_kw = {
        "min": services.local_input_value(now),
        "max": services.local_input_value(now + services.MAX_AHEAD),
    }
    context = {
        "form": form,
        "audience": audience,
        "action": url_for(
            "messages.compose",
            kind=audience.kind.key,
            class_id=audience.school_class.id if audience.school_class else None,
        ),
        "preview": None,
        "problem": None,
    }
    if request.method == "POST":
        previewing = request.form.get("action") != "send" or wants_fragment("preview")
        if not form.validate_on_submit():
            return _invalid(context)
        if not previewing:
            submission = services.submission_fingerprint(
                form.submission.data, audience, form.subject.data, form.body.data, form.send_at_utc
            )
            sent = services.send(
                audience,
                subject=form.subject.data,
                body=form.body.data,
                send_at=form.send_at_utc,
                submission=submission,
                language=form.language.data,
            )
            if sent is not None:
                note, message_id = _commit_once(sent, submission)
                flash(note, "success")
                return redirect_after_post(url_for("messages.show", message_id=message_id))
            context["problem"] = _("Nobody would receive this message yet, so it was not sent.")
        context["preview"] = services.preview(audience, form.subject.data, form.body.data)
    return render("messages/compose.html", block="preview", target="preview", **context)


def _commit_once(sent: services.Sent, submission: str | None) -> tuple[str, int]:
    """Commit the message; if the same form's other submission committed first, show that one."""
    note, message_id = _sent_note(sent), sent.message.id
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # drops this submission's send job with its message
        earlier = services.submitted(submission)
        if earlier is None:
            raise
        note, message_id = _sent_note(services.Sent(earlier, earlier.audience_size or 0)), earlier.id
    return note, message_id


def _start_from_copy(form: forms.ComposeForm) -> None:
    """?copy=<id>: the subject and text of an earlier message, to edit and send again."""
    original = services.copy_of(optional_id(request.args.get("copy")))
    if original is not None:
        form.subject.data = original.subject
        form.body.data = original.source_markdown or ""


def _invalid(context: dict):
    """Errors next to the fields with everything typed kept; an htmx preview gets the whole form back."""
    response = render("messages/compose.html", block="compose", target="preview", status=400, **context)
    if wants_fragment("preview"):
        response.headers["HX-Retarget"] = "#compose"
        response.headers["HX-Reswap"] = "innerHTML"
    return response


def _sent_note(sent: services.Sent) -> str:
    """What the sender is told: when the message goes, and to how many people."""
    if sent.message.scheduled_for is not None:
        return ngettext(
            "Scheduled for %(time)s to %(num)d person.",
            "Scheduled for %(time)s to %(num)d people.",
            sent.people,
            time=services.local_time(sent.message.scheduled_for),
        )
    return ngettext("Sending to %(num)d person.", "Sending to %(num)d people.", sent.people)


def _followed_message_or_abort(message_id: int) -> services.Listed:
    """A message of this school the member may follow (403 for non-senders, 404 for other ids)."""
    _require_a_sender()
    found = or_404(services.get_message(message_id))
    return found


@bp.route("/<int:message_id>")
@member
def show(message_id: int):
    """One message and its delivery counts; htmx polls them while the worker prepares or sends it."""
    found = _followed_message_or_abort(message_id)
    message = found.message
    counts = services.delivery_counts([message.id])[message.id]
    waiting_for_its_time = services.is_waiting_for_its_time(message)
    preparing = services.is_preparing(message)
    response = render(
        "messages/show.html",
        block="counts",
        target="delivery-counts",
        message=message,
        sender_name=found.sender_name,
        kind=services.kind_of(message),
        counts=counts,
        delay=services.delay_of(message.id) if counts.delayed else None,
        waiting_for_its_time=waiting_for_its_time,
        may_resend=services.may_resend(message),
        preparing=preparing,
        polling=preparing or (not counts.settled and not waiting_for_its_time),
        body_html=services.render_markdown(message.source_markdown or ""),
        feedback=provider_events.feedback_for(message.id),
    )
    _commit_kept_counts()
    return response


@bp.route("/<int:message_id>/cancel", methods=["POST"])
@member
def cancel(message_id: int):
    """Call off a scheduled message before its time (whoever may send it to that audience)."""
    found = _followed_message_or_abort(message_id)
    if not services.may_resend(found.message):
        abort(403)
    try:
        skipped = services.cancel(found.message)
    except services.CancelRefused as refusal:
        db.session.rollback()
        flash(str(refusal), "error")
        return redirect_after_post(url_for("messages.show", message_id=message_id))
    db.session.commit()
    flash(
        ngettext(
            "Cancelled: nobody will receive it (%(num)d delivery called off).",
            "Cancelled: nobody will receive it (%(num)d deliveries called off).",
            skipped,
        ),
        "success",
    )
    return redirect_after_post(url_for("messages.show", message_id=message_id))
