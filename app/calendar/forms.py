"""The event form: times are typed in the school's time zone and stored in UTC."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, Optional

TIME_FORMAT = "%Y-%m-%dT%H:%M"


class EventForm(FlaskForm):
    """Title, start, end, place, description, and whether it is for the school or one class."""

    title = StringField(
        "Title",
        validators=[
            DataRequired("Give the event a title."),
            Length(max=200, message="Use at most 200 characters."),
        ],
    )
    starts_at = DateTimeLocalField(
        "Starts",
        format=TIME_FORMAT,
        validators=[InputRequired("Enter when it starts.")],
    )
    ends_at = DateTimeLocalField(
        "Ends",
        format=TIME_FORMAT,
        validators=[InputRequired("Enter when it ends.")],
    )
    location = StringField(
        "Location", validators=[Optional(), Length(max=200, message="Use at most 200 characters.")]
    )
    description = TextAreaField(
        "Description", validators=[Optional(), Length(max=5000, message="Use at most 5,000 characters.")]
    )
    class_id = SelectField("For", coerce=str)

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        if self.starts_at.data and self.ends_at.data and self.ends_at.data < self.starts_at.data:
            self.ends_at.errors = [*self.ends_at.errors, "The end cannot be before the start."]
            valid = False
        return valid


class ConfirmForm(FlaskForm):
    """Only the CSRF token: delete, rotate, revoke."""
