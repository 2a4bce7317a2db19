"""Forms of the auth blueprint: joining, signing in, passwords and email."""

from __future__ import annotations

from flask_babel import gettext as _
from wtforms import (
    BooleanField,
    EmailField,
    FieldList,
    Form,
    FormField,
    PasswordField,
    SelectField,
    StringField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, EqualTo, InputRequired, Length, Optional

from app.auth import passwords
from app.forms import GuardedForm
from app.i18n import LANGUAGES
from app.lazytext import lazy_gettext as _l
from app.parsing import optional_id

CHILD_SLOTS = 4

EMAIL_CHECKS = [
    DataRequired(_l("Enter your email address.")),
    Email(_l("Enter an email address like name@example.com.")),
    Length(max=254, message=_l("An email address has at most 254 characters.")),
]


class ChildForm(Form):
    """One child at the school and their class (a row is optional, but both names if started).

    The class may stay empty: without JavaScript the menus list the school's classes only once
    the code is known, and a parent who knows the code still joins in one submit (the school
    places the child when it approves them)."""

    first_name = StringField(
        _l("First name"), validators=[Optional(), Length(max=80, message=_l("Use at most 80 characters."))]
    )
    last_name = StringField(
        _l("Last name"), validators=[Optional(), Length(max=80, message=_l("Use at most 80 characters."))]
    )
    class_id = SelectField(_l("Class"), coerce=str, validate_choice=False)

    def filled(self) -> bool:
        """Did the person start this row?"""
        return any((part.data or "").strip() for part in (self.first_name, self.last_name, self.class_id))

    def validate(self, extra_validators=None) -> bool:
        """A started row needs both names; a class, if picked, must be one from the menu."""
        valid = super().validate(extra_validators)
        if not self.filled():
            return valid
        for part, message in (
            (self.first_name, _("Enter the child's first name.")),
            (self.last_name, _("Enter the child's last name.")),
        ):
            if not (part.data or "").strip():
                part.errors = [*part.errors, message]
                valid = False
        # The menu only offers ids; anything else was typed by hand (or is "²", which int() refuses).
        if (self.class_id.data or "").strip() and self.chosen_class_id() is None:
            self.class_id.errors = [*self.class_id.errors, _("Choose the child's class from the list.")]
            valid = False
        return valid

    def chosen_class_id(self) -> int | None:
        """The picked class's id, or None if none is picked (or the menu's value is not a plain id)."""
        return optional_id(self.class_id.data)


class JoinForm(GuardedForm):
    """Sign up with the school's invitation code."""

    invite_code = StringField(
        _l("Invitation code"),
        validators=[DataRequired(_l("Enter the code your school gave you.")), Length(max=40)],
        description=_l("Your school's office or class teacher gives you this code."),
    )
    family_code = StringField(
        _l("Family code (only to join a family already at the school)"),
        validators=[Optional(), Length(max=40)],
        description=_l("A second parent or carer: the family's guardian finds it on their family page."),
    )
    name = StringField(
        _l("Your name"),
        validators=[
            DataRequired(_l("Enter your name.")),
            Length(max=120, message=_l("Use at most 120 characters.")),
        ],
    )
    email = EmailField(_l("Email address"), validators=EMAIL_CHECKS)
    password = PasswordField(
        _l("Choose a password"),
        validators=[InputRequired(_l("Choose a password."))],
        description=passwords.GUIDANCE,
    )
    children = FieldList(FormField(ChildForm), min_entries=CHILD_SLOTS, max_entries=CHILD_SLOTS)
    accept_policy = BooleanField(
        _l("I have read the privacy policy and agree to it"),
        validators=[DataRequired(_l("Please read and accept the privacy policy to join."))],
    )


class SignInForm(GuardedForm):
    """Email and password."""

    email = EmailField(_l("Email address"), validators=EMAIL_CHECKS)
    password = PasswordField(_l("Password"), validators=[InputRequired(_l("Enter your password."))])


class ForgotPasswordForm(GuardedForm):
    """Ask for a reset link."""

    email = EmailField(_l("Email address"), validators=EMAIL_CHECKS)


class NewPasswordForm(GuardedForm):
    """Choose a new password after following a reset link."""

    password = PasswordField(_l("New password"), validators=[InputRequired(_l("Choose a new password."))])
    confirm = PasswordField(
        _l("Type it again"),
        validators=[
            InputRequired(_l("Type the new password again.")),
            EqualTo("password", _l("The two passwords differ.")),
        ],
    )


class FirstPasswordForm(NewPasswordForm):
    """A person the school invited (an import) chooses their first password and accepts the policy."""

    accept_policy = BooleanField(
        _l("I have read the privacy policy and agree to it"),
        validators=[
            DataRequired(_l("Please read and accept the privacy policy to start using your account."))
        ],
    )


class ChangePasswordForm(NewPasswordForm):
    """Change the password; the current one is asked again."""

    current_password = PasswordField(
        _l("Current password"), validators=[InputRequired(_l("Enter your current password."))]
    )


class ChangeNameForm(GuardedForm):
    """The person's own name, as the directory and their school's pages show it."""

    name = StringField(
        _l("Your name"),
        filters=[lambda value: " ".join(value.split()) if isinstance(value, str) else value],
        validators=[
            DataRequired(_l("Enter your name.")),
            Length(max=120, message=_l("Use at most 120 characters.")),
        ],
    )


class ChangeEmailForm(GuardedForm):
    """Change the email address; the current password is asked again."""

    new_email = EmailField(_l("New email address"), validators=EMAIL_CHECKS)
    current_password = PasswordField(
        _l("Current password"), validators=[InputRequired(_l("Enter your current password."))]
    )


class JoinAnotherSchoolForm(GuardedForm):
    """A signed-in person joins one more school."""

    invite_code = StringField(
        _l("Invitation code"),
        validators=[DataRequired(_l("Enter the code the other school gave you.")), Length(max=40)],
    )


class LanguageForm(GuardedForm):
    """The language of one's pages and email; empty: the school's default."""

    language = SelectField(_l("Language for pages and email"), validate_choice=True)

    def __init__(self, *args, school_default: str, **kwargs):
        """Offer every language under its own name, and the school's default first."""
        super().__init__(*args, **kwargs)
        default_name = LANGUAGES.get(school_default, LANGUAGES["en"])
        self.language.choices = [
            SelectChoice("", _("The school's default (%(language)s)", language=default_name)),
            *(SelectChoice(code, name, render_kw={"lang": code}) for code, name in LANGUAGES.items()),
        ]


class ConfirmForm(GuardedForm):
    """A form with only its CSRF token: sign out, confirm an email change."""


def offer_classes(form: JoinForm, classes) -> None:
    """Fill every child's class menu with this school's classes (none until the code is known)."""
    empty = _("Choose a class") if classes else _("No class yet (enter the code first)")
    choices = [SelectChoice("", empty)] + [SelectChoice(str(c.id), f"{c.name} ({c.grade})") for c in classes]
    for child in form.children:
        child.class_id.choices = choices
