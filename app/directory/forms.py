"""The guardian's own directory details and who may see each."""

from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional, Regexp

from app.models import Visibility

CHOICES = [SelectChoice(v.value, v.label) for v in Visibility]


class MyDetailsForm(FlaskForm):
    """Phone, address and a visibility for each contact field."""

    phone = StringField(
        "Phone",
        validators=[
            Optional(),
            Length(max=40, message="Use at most 40 characters."),
            Regexp(r"^[0-9+().\s-]*$", message="Use digits, spaces and + ( ) - only."),
        ],
    )
    address = TextAreaField(
        "Address", validators=[Optional(), Length(max=300, message="Use at most 300 characters.")]
    )
    email_visibility = SelectField("Who sees your email address", choices=CHOICES)
    phone_visibility = SelectField("Who sees your phone number", choices=CHOICES)
    address_visibility = SelectField("Who sees your address", choices=CHOICES)
