"""Forms of the support blueprint: the signed-in Help form and the public contact form."""

from __future__ import annotations

from wtforms import BooleanField, EmailField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from app.auth.forms import EMAIL_CHECKS
from app.forms import GuardedForm
from app.lazytext import lazy_gettext as _l
from app.lazytext import lazy_ngettext

NAME_CHECKS = [
    DataRequired(_l("Enter your name.")),
    Length(max=120, message=_l("Use at most 120 characters.")),
]
MESSAGE_CHECKS = [
    DataRequired(_l("Tell us how we can help.")),
    Length(max=10_000, message=_l("Use at most 10,000 characters.")),
]
GRANT_HOURS = 72


class HelpForm(GuardedForm):
    """A signed-in person asks the platform's support team for help."""

    name = StringField(_l("Your name"), validators=NAME_CHECKS)
    email = EmailField(
        _l("Email address"),
        validators=EMAIL_CHECKS,
        description=_l("Our support team answers here."),
    )
    subject = StringField(
        _l("Subject"),
        validators=[
            DataRequired(_l("Give your question a short subject.")),
            Length(max=150, message=_l("Use at most 150 characters.")),
        ],
    )
    message = TextAreaField(_l("How can we help?"), validators=MESSAGE_CHECKS)
    # Shown, and honoured, only for people with support.grant in their current school.
    grant_access = BooleanField(
        lazy_ngettext(
            "Allow support to view my school's data for %(num)s hour to resolve this",
            "Allow support to view my school's data for %(num)s hours to resolve this",
            GRANT_HOURS,
        ),
        description=_l("Read-only, and only to resolve this request."),
    )
    # Shown to approved members: the request becomes a deletion request for their current school.
    deletion = BooleanField(
        _l("I ask for my data at this school to be deleted"),
        description=_l("Support checks it; the school's administrator confirms before anything is deleted."),
    )


class ContactForm(GuardedForm):
    """Anyone writes to us; ``website`` is a honeypot that people never see or fill in."""

    name = StringField(_l("Your name"), validators=NAME_CHECKS)
    email = EmailField(_l("Email address"), validators=EMAIL_CHECKS)
    message = TextAreaField(_l("Your message"), validators=MESSAGE_CHECKS)
    website = StringField(_l("Leave this field empty"))
