"""The compose form: subject, Markdown body and an optional time to send at."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from zoneinfo import ZoneInfo

from flask_babel import LazyString, gettext
from wtforms import DateTimeLocalField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from app.forms import GuardedForm
from app.i18n import LANGUAGES, current_locale
from app.i18n.formatting import number
from app.lazytext import lazy_gettext
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


def _at_most(limit: int) -> LazyString:
    """ "Use at most N characters." with N written the reader's way (20,000 in English)."""
    # Length %-formats its message with min/max/length: the number is already in, so nothing is left.
    return lazy_gettext("Use at most %(num)s characters.", num=LazyString(number, limit))


class ComposeForm(GuardedForm):
    """Write an announcement or a newsletter; leave "Send at" empty to send now."""

    subject = StringField(
        lazy_gettext("Subject"),
        filters=[_one_line],
        validators=[
            DataRequired(lazy_gettext("Write a subject.")),
            Length(max=SUBJECT_MAX, message=_at_most(SUBJECT_MAX)),
        ],
    )
    body = TextAreaField(
        lazy_gettext("Message"),
        filters=[_unix_newlines],
        description=lazy_gettext(
            "Markdown works: **bold**, *italic*, lists starting with - or 1., "
            "[a link](https://example.org), ## headings and > quotes."
        ),
        validators=[
            DataRequired(lazy_gettext("Write your message.")),
            Length(max=BODY_MAX, message=_at_most(BODY_MAX)),
        ],
        render_kw={"rows": 14},
    )
    # The language the sender writes in: families who read another get a machine translation
    # below the original when the school has a translation service (app/translate).
    language = SelectField(
        lazy_gettext("Written in"),
        # Each language under its own name, marked as such for screen readers.
        choices=[SelectChoice(code, name, render_kw={"lang": code}) for code, name in LANGUAGES.items()],
        default=current_locale,
        description=lazy_gettext(
            "Families who read another language also get an automatic translation, "
            "when the school has one set up."
        ),
    )
    send_at = DateTimeLocalField(lazy_gettext("Send at"), format="%Y-%m-%dT%H:%M", validators=[Optional()])
    # A browser restoring the form from its history may restore the key: submission_fingerprint
    # tells an edited message from a repeated click. (HTML allows no autocomplete on a hidden input.)
    submission = HiddenField(filters=[_submission_key])

    def __init__(self, *args, zone: ZoneInfo, **kwargs):
        super().__init__(*args, **kwargs)
        self.zone = zone
        self.send_at_utc: datetime | None = None
        self.send_at.description = gettext(
            "Leave empty to send as soon as you press Send. The school's time zone: %(zone)s.", zone=zone.key
        )

    def validate_send_at(self, field) -> None:
        """In the school's time zone, in the future, at most 90 days ahead."""
        if field.data is None:  # something was typed, but not a date and time
            field.errors.clear()
            raise ValidationError(gettext("Enter a date and a time, like 2026-05-04 09:30."))
        moment, problem = schedule_time(field.data, self.zone)
        if problem:
            raise ValidationError(problem)
        self.send_at_utc = moment
