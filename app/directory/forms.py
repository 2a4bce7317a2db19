"""The guardian's own directory details and who may see each."""

from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional, Regexp

from app.forms import GuardedForm
from app.lazytext import lazy_gettext as _l
from app.models import Visibility
from app.models.people import VISIBILITY_LABELS

CHOICES = [SelectChoice(v.value, VISIBILITY_LABELS[v]) for v in Visibility]


class MyDetailsForm(GuardedForm):
    """Phone, address and a visibility for each contact field."""

    phone = StringField(
        _l("Phone"),
        validators=[
            Optional(),
            Length(max=40, message=_l("Use at most 40 characters.")),
            Regexp(r"^[0-9+().\s-]*$", message=_l("Use digits, spaces and + ( ) - only.")),
        ],
    )
    address = TextAreaField(
        _l("Address"), validators=[Optional(), Length(max=300, message=_l("Use at most 300 characters."))]
    )
    email_visibility = SelectField(_l("Who sees your email address"), choices=CHOICES)
    phone_visibility = SelectField(_l("Who sees your phone number"), choices=CHOICES)
    address_visibility = SelectField(_l("Who sees your address"), choices=CHOICES)
