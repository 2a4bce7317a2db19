"""Languages: which one a page or an email is in, and which way its text runs.

A page's language is, in order: ``?lang=`` on that request (an email's links carry it; never
stored), the signed-in person's choice, the visitor's choice kept in the server-side session,
the best match of the browser's Accept-Language, the school's default, English. Mail has no
browser: there the school's default comes right after the person's own choice. Mail is
rendered in its recipient's language (``mail_locale``), never the requester's.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import g, has_request_context, request, session
from flask_babel import get_locale
from flask_login import current_user

# Each language under its own name, as the selector shows it.
LANGUAGES: dict[str, str] = {"en": "English", "es": "Español", "ar": "العربية"}
DEFAULT = "en"
RIGHT_TO_LEFT = frozenset({"ar"})
SESSION_KEY = "lang"


def supported(code: object) -> str | None:
    """``code`` if it names a language we have, else None (anything typed into a URL or form)."""
    return code if isinstance(code, str) and code in LANGUAGES else None


def select_locale() -> str:
    """Flask-Babel's locale selector: the language of this request's page (see the module's order)."""
    if not has_request_context():
        return DEFAULT
    return (
        supported(request.args.get("lang"))
        or _account_language()
        or supported(session.get(SESSION_KEY))
        or request.accept_languages.best_match(LANGUAGES.keys())
        or _school_language()
        or DEFAULT
    )


def visitors_language() -> str | None:
    """What a visitor asked for (address, switch or browser), or None: kept on a new account.

    None when nothing matched, so a new member with no preference follows the school's default.
    """
    if not has_request_context():
        return None
    return (
        supported(request.args.get("lang"))
        or supported(session.get(SESSION_KEY))
        or request.accept_languages.best_match(LANGUAGES.keys())
    )


def _account_language() -> str | None:
    if current_user and current_user.is_authenticated:
        return supported(current_user.language)
    return None


def _school_language() -> str | None:
    school = g.get("school")
    return supported(school.default_language) if school is not None else None


def current_locale() -> str:
    """The code of the language being rendered now ("en", "es", "ar")."""
    return str(get_locale() or DEFAULT)


def direction(code: str) -> str:
    """``rtl`` for a right-to-left language, else ``ltr`` (the value of a ``dir`` attribute)."""
    return "rtl" if code in RIGHT_TO_LEFT else "ltr"


def text_direction() -> str:
    """The ``dir`` of what is being rendered now."""
    return direction(current_locale())


def mail_locale(user_language: str | None, school_language: str | None) -> str:
    """The language of one recipient's email: theirs, else their school's default, else English."""
    return supported(user_language) or supported(school_language) or DEFAULT


def group_by_locale(pairs: Iterable[tuple[object, str]]) -> dict[str, list]:
    """{locale: [item, ...]} from (item, locale) pairs, languages in first-seen order."""
    groups: dict[str, list] = {}
    for item, code in pairs:
        groups.setdefault(code, []).append(item)
    return groups
