"""The compose form: subject, Markdown body and an optional time to send at."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from zoneinfo import ZoneInfo

from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, HiddenField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from app.messages.services import schedule_time

SUBJECT_MAX = 200
BODY_MAX = 20_000


def _one_line(value: str | None) -> str | None:
    """A subject is one line: runs of spaces, tabs and line breaks become one space."""
    return " ".join(value.split()) if value else value


_KEY = re.compile(r"[A-Za-z0-9_-]{16,32}")


def _submission_key(value: str | None) -> str | None:
    """The form's one-off key as the page made it, or None for anything else (never an error)."""
    return value if value and _KEY.fullmatch(value) else None


def new_submission_key() -> str:
    """A key for one rendering of the compose form (22 URL-safe characters)."""
    return secrets.token_urlsafe(16)


def _unix_newlines(value: str | None) -> str | None:
    return value.replace("\r\n", "\n").replace("\r", "\n") if value else value


class ComposeForm(FlaskForm):
    """Write an announcement or a newsletter; leave "Send at" empty to send now."""

    subject = StringField(
        "Subject",
        filters=[_one_line],
        validators=[
            DataRequired("Write a subject."),
            Length(max=SUBJECT_MAX, message=f"Use at most {SUBJECT_MAX} characters."),
        ],
    )
    body = TextAreaField(
        "Message",
        filters=[_unix_newlines],
        description=(
            "Markdown works: **bold**, *italic*, lists starting with - or 1., "
            "[a link](https://example.org), ## headings and > quotes."
        ),
        validators=[
            DataRequired("Write your message."),
            Length(max=BODY_MAX, message=f"Use at most {BODY_MAX:,} characters."),
        ],
        render_kw={"rows": 14},
    )
    send_at = DateTimeLocalField("Send at", format="%Y-%m-%dT%H:%M", validators=[Optional()])
    # autocomplete=off: a browser restoring the form from its history should not restore the key
    # (and if it does, submission_fingerprint tells an edited message from a repeated click).
    submission = HiddenField(filters=[_submission_key], render_kw={"autocomplete": "off"})

    def __init__(self, *args, zone: ZoneInfo, **kwargs):
        super().__init__(*args, **kwargs)
        self.zone = zone
        self.send_at_utc: datetime | None = None
        self.send_at.description = (
            f"Leave empty to send as soon as you press Send. The school's time zone: {zone.key}."
        )

    def validate_send_at(self, field) -> None:
        """In the school's time zone, in the future, at most 90 days ahead."""
        if field.data is None:  # something was typed, but not a date and time
            field.errors.clear()
            raise ValidationError("Enter a date and a time, like 2026-05-04 09:30.")
        moment, problem = schedule_time(field.data, self.zone)
        if problem:
            raise ValidationError(problem)
        self.send_at_utc = moment
