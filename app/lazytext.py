"""Lazy gettext whose text is escaped like any other string when a template prints it.

Flask-Babel's ``LazyString`` has an ``__html__`` that returns the text unescaped, so Jinja and
WTForms (labels, descriptions, option labels) take it as safe markup: "“<last name> family”"
would lose its "<last name>" to the browser, an apostrophe would print raw, and a translation
holding "<" or "&" would become markup. These give the same lazy strings, escaped when shown.
Import them as ``_l`` (``from app.lazytext import lazy_gettext as _l``); pybabel extracts
``_l``/``lazy_gettext``/``lazy_ngettext`` calls.
"""

from __future__ import annotations

from flask_babel import gettext, ngettext
from flask_babel.speaklater import LazyString
from markupsafe import Markup, escape


class EscapedLazyString(LazyString):
    """A LazyString that is text, not markup, to Jinja's autoescape and to ``markupsafe.escape``."""

    def __html__(self) -> Markup:
        """The translated text, escaped."""
        return escape(str(self))


def lazy_gettext(string: str, **variables) -> EscapedLazyString:
    """``gettext`` when the string is used (in the language of that moment), escaped in HTML."""
    return EscapedLazyString(gettext, string, **variables)


def lazy_ngettext(singular: str, plural: str, num: int, **variables) -> EscapedLazyString:
    """``ngettext`` when the string is used, escaped in HTML."""
    return EscapedLazyString(ngettext, singular, plural, num, **variables)
