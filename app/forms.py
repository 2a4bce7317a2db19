"""The base of every form: its CSRF token and a one-time submission key, rendered together.

``{{ form.csrf_token }}`` of a ``GuardedForm`` renders two hidden inputs: the CSRF token and a
fresh random submission key, new at every rendering (a list that renders one small form per
row gives each row its own key). The server claims the key before the view runs
(``app.submissions``), so a repeat of that very form answers the first result. Hand-written
forms get the same two inputs from the ``form_guard()`` template global.

Neither input has an ``id``: several forms on one page (the settings page has many) would
repeat it, and no label points at a hidden input.
"""

from __future__ import annotations

import re
import secrets

from flask_wtf import FlaskForm
from flask_wtf.csrf import _FlaskFormCSRF, generate_csrf
from markupsafe import Markup
from wtforms.csrf.core import CSRFTokenField

KEY_FIELD = "submission_key"
KEY_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}")  # what new_key makes: 24 random bytes, URL-safe


def new_key() -> str:
    """A submission key: 192 random bits, unguessable, URL-safe."""
    return secrets.token_urlsafe(24)


def guard_inputs(csrf_value: str) -> Markup:
    """The two hidden inputs every state-changing form carries (no ids: see the module)."""
    inputs = '<input type="hidden" name="csrf_token" value="{}"><input type="hidden" name="{}" value="{}">'
    return Markup(inputs).format(csrf_value, KEY_FIELD, new_key())  # noqa: S704 - a constant; format() escapes


def form_guard() -> Markup:
    """Template global for a hand-written form: the CSRF token and a fresh submission key."""
    return guard_inputs(generate_csrf())


class _GuardWidget:
    """Renders the CSRF field as the token plus a fresh key."""

    def __call__(self, field, **kwargs) -> Markup:
        return guard_inputs(field._value())


class GuardedCSRFTokenField(CSRFTokenField):
    """The CSRF field whose rendering also carries the form's one-time submission key."""

    widget = _GuardWidget()


class _GuardedCSRF(_FlaskFormCSRF):
    field_class = GuardedCSRFTokenField


class GuardedForm(FlaskForm):
    """Every form of the app derives from this (tests/test_idempotency.py walks them)."""

    class Meta:
        csrf_class = _GuardedCSRF
