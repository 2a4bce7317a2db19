"""Forms for classes, the staff directory and families."""

from __future__ import annotations

from wtforms import SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, Regexp

from app.forms import GuardedForm
from app.lazytext import lazy_gettext as _l
from app.models import SchoolClass

TEXT = Length(max=120, message=_l("Use at most 120 characters."))


class ClassForm(GuardedForm):
    """A class: its name, grade, school year, teachers and room parents."""

    name = StringField(_l("Class name"), validators=[DataRequired(_l("Enter the class's name.")), TEXT])
    grade = StringField(
        _l("Grade"),
        validators=[
            DataRequired(_l("Enter the grade.")),
            Length(max=20, message=_l("Use at most 20 characters.")),
        ],
    )
    school_year = StringField(
        _l("School year"),
        description=_l("For example 2026-27."),
        validators=[
            DataRequired(_l("Enter the school year.")),
            Regexp(r"^[0-9]{4}(-[0-9]{2,4})?$", message=_l("Write the year like 2026-27.")),
        ],
    )
    teachers = SelectMultipleField(_l("Teachers"), coerce=int)
    room_parents = SelectMultipleField(_l("Room parents"), coerce=int)


class StaffEntryForm(GuardedForm):
    """One person in the staff directory: their title and the classes they teach."""

    member = SelectField(_l("Person"), coerce=str, validators=[DataRequired(_l("Choose a person."))])
    title = StringField(
        _l("Title"),
        description=_l("For example Year 3 teacher, or School nurse."),
        validators=[Optional(), Length(max=100, message=_l("Use at most 100 characters."))],
    )
    classes = SelectMultipleField(_l("Classes taught"), coerce=int)


class RemoveStaffForm(GuardedForm):
    """Take someone out of the staff directory (title and classes taught)."""

    member = StringField(validators=[DataRequired()])


class ConfirmForm(GuardedForm):
    """Only the CSRF token: delete, rotate, approve."""


class StudentForm(GuardedForm):
    """A child of the family: name and classes."""

    student_id = StringField(validators=[Optional(), Regexp(r"^[0-9]{1,12}$")])
    first_name = StringField(
        _l("First name"),
        validators=[
            DataRequired(_l("Enter the child's first name.")),
            Length(max=80, message=_l("Use at most 80 characters.")),
        ],
    )
    last_name = StringField(
        _l("Last name"),
        validators=[
            DataRequired(_l("Enter the child's last name.")),
            Length(max=80, message=_l("Use at most 80 characters.")),
        ],
    )
    classes = SelectMultipleField(_l("Classes"), coerce=int)


class FamilyNameForm(GuardedForm):
    """The family's name as the directory shows it."""

    name = StringField(_l("Family name"), validators=[DataRequired(_l("Enter the family's name.")), TEXT])


class DecideForm(GuardedForm):
    """Approve or reject something identified in the body (never in the URL)."""

    target = StringField(validators=[DataRequired(), Regexp(r"^[0-9]{1,12}$")])


def member_choices(memberships) -> list[SelectChoice]:
    """Approved members as menu entries, by name."""
    return [SelectChoice(m.id, m.user.name) for m in sorted(memberships, key=lambda m: m.user.name.lower())]


def class_choices(classes: list[SchoolClass]) -> list[SelectChoice]:
    """Classes as menu entries: name, grade and year."""
    return [SelectChoice(c.id, f"{c.name} ({c.grade}, {c.school_year})") for c in classes]
