"""Forms for deciding on people who asked to join."""

from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length

from app.forms import GuardedForm
from app.lazytext import lazy_gettext as _l


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
