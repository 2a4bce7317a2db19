"""Forms of the settings page: each section is one small form."""

from __future__ import annotations

from flask import g
from flask_babel import format_decimal
from flask_babel import gettext as _
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, DateField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from app.forms import GuardedForm
from app.i18n import LANGUAGES
from app.identity import colours
from app.lazytext import lazy_gettext as _l
from app.models import Role, Visibility
from app.models.people import VISIBILITY_LABELS
from app.settings import school, support_access

VISIBILITY_CHOICES = [SelectChoice(v.value, VISIBILITY_LABELS[v]) for v in Visibility]
APPROVAL_CHOICES = [
    SelectChoice(Role.STAFF.value, _l("Staff, admins and SuperAdmins")),
    SelectChoice(Role.ADMIN.value, _l("Admins and SuperAdmins")),
    SelectChoice(Role.SUPERADMIN.value, _l("SuperAdmins only")),
]


def school_name_field() -> StringField:
    """A school's name (the profile, and a new school in the platform console)."""
    return StringField(
        _l("School name"),
        validators=[
            DataRequired(_l("Enter the school's name.")),
            Length(max=200, message=_l("Use at most 200 characters.")),
        ],
    )


def time_zone_field(default: str | None = None) -> StringField:
    """A school's time zone by its IANA name, offered from the page's list of zones."""
    return StringField(
        _l("Time zone"),
        default=default,
        validators=[DataRequired(_l("Choose a time zone, e.g. Europe/London."))],
        description=_l("A name such as Europe/London or America/New_York; dates and reminders use it."),
        render_kw={"list": "time-zones"},
    )


def language_field(default) -> SelectField:
    """A school's default language, for everyone who has not chosen one of their own."""
    return SelectField(
        _l("Language"),
        choices=[SelectChoice(code, name, render_kw={"lang": code}) for code, name in LANGUAGES.items()],
        description=_l("Pages and email for everyone who has not chosen a language of their own."),
        default=default,
    )


def check_time_zone(field) -> None:
    """The typed zone, trimmed; refused unless the zone database knows it."""
    field.data = (field.data or "").strip()
    if not school.is_time_zone(field.data):
        raise ValidationError(_("We don't know this time zone. Pick one from the list, e.g. Europe/London."))


class ProfileForm(GuardedForm):
    """The school's name, time zone and default language."""

    name = school_name_field()
    timezone = time_zone_field()
    # A form posted without the language keeps the school's.
    default_language = language_field(default=lambda: g.school.default_language)

    def validate_timezone(self, field) -> None:
        check_time_zone(field)


class BrandColourForm(GuardedForm):
    """The school's colour, behind white text in the header and in email (AA contrast or refused)."""

    brand_colour = StringField(
        _l("Brand colour"),
        validators=[Optional(), Length(max=20, message=_l("Enter a colour such as #1d4ed8."))],
        description=_l(
            "A hex colour such as #1d4ed8. White text on it and links in it must be readable "
            "(WCAG AA, 4.5:1), so light colours are refused. Leave it empty for the standard colour."
        ),
        render_kw={"spellcheck": "false", "inputmode": "text", "placeholder": "#1d4ed8"},
    )

    def validate_brand_colour(self, field) -> None:
        colour = colours.parse_hex(field.data)
        if colour is None:
            raise ValidationError(_("Enter a colour as # and six hex digits, such as #1d4ed8."))
        ratio = colours.lowest_contrast(colour)
        if ratio < colours.AA_CONTRAST:
            raise ValidationError(
                _(
                    "%(colour)s has a contrast of only %(ratio)s:1 with white text and the page's "
                    "background; text needs at least 4.5:1 to be readable (WCAG AA). Choose a darker colour.",
                    colour=colour,
                    ratio=format_decimal(int(ratio * 100) / 100, format="0.00"),
                )
            )

    @property
    def colour(self) -> str | None:
        """The checked colour as #rrggbb, or None when the field was left empty."""
        return colours.parse_hex(self.brand_colour.data) if (self.brand_colour.data or "").strip() else None


class CrestForm(GuardedForm):
    """Upload the school's crest (checked by its content, not its name)."""

    crest = FileField(
        _l("Crest image"),
        validators=[FileRequired(_l("Choose an image file for the crest."))],
        description=_l(
            "PNG, JPEG or WebP, at most 512 KB, each side between 64 and 2048 pixels. "
            "Its hidden details (camera, place, dates) are removed before it is kept."
        ),
        render_kw={"accept": "image/png,image/jpeg,image/webp"},
    )


class InviteCodeForm(GuardedForm):
    """Rotate or switch off the invitation code: nothing to fill in."""


class JoiningForm(GuardedForm):
    """How families join and what they may do once in."""

    families_edit_own = BooleanField(_l("Families may add and edit their own family's members"))
    default_visibility = SelectField(
        _l("Who sees a new guardian's contact details until they choose"), choices=VISIBILITY_CHOICES
    )
    approval_role = SelectField(_l("Who approves people who ask to join"), choices=APPROVAL_CHOICES)


class PeopleSearchForm(GuardedForm):
    """Find members by name or email (a GET form: no CSRF)."""

    class Meta:
        csrf = False

    q = StringField(_l("Search people"), validators=[Optional(), Length(max=100)])


class RoleForm(GuardedForm):
    """A person's role; the choices stop at the actor's own role."""

    role = SelectField(_l("Role"), choices=[])


class ConfirmForm(GuardedForm):
    """A button that changes one thing (deactivate, reactivate, revoke, confirm)."""


class GrantForm(GuardedForm):
    """Let platform support read the school's data for a number of hours."""

    hours = IntegerField(
        _l("For how many hours"),
        default=72,
        validators=[
            DataRequired(_l("Enter a number of hours between 1 and 168.")),
            NumberRange(
                min=support_access.MIN_GRANT_HOURS,
                max=support_access.MAX_GRANT_HOURS,
                message=_l("Enter a number of hours between 1 and 168."),
            ),
        ],
        description=_l("Between 1 hour and 7 days (168 hours). You can revoke it at any time."),
    )


AUDIT_FIRST_YEAR, AUDIT_LAST_YEAR = 2000, 2999


class AuditFilterForm(GuardedForm):
    """Narrow the audit log (a GET form: no CSRF)."""

    class Meta:
        csrf = False

    action = SelectField(_l("Action"), choices=[], validators=[Optional()])
    since = DateField(_l("From"), validators=[Optional()])
    until = DateField(_l("Until"), validators=[Optional()])

    def validate_since(self, field) -> None:
        _check_audit_day(field.data)

    def validate_until(self, field) -> None:
        _check_audit_day(field.data)
        if field.data and self.since.data and field.data < self.since.data:
            raise ValidationError(_("Choose a day on or after the first day."))


def _check_audit_day(day) -> None:
    """Days the log can hold (and that the day after can be computed for)."""
    if day is not None and not (AUDIT_FIRST_YEAR <= day.year <= AUDIT_LAST_YEAR):
        raise ValidationError(
            _("Choose a day between %(first)s and %(last)s.", first=AUDIT_FIRST_YEAR, last=AUDIT_LAST_YEAR)
        )
