"""Forms for deciding on people who asked to join."""

from wtforms import SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from app.forms import GuardedForm
from app.lazytext import lazy_gettext as _l
from app.models import JoinNotices


class ApproveForm(GuardedForm):
    """Approve: nothing to fill in but the CSRF token."""


class RejectForm(GuardedForm):
    """Reject with a reason the person will read."""

    reason = TextAreaField(
        _l("Reason (sent to the person)"),
        validators=[
            DataRequired(_l("Say briefly why, so the person knows what to do next.")),
            Length(max=500, message=_l("Use at most 500 characters.")),
        ],
    )


class JoinNoticesForm(GuardedForm):
    """How this approver hears of join requests in this school."""

    mode = SelectField(_l("Emails about requests to join"), validate_choice=True)

    def __init__(self, *args, **kwargs):
        """Choices in the reader's language (labels are read when the form is made)."""
        super().__init__(*args, **kwargs)
        self.mode.choices = [SelectChoice(mode.value, mode.label) for mode in JoinNotices]
