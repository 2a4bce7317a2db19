"""Families: a guardian's own family page, the family editor (families.manage) and class changes.

Nested in the classes blueprint (``classes.families.*``). Ids of children and people travel
in form bodies, never in URLs.
"""

from __future__ import annotations

import re

from flask import Blueprint, abort, flash, g, render_template, request, url_for
from flask_babel import gettext as _

from app import audit
from app.classes import families, forms
from app.classes import services as classes
from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.lookup import or_404
from app.members import lifecycle
from app.parsing import optional_id
from app.permissions import member, requires

bp = Blueprint("families", __name__, url_prefix="/families")


def _student_forms(family, submitted=None) -> dict:
    """One form per child (prefixed by its id) and one blank form to add a child."""
    choices = forms.class_choices(classes.list_classes())
    result = {}
    for student in sorted(family.students, key=lambda s: (s.first_name, s.id)):
        form = forms.StudentForm(formdata=None, prefix=f"st{student.id}")
        form.student_id.data = str(student.id)
        form.first_name.data, form.last_name.data = student.first_name, student.last_name
        form.classes.data = [e.class_id for e in student.enrollments]
        result[student.id] = form
    result["new"] = forms.StudentForm(formdata=None, prefix="new")
    if submitted is not None:
        key = optional_id(submitted.student_id.data)
        result[key if key in result else "new"] = submitted
    for form in result.values():
        form.classes.choices = choices
    return result


def _family_page(family, *, own: bool, status: int = 200, submitted=None, name_form=None):
    """A family as its guardians (own) or the family editor see it."""
    editable = families.may_edit_own() if own else True
    changes = families.waiting_changes(s.id for s in family.students)
    context = {
        "family": family,
        "own": own,
        "editable": editable,
        "guardians": families.listed_guardians(family),
        "waiting": families.waiting_guardians(family),
        "changes": changes,
        "student_forms": _student_forms(family, submitted) if editable else {},
        "class_names": classes_names(),
        "confirm_form": forms.ConfirmForm(),
        "name_form": name_form or forms.FamilyNameForm(formdata=None, obj=family),
        "code": families.family_code(family) if own else None,
    }
    if own:
        db.session.commit()  # the code made on first view is kept
    return render("classes/family.html", block="content", target="main", status=status, **context)


def classes_names() -> dict[int, str]:
    """Class names by id (tens of rows)."""
    return {c.id: c.name for c in classes.list_classes()}


def _submitted_student_form():
    prefix = request.form.get("form_prefix", "")
    if not re.fullmatch(r"st[0-9]{1,12}|new", prefix):
        abort(400)
    form = forms.StudentForm(prefix=prefix)
    form.classes.choices = forms.class_choices(classes.list_classes())
    return form


def _save_student(family, *, own: bool, back: str):
    """Validate and save one child's form; pending class changes are said so."""
    form = _submitted_student_form()
    if form.validate_on_submit():
        student = None
        if form.student_id.data:
            student = _student_of(family, form.student_id.data)
        saved = families.save_student(
            family,
            student,
            first_name=form.first_name.data,
            last_name=form.last_name.data,
            class_ids=form.classes.data or [],
            direct=not own,
        )
        db.session.commit()
        if saved.requested:
            flash(
                _(
                    "%(name)s is saved. The class change waits for the school's approval.",
                    name=saved.student.first_name,
                ),
                "success",
            )
        else:
            flash(_("%(name)s is saved.", name=saved.student.first_name), "success")
        return redirect_after_post(back)
    return _family_page(family, own=own, status=400, submitted=form)


# --- a guardian's own family ---------------------------------------------------------------


def _student_of(family, submitted_id):
    """A child of this family by the id a form sent (ASCII digits only: "٣" is not 3 here)."""
    return or_404(families.student_of(family, optional_id(submitted_id)))


def _own_family():
    """The signed-in guardian's family named by the form's family_id, loaded for its page."""
    family = or_404(families.my_family(g.membership, optional_id(request.form.get("family_id"))))
    return families.get_family(family.id)


@bp.route("/mine")
@member
def mine():
    """My family: children and classes, co-guardians, the family's invitation code."""
    mine = families.my_families(g.membership)
    if not mine:
        return render_template("classes/no_family.html")
    family = mine[0]
    return _family_page(family, own=True)


@bp.route("/mine/students", methods=["POST"])
@member
def save_my_student():
    """Add or change one of my children (class moves and additions wait for approval)."""
    family = _own_family()
    if not families.may_edit_own():
        abort(403)
    return _save_student(family, own=True, back=url_for("classes.families.mine"))


