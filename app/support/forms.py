"""Forms of the support blueprint: the signed-in Help form and the public contact form."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from app.auth.forms import EMAIL_CHECKS

NAME_CHECKS = [
    DataRequired("Enter your name."),
    Length(max=120, message="Use at most 120 characters."),
]
MESSAGE_CHECKS = [
    DataRequired("Tell us how we can help."),
    Length(max=10_000, message="Use at most 10,000 characters."),
]
GRANT_HOURS = 72


class HelpForm(FlaskForm):
    """A signed-in person asks the platform's support team for help."""

    name = StringField("Your name", validators=NAME_CHECKS)
    email = EmailField(
        "Email address",
        validators=EMAIL_CHECKS,
        description="Our support team answers here.",
    )
    subject = StringField(
        "Subject",
        validators=[
            DataRequired("Give your question a short subject."),
            Length(max=150, message="Use at most 150 characters."),
        ],
    )
    message = TextAreaField("How can we help?", validators=MESSAGE_CHECKS)
    # Shown, and honoured, only for people with support.grant in their current school.
    grant_access = BooleanField(
        f"Allow support to view my school's data for {GRANT_HOURS} hours to resolve this",
        description="Read-only, and only to resolve this request.",
    )
    # Shown to approved members: the request becomes a deletion request for their current school.
    deletion = BooleanField(
        "I ask for my data at this school to be deleted",
        description="Support checks it; the school's administrator confirms before anything is deleted.",
    )


class ContactForm(FlaskForm):
    """Anyone writes to us; ``website`` is a honeypot that people never see or fill in."""

    name = StringField("Your name", validators=NAME_CHECKS)
    email = EmailField("Email address", validators=EMAIL_CHECKS)
    message = TextAreaField("Your message", validators=MESSAGE_CHECKS)
    website = StringField("Leave this field empty")
