"""Asking before an impactful change: a confirmation page without JS, a <dialog> with it.

The settings page links each such button to its route's GET, which shows in plain words what
will happen and a form that POSTs back with ``confirmed=yes``; app.js opens the same form in a
<dialog> instead of following the link. A POST without ``confirmed`` changes nothing: it is
answered with the confirmation page (an htmx request is sent there with HX-Redirect).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, render_template, request, url_for
from flask_babel import gettext as _

from app.htmx import redirect_after_post
from app.models import Membership, School
from app.settings.forms import ConfirmForm

CONFIRMED = "yes"


@dataclass(frozen=True)
class Confirmation:
    """What the page (or the dialog) says: the question, what follows, the button, where back is."""

    title: str
    explanation: str
    button: str
    back: str
    danger: bool = False


def confirmed() -> bool:
    """Is this a POST (its CSRF token checked) that carries the confirmation? False for a GET.

    A POST whose token fails is refused (400), as every button's is.
    """
    if request.method != "POST":
        return False
    if not ConfirmForm().validate_on_submit():
        abort(400)
    return request.form.get("confirmed") == CONFIRMED


def ask(confirmation: Confirmation):
    """The confirmation page for the current route (which the form posts back to)."""
    action = url_for(request.endpoint or "", **(request.view_args or {}))
    if request.method == "POST" and request.headers.get("HX-Request") == "true":
        return redirect_after_post(action)  # htmx posted without asking: show the page itself
    return render_template(
        "settings/confirm.html",
        confirmation=confirmation,
        action=action,
        confirm_form=ConfirmForm(formdata=None),
    )


# -- what each change says before it happens ----------------------------------------------------


def rotate_code(school: School) -> Confirmation:
    """Making a new invitation code (or switching joining back on with one)."""
    back = url_for("settings.index") + "#section-invite"
    if not school.invite_code:
        return Confirmation(
            title=_("Switch joining on with a new code?"),
            explanation=_(
                "A new invitation code is made. Anyone who has it can ask to join the school; "
                "you still approve each request."
            ),
            button=_("Switch on with a new code"),
            back=back,
        )
    return Confirmation(
        title=_("Make a new invitation code?"),
        explanation=_(
            "The code %(code)s stops working at once. Families who have it but have not joined yet "
            "will need the new one. People already in the school are not affected.",
            code=school.invite_code,
        ),
        button=_("Make a new code"),
        back=back,
        danger=True,
    )


def code_off(school: School) -> Confirmation:
    """Switching the invitation code off, which stops anyone new asking to join."""
    return Confirmation(
        title=_("Switch joining off?"),
        explanation=_(
            "The invitation code stops working and nobody can ask to join until you make a new one. "
            "Requests already waiting stay waiting, and members are not affected."
        ),
        button=_("Switch the code off"),
        back=url_for("settings.index") + "#section-invite",
        danger=True,
    )


def deactivate(target: Membership) -> Confirmation:
    """Deactivating a person in this school."""
    return Confirmation(
        title=_("Deactivate %(name)s in this school?", name=target.user.name),
        explanation=_(
            "%(name)s loses access to this school on their next click and gets no more of its mail. "
            "Their account and their other schools are not affected, and you can reactivate them later.",
            name=target.user.name,
        ),
        button=_("Deactivate in this school"),
        back=url_for("settings.people.person", membership_id=target.id),
        danger=True,
    )