def _remove_student(family, *, back: str):
    """Take a child out of the family (leaving a class needs nobody's approval)."""
    form = forms.DecideForm()
    if not form.validate_on_submit():
        abort(400)
    student = _student_of(family, form.target.data)
    name = student.first_name
    families.remove_student(family, student)
    db.session.commit()
    flash(_("%(name)s is no longer listed in the family.", name=name), "success")
    return redirect_after_post(back)


@bp.route("/mine/students/remove", methods=["POST"])
@member
def remove_my_student():
    """Take one of my children off the family's list."""
    family = _own_family()
    if not families.may_edit_own():
        abort(403)
    return _remove_student(family, back=url_for("classes.families.mine"))


@bp.route("/mine/code", methods=["POST"])
@member
def rotate_my_code():
    """Make a new family invitation code; the old one stops working."""
    family = _own_family()
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    families.rotate_code(family)
    db.session.commit()
    flash(_("Your family has a new invitation code. The old one no longer works."), "success")
    return redirect_after_post(url_for("classes.families.mine"))


@bp.route("/mine/guardians/<any(approve, reject):decision>", methods=["POST"])
@member
def decide_guardian(decision: str):
    """An approved guardian lets a second guardian into the family (and the school), or not."""
    family = _own_family()
    form = forms.DecideForm()
    if not form.validate_on_submit():
        abort(400)
    waiting = families.waiting_guardian(family, optional_id(form.target.data))
    if waiting is None:
        abort(404)
    if decision == "approve" and not waiting.user.active:
        flash(str(lifecycle.CLOSED_ACCOUNT), "error")  # a page opened before they closed their account
        return redirect_after_post(url_for("classes.families.mine"))
    if decision == "approve":
        done = lifecycle.approve(waiting)
    else:
        done = lifecycle.reject(waiting, "A guardian of the family did not recognise this request.")
    if not done:
        abort(404)
    outcome = "approved" if decision == "approve" else "rejected"
    audit.record(f"guardian.{outcome}", target=family.name)
    db.session.commit()
    if outcome == "approved":
        flash(_("%(name)s: approved. They have been told by email.", name=waiting.user.name), "success")
    else:
        flash(_("%(name)s: rejected. They have been told by email.", name=waiting.user.name), "success")
    return redirect_after_post(url_for("classes.families.mine"))


# --- the family editor (families.manage) -----------------------------------------------------


@bp.route("/")
@requires("families.manage")
def index():
    """Every family, by name, to open in the editor."""
    q = request.args.get("q", "").strip()[:100]
    page_arg = request.args.get("page", "")
    page = int(page_arg) if re.fullmatch(r"[0-9]{1,5}", page_arg) else 1
    return render(
        "classes/families.html",
        block="results",
        target="family-results",
        q=q,
        result=families.list_families(q, page),
    )


@bp.route("/<int:family_id>")
@requires("families.manage")
def edit(family_id: int):
    """One family in the editor: name, children and classes (changes apply at once)."""
    return _family_page(or_404(families.get_family(family_id)), own=False)


@bp.route("/<int:family_id>/students", methods=["POST"])
@requires("families.manage")
def save_student(family_id: int):
    """Add or change a child of any family."""
    family = or_404(families.get_family(family_id))
    return _save_student(family, own=False, back=url_for("classes.families.edit", family_id=family.id))


@bp.route("/<int:family_id>/students/remove", methods=["POST"])
@requires("families.manage")
def remove_student(family_id: int):
    """Take a child off any family's list."""
    family = or_404(families.get_family(family_id))
    return _remove_student(family, back=url_for("classes.families.edit", family_id=family.id))


@bp.route("/<int:family_id>/name", methods=["POST"])
@requires("families.manage")
def rename(family_id: int):
    """Change a family's name."""
    family = or_404(families.get_family(family_id))
    form = forms.FamilyNameForm()
    if form.validate_on_submit():
        families.rename_family(family, form.name.data)
        db.session.commit()
        flash(_("The family's name is saved."), "success")
        return redirect_after_post(url_for("classes.families.edit", family_id=family.id))
    return _family_page(family, own=False, status=400, name_form=form)


# --- class changes in the approval queue (members.approve) ---------------------------------


@bp.route("/changes/<any(approve, reject):decision>", methods=["POST"])
@requires("members.approve")
def decide_change(decision: str):
    """Approve or reject a class change in place (htmx), or from a plain form."""
    form = forms.DecideForm()
    if not form.validate_on_submit():
        abort(400)
    change = families.waiting_change(optional_id(form.target.data))
    if change is None or not families.decide_change(change, decision == "approve"):
        abort(404)
    db.session.commit()
    outcome = "approved" if decision == "approve" else "rejected"
    if wants_fragment(f"change-{change.id}"):
        return render_template("classes/partials/_change_decided.html", change=change, outcome=outcome)
    flash(_("Class change approved.") if outcome == "approved" else _("Class change rejected."), "success")
    return redirect_after_post(url_for("members.pending"))
