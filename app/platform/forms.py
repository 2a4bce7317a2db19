"""Forms of the platform console: writing a policy version and publishing it."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

BODY_MAX = 100_000


def _unix_newlines(value: str | None) -> str | None:
    """Store the text with Unix line ends, whatever the browser sent."""
    return value.replace("\r\n", "\n").replace("\r", "\n") if value else value


class PolicyVersionForm(FlaskForm):
    """A draft version: its text, what changed, and how people are told of a material change."""

    body = TextAreaField(
        "Policy text",
        filters=[_unix_newlines],
        description="Markdown: ## headings, lists starting with -, **bold**, [links](https://example.org).",
        validators=[
            DataRequired("Write the policy."),
            Length(max=BODY_MAX, message=f"Use at most {BODY_MAX:,} characters."),
        ],
        render_kw={"rows": 20},
    )
    summary = TextAreaField(
        "Summary of changes",
        filters=[_unix_newlines],
        description="Shown in the notice, the email and the history.",
        validators=[
            DataRequired("Say what changed."),
            Length(max=2000, message="Use at most 2,000 characters."),
        ],
        render_kw={"rows": 4},
    )
    material = BooleanField(
        "This is a material change",
        description="Existing users get 30 days' notice; otherwise it applies as soon as it is posted.",
    )
    notify_by_email = BooleanField("Email every active account (an account notice)")
    notify_by_notice = BooleanField("Show a notice on the site")

    def validate_material(self, field) -> None:
        """A material change must reach people somehow, or it could never take effect."""
        if field.data and not (self.notify_by_email.data or self.notify_by_notice.data):
            raise ValidationError("Choose email, a site notice, or both, for a material change.")


class PublishForm(FlaskForm):
    """Publishing is a button: the version's settings are on the draft."""
