"""Forms of the platform console: a new school, writing a policy version and publishing it."""

from __future__ import annotations

from flask_babel import gettext as _
from flask_babel import ngettext
from wtforms import BooleanField, EmailField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, ValidationError

from app.auth.forms import EMAIL_CHECKS
from app.forms import GuardedForm
from app.i18n import LANGUAGES, current_locale
from app.i18n.formatting import number
from app.lazytext import EscapedLazyString
from app.lazytext import lazy_gettext as _l
from app.platform import schools
from app.settings.forms import check_time_zone, language_field, school_name_field, time_zone_field

BODY_MAX = 100_000


def _at_most(limit: int) -> str:
    """'Use at most 100,000 characters.', the number written as the reader's language writes it."""
    return ngettext(
        "Use at most %(num)s character.", "Use at most %(num)s characters.", limit, num=number(limit)
    )


# Lazy, and built when shown: the number is formatted in the reader's locale, not at import.
BODY_TOO_LONG = EscapedLazyString(_at_most, BODY_MAX)


def _unix_newlines(value: str | None) -> str | None:
    """Store the text with Unix line ends, whatever the browser sent."""
    return value.replace("\r\n", "\n").replace("\r", "\n") if value else value


class PolicyVersionForm(GuardedForm):
    """A draft version: its text, what changed, and how people are told of a material change."""

    body = TextAreaField(
        _l("Policy text"),
        filters=[_unix_newlines],
        description=_l(
            "Markdown: ## headings, lists starting with -, **bold**, [links](https://example.org)."
        ),
        validators=[
            DataRequired(_l("Write the policy.")),
            Length(max=BODY_MAX, message=BODY_TOO_LONG),
        ],
        render_kw={"rows": 20},
    )
    summary = TextAreaField(
        _l("Summary of changes"),
        filters=[_unix_newlines],
        description=_l("Shown in the notice, the email and the history."),
        validators=[
            DataRequired(_l("Say what changed.")),
            Length(max=2000, message=_l("Use at most 2,000 characters.")),
        ],
        render_kw={"rows": 4},
    )
    language = SelectField(
        _l("Written in"),
        choices=[SelectChoice(code, name, render_kw={"lang": code}) for code, name in LANGUAGES.items()],
        default=current_locale,
        description=_l("Shown as written, marked with its language, on the pages of every language."),
    )
    material = BooleanField(
        _l("This is a material change"),
        description=_l("Existing users get 30 days' notice; otherwise it applies as soon as it is posted."),
    )
    notify_by_email = BooleanField(_l("Email every active account (an account notice)"))
    notify_by_notice = BooleanField(_l("Show a notice on the site"))

    def validate_material(self, field) -> None:
        """A material change must reach people somehow, or it could never take effect."""
        if field.data and not (self.notify_by_email.data or self.notify_by_notice.data):
            raise ValidationError(_("Choose email, a site notice, or both, for a material change."))


class PublishForm(GuardedForm):
    """Publishing is a button: the version's settings are on the draft."""


class NewSchoolForm(GuardedForm):
    """A new school and its first admin, who is invited by email."""

    name = school_name_field()
    code = StringField(
        _l("Invitation code"),
        description=_l("Families type it to ask to join. A free one is suggested; you may change it."),
        validators=[DataRequired(_l("Choose an invitation code."))],
    )
    timezone = time_zone_field(default="UTC")
    default_language = language_field(default="en")
    admin_name = StringField(
        _l("First admin's name"),
        validators=[
            DataRequired(_l("Enter the admin's name.")),
            Length(max=120, message=_l("Use at most 120 characters.")),
        ],
    )
    admin_email = EmailField(
        _l("First admin's email address"),
        description=_l("They get an email with a link to choose their password."),
        validators=[DataRequired(_l("Enter the admin's email address.")), *EMAIL_CHECKS[1:]],
    )

    def validate_code(self, field) -> None:
        field.data = (field.data or "").strip().upper()
        problem = schools.code_problem(field.data)
        if problem:
            raise ValidationError(problem)

    def validate_timezone(self, field) -> None:
        check_time_zone(field)
