"""Classes blueprint: the classes, a class's page, and their administration (classes.manage)."""

from __future__ import annotations

import re

from flask import Blueprint, abort, flash, g, render_template, request, url_for
from flask_babel import gettext as _

from app.classes import forms, services
from app.classes.family_routes import bp as families_bp
from app.directory import services as directory
from app.directory.visibility import current_viewer
from app.extensions import db
from app.htmx import redirect_after_post, render
from app.lookup import or_404
from app.models import ClassRole
from app.parsing import optional_id
from app.permissions import requires

bp = Blueprint("classes", __name__, url_prefix="/classes")
bp.register_blueprint(families_bp)


@bp.route("/")
@requires("directory.view")
def index():
    """All classes of the current school."""
    return render_template("classes/index.html", classes=services.list_classes())


@bp.route("/<int:class_id>")
@requires("directory.view")
def show(class_id: int):
    """A class: its teachers, room parents and families."""
    school_class = or_404(services.get_class(class_id))
    # Plain-row cards, as the directory's search and export build them (bench/README.md).
    cards = directory.load_cards(services.class_family_ids(school_class), current_viewer(g.membership))
    return render_template(
        "classes/show.html",
        school_class=school_class,
        helpers=services.class_helpers(school_class),
        cards=cards,
    )


def _class_form(school_class=None) -> forms.ClassForm:
    """The class form with approved members offered as teachers and room parents."""
    form = forms.ClassForm(obj=school_class)
    choices = forms.member_choices(services.approved_members())
    form.teachers.choices = choices
    form.room_parents.choices = choices
    if school_class is not None and not form.is_submitted():
        form.teachers.data = services.helper_ids(school_class, ClassRole.TEACHER)
        form.room_parents.data = services.helper_ids(school_class, ClassRole.ROOM_PARENT)
    return form


def _save(form: forms.ClassForm, school_class=None):
    """Validate, save and redirect; or the form again with errors next to the fields."""
    valid = form.validate_on_submit()
    other_than = school_class.id if school_class is not None else None
    submitted_name = form.is_submitted() and form.name.data and form.school_year.data
    if submitted_name and services.name_taken(form.name.data, form.school_year.data, other_than=other_than):
        form.name.errors = [*form.name.errors, _("There is already a class of this name in that year.")]
        valid = False
    if valid:
        saved = services.save_class(
            school_class,
            name=form.name.data,
            grade=form.grade.data,
            school_year=form.school_year.data,
            teachers=form.teachers.data or [],
            room_parents=form.room_parents.data or [],
        )
        db.session.commit()
        flash(_("%(name)s is saved.", name=saved.name), "success")
        return redirect_after_post(url_for("classes.show", class_id=saved.id))
    status = 400 if form.errors else 200
    return render(
        "classes/edit.html",
        block="form",
        target="class-form",
        status=status,
        form=form,
        school_class=school_class,
        delete_form=forms.ConfirmForm(),
    )


@bp.route("/new", methods=["GET", "POST"])
@requires("classes.manage")
def create():
    """Create a class."""
    return _save(_class_form())


@bp.route("/<int:class_id>/edit", methods=["GET", "POST"])
@requires("classes.manage")
def edit(class_id: int):
    """Change a class: name, grade, year, teachers and room parents."""
    school_class = or_404(services.get_class(class_id))
    return _save(_class_form(school_class), school_class)


@bp.route("/<int:class_id>/delete", methods=["POST"])
@requires("classes.manage")
def delete(class_id: int):
    """Delete a class (its roster links, helpers and events go with it)."""
    school_class = or_404(services.get_class(class_id))
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    name = school_class.name
    services.delete_class(school_class)
    db.session.commit()
    flash(_("%(name)s is deleted.", name=name), "success")
    return redirect_after_post(url_for("classes.index"))


def _staff_page(status: int = 200, submitted: forms.StaffEntryForm | None = None):
    """The staff directory editor: one form per person, and one to add someone."""
    members = services.approved_members()
    classes = services.list_classes()
    entries = services.staff_entries()
    row_forms = {}
    for entry in entries:
        form = forms.StaffEntryForm(formdata=None, prefix=f"s{entry.membership.id}")
        form.member.data = str(entry.membership.id)
        form.title.data = entry.membership.title
        form.classes.data = entry.class_ids
        row_forms[entry.membership.id] = form
    add_form = forms.StaffEntryForm(formdata=None)
    if submitted is not None:
        # Keep what was typed, with its errors, in the form it came from.
        submitted_id = optional_id(submitted.member.data)
        if submitted_id in row_forms:
            row_forms[submitted_id] = submitted
        else:
            add_form = submitted
    for form in [add_form, *row_forms.values()]:
        form.member.choices = [("", _("Choose a person")), *forms.member_choices(members)]
        form.classes.choices = forms.class_choices(classes)
    return render(
        "classes/staff.html",
        block="content",
        target="main",
        status=status,
        entries=entries,
        row_forms=row_forms,
        add_form=add_form,
        remove_form=forms.RemoveStaffForm(formdata=None),
    )


@bp.route("/staff")
@requires("classes.manage")
def staff():
    """Edit the staff directory: titles and classes taught."""
    return _staff_page()


@bp.route("/staff", methods=["POST"])
@requires("classes.manage")
def save_staff():
    """Add someone to the staff directory, or change their title and classes."""
    prefix = request.form.get("form_prefix", "")
    form = forms.StaffEntryForm(prefix=prefix if re.fullmatch(r"s[0-9]{1,12}", prefix) else "")
    form.member.choices = None  # checked below against this school's approved members
    form.member.validate_choice = False
    form.classes.choices = forms.class_choices(services.list_classes())
    membership = None
    if form.validate_on_submit():
        member_id = optional_id(form.member.data)
        membership = services.approved_member(member_id) if member_id is not None else None
        if membership is None:
            form.member.errors.append(_("Choose a person from the list."))
        else:
            services.save_staff_entry(membership, form.title.data, form.classes.data or [])
            db.session.commit()
            flash(_("%(name)s is saved in the staff directory.", name=membership.user.name), "success")
            return redirect_after_post(url_for("classes.staff"))
    return _staff_page(400, form)


@bp.route("/staff/remove", methods=["POST"])
@requires("classes.manage")
def remove_staff():
    """Clear someone's title and classes taught (people in staff roles stay listed)."""
    form = forms.RemoveStaffForm()
    member_id = optional_id(form.member.data)
    if not form.validate_on_submit() or member_id is None:
        abort(400)
    membership = or_404(services.approved_member(member_id))
    services.save_staff_entry(membership, None, [])
    db.session.commit()
    flash(_("%(name)s's title and classes are cleared.", name=membership.user.name), "success")
    return redirect_after_post(url_for("classes.staff"))
