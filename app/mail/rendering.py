"""Email in its recipient's language: a message's templates rendered once per language at send time.

``queue_email`` keeps what the templates were given (``MailMessage.render_context``) and the
language the message was written in. The send job asks ``rendering_for(message, locale)`` for
each language among a batch's recipients: the first ask renders the templates under that
language and stores the result (``MailRendering``, committed), later batches and the digest
reuse it. Messages written before renderings existed have no context and send their stored
bodies. An announcement whose translation failed for now is rendered without it and not
stored, so a later batch may still get the translation.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from typing import Any

from babel import Locale
from flask import current_app, render_template
from flask_babel import force_locale, gettext
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db
from app.i18n import direction
from app.models import Category, MailMessage, MailRendering
from app.models.messaging import audience_text
from app.urls import external_url

log = logging.getLogger(__name__)

ANNOUNCEMENT = "announcement"
# Filled per recipient at send time (Mailgun recipient variables).
UNSUBSCRIBE_PLACEHOLDER = "%recipient.unsubscribe_url%"
# The context key listing which top-level values were Markup (JSON keeps only their text).
MARKUP_KEYS = "__markup__"


def render_email(template: str, **context) -> tuple[str, str, str]:
    """Subject, text and HTML of ``templates/email/<template>.{subject,txt,html}``."""
    context.setdefault("product_name", current_app.config.get("PRODUCT_NAME", "Join Our Class"))
    context.setdefault("lang", "en")
    context.setdefault("dir", direction(context["lang"]))
    subject = render_template(f"email/{template}.subject.txt", **context).strip()
    text = render_template(f"email/{template}.txt", **context)
    html = render_template(f"email/{template}.html", **context)
    return subject, text, html


def storable_context(context: dict[str, Any]) -> dict[str, Any]:
    """The templates' context as JSON can keep it; top-level Markup is remembered by name.

    Anything else JSON cannot hold faithfully (a lazy string, a date, an object) raises
    TypeError: frozen to text here it would be rendered in the wrong language or shape.
    """
    stored: dict[str, Any] = {}
    markup: list[str] = []
    for key, value in context.items():
        if isinstance(value, Markup):
            markup.append(key)
            value = str(value)
        stored[key] = _plain(value, key)
    if markup:
        stored[MARKUP_KEYS] = markup
    return stored


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON types, or TypeError naming the context key it came from."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Markup):
        raise TypeError(f"email context {where!r}: Markup is kept only as a top-level value")
    if isinstance(value, str):
        return str(value)  # a StrEnum becomes its value
    if isinstance(value, list | tuple):
        return [_plain(item, where) for item in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, where) for k, v in value.items()}
    raise TypeError(f"email context {where!r}: {type(value).__name__} cannot be stored as JSON")


def template_context(stored: dict[str, Any]) -> dict[str, Any]:
    """The stored context as the templates take it (Markup values marked safe again)."""
    context = {key: value for key, value in stored.items() if key != MARKUP_KEYS}
    for key in stored.get(MARKUP_KEYS, []):
        context[key] = Markup(context[key])  # noqa: S704 - it was Markup when the caller gave it
    return context


def render_in(
    locale: str, template: str, category: Category, context: dict[str, Any]
) -> tuple[str, str, str]:
    """Subject, text and HTML of the template in ``locale``, whatever the request's language is.

    Jobs run in-process inside the request's app context, where Flask-Babel has cached the
    requester's locale: it is forced here, never inherited.
    """
    values = dict(context)
    values.update(lang=locale, dir=direction(locale))
    if category.optional:
        values.setdefault("unsubscribe_url", UNSUBSCRIBE_PLACEHOLDER)
        values.setdefault("preferences_url", external_url("unsubscribe.preferences", lang=locale))
    with force_locale(locale):
        if values.get("audience_label"):  # stored in English ("Everyone at ..."), read in theirs
            values["audience_label"] = audience_text(values["audience_label"])
        return render_email(template, **values)


def rendering_for(message: MailMessage, locale: str) -> MailRendering:
    """The message in ``locale``: the stored rendering, else rendered now and stored (committed).

    Commits: call it with nothing of your own pending (a translation call may come first).
    """
    if message.render_context is None:
        return stored_bodies(message)  # written before renderings existed (or erased)
    found = _stored(message.id, locale)
    if found is not None:
        return found
    rendering = _render(message, locale)
    if not rendering.machine_translated and may_translate(message, locale) and _asks_again(message, locale):
        return rendering  # the translation failed for now: a later batch renders it again
    _keep(rendering)
    db.session.commit()
    # Two workers may render the same language at once (a retry beside a sweeper's run): the
    # insert let the first row stand, and both send that one.
    found = _stored(rendering.message_id, locale)
    if found is None:
        raise RuntimeError("the rendering just stored cannot be read back")
    return found


def rendering_or_fallback(message: MailMessage, locale: str) -> MailRendering:
    """The message in ``locale``; should that rendering fail (a catalogue entry with a renamed
    placeholder, a service answering in an unforeseen way), in the message's own language, else
    its stored bodies: one language's fault must not hold back its readers' mail."""
    try:
        return rendering_for(message, locale)
    except Exception as error:  # noqa: BLE001 - any failure of this language falls back
        db.session.rollback()  # nothing of the caller's is pending (see rendering_for): usable again
        _log_failure(message.id, locale, error)
    if locale != message.language and message.render_context is not None:
        try:
            return rendering_for(message, message.language)
        except Exception as error:  # noqa: BLE001 - the stored bodies are the last resort
            db.session.rollback()
            _log_failure(message.id, message.language, error)
    return stored_bodies(message)


def _log_failure(message_id: int, locale: str, error: Exception) -> None:
    """Log where rendering failed, without the error's text (it may quote a recipient's data)."""
    frame = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f"{frame[0].filename}:{frame[0].lineno}" if frame else "?"
    log.error(
        "message %s: rendering in %s failed (%s at %s); sent in its own language instead",
        message_id,
        locale,
        type(error).__name__,
        where,
    )


def stored_bodies(message: MailMessage) -> MailRendering:
    """The bodies stored on the message, in the language it was written in (unsaved)."""
    return MailRendering(
        message_id=message.id,
        locale=message.language,
        subject=message.subject,
        text_body=message.text_body,
        html_body=message.html_body,
    )


def _keep(rendering: MailRendering) -> None:
    """Insert the rendering unless another worker stored this language first (its row wins).

    INSERT ... ON CONFLICT DO NOTHING rather than a savepoint: pysqlite commits a savepoint's
    RELEASE on its own (app/members/lifecycle.py), which would commit the caller's writes too.
    """
    dialect = db.session.get_bind().dialect.name
    insert_ = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert_(MailRendering).values(
        message_id=rendering.message_id,
        locale=rendering.locale,
        subject=rendering.subject,
        text_body=rendering.text_body,
        html_body=rendering.html_body,
        machine_translated=rendering.machine_translated,
    )
    db.session.execute(statement.on_conflict_do_nothing(index_elements=["message_id", "locale"]))


def _asks_again(message: MailMessage, locale: str) -> bool:
    """Did the translation service fail for now on this announcement and language?"""
    from app.translate.service import will_ask_again  # only announcements need it

    return will_ask_again(message.id, locale)


def may_translate(message: MailMessage, locale: str) -> bool:
    """Is this an announcement to be read in a language other than the one it was written in?"""
    return (
        message.render_context is not None and message.template == ANNOUNCEMENT and locale != message.language
    )


def translating(message: MailMessage, locales: Iterable[str]) -> bool:
    """May rendering these languages wait on the translation service (configured, not rendered yet)?"""
    if not current_app.config.get("TRANSLATE_URL"):
        return False
    return any(may_translate(message, locale) and _stored(message.id, locale) is None for locale in locales)


def _stored(message_id: int, locale: str) -> MailRendering | None:
    """The rendering already stored for this message and language, if any."""
    query = select(MailRendering).where(MailRendering.message_id == message_id)
    return db.session.scalar(query.where(MailRendering.locale == locale))


def _render(message: MailMessage, locale: str) -> MailRendering:
    """A new (unsaved) rendering of the message in ``locale``; an announcement machine-translated
    when it was written in another language and a translation service answers."""
    context = template_context(message.render_context or {})
    translation = None
    if may_translate(message, locale):
        translation = _machine_translation(message, locale)
    if translation is not None:
        context["translation"] = {
            "subject": translation.subject or message.subject,
            "body_html": Markup(translation.body_html or ""),  # noqa: S704 - sanitised by the service
            "body": translation.body_text or "",
            "label": _translation_label(message.language, locale),
            "lang": message.language,
            "dir": direction(message.language),
        }
    subject, text, html = render_in(locale, message.template, message.category, context)
    return MailRendering(
        message_id=message.id,
        locale=locale,
        subject=subject[:250],
        text_body=text,
        html_body=html,
        machine_translated=translation is not None,
    )


def _machine_translation(message: MailMessage, locale: str):
    """The translation service's answer for this announcement and language, or None."""
    from app.translate.service import machine_translation  # only announcements need it

    found = machine_translation(message, locale)
    return found if found is not None and found.status == "ok" else None


def _translation_label(source: str, locale: str) -> str:
    """ "Automatic translation from Spanish..." in the reader's language, naming the original's."""
    language = Locale.parse(locale).languages.get(source, source)
    with force_locale(locale):
        return gettext(
            "Automatic translation from %(language)s. The original message is below.", language=language
        )
