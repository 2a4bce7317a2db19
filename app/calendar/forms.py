"""The event form: times are typed in the school's time zone and stored in UTC."""

from __future__ import annotations

from datetime import datetime

from flask_babel import gettext as _
from wtforms import DateTimeLocalField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, Optional

from app.forms import GuardedForm
from app.lazytext import lazy_gettext as _l

TIME_FORMAT = "%Y-%m-%dT%H:%M"
# A school's events fall within these years. Far enough from datetime's limits (years 1 and
# 9999) that moving a time by any zone's offset to UTC, or back, cannot overflow.
EARLIEST = datetime(1900, 1, 1)
LATEST = datetime(2200, 12, 31, 23, 59)
OUT_OF_RANGE = _l("Choose a date between 1900 and 2200.")


class EventForm(GuardedForm):
    """Title, start, end, place, description, and whether it is for the school or one class."""

    title = StringField(
        _l("Title"),
        validators=[
            DataRequired(_l("Give the event a title.")),
            Length(max=200, message=_l("Use at most 200 characters.")),
        ],
    )
    starts_at = DateTimeLocalField(
        _l("Starts"),
        format=TIME_FORMAT,
        validators=[InputRequired(_l("Enter when it starts."))],
        render_kw={"min": EARLIEST.strftime(TIME_FORMAT), "max": LATEST.strftime(TIME_FORMAT)},
    )
    ends_at = DateTimeLocalField(
        _l("Ends"),
        format=TIME_FORMAT,
        validators=[InputRequired(_l("Enter when it ends."))],
        render_kw={"min": EARLIEST.strftime(TIME_FORMAT), "max": LATEST.strftime(TIME_FORMAT)},
    )
    location = StringField(
        _l("Location"), validators=[Optional(), Length(max=200, message=_l("Use at most 200 characters."))]
    )
    description = TextAreaField(
        _l("Description"),
        validators=[Optional(), Length(max=5000, message=_l("Use at most 5,000 characters."))],
    )
    class_id = SelectField(_l("For"), coerce=str)

    def validate(self, extra_validators=None) -> bool:
        """The fields' own checks, then years in range and an end no earlier than the start."""
        valid = super().validate(extra_validators)
        for field in (self.starts_at, self.ends_at):
            if field.data and not EARLIEST <= field.data <= LATEST:
                field.errors = [*field.errors, OUT_OF_RANGE]
                valid = False
        if self.starts_at.data and self.ends_at.data and self.ends_at.data < self.starts_at.data:
            self.ends_at.errors = [*self.ends_at.errors, _("The end cannot be before the start.")]
            valid = False
        return valid


class ConfirmForm(GuardedForm):
    """Only the CSRF token: delete, rotate, revoke."""
