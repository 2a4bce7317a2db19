"""Forms: acknowledging a notice, closing an account, asking for the school's export."""

from __future__ import annotations

from wtforms import BooleanField, PasswordField
from wtforms.validators import DataRequired

from app.forms import GuardedForm
from app.lazytext import lazy_gettext as _l


class AcknowledgeForm(GuardedForm):
    """'I have read it' on the notice banner."""


class CloseAccountForm(GuardedForm):
    """Closing one's own account: the password again, and a tick that says they mean it."""

    password = PasswordField(_l("Your password"), validators=[DataRequired(_l("Enter your password."))])
    confirm = BooleanField(
        _l("I understand I will no longer be able to sign in"),
        validators=[DataRequired(_l("Tick the box to confirm."))],
    )


class ExportForm(GuardedForm):
    """A school export is started with a button."""
