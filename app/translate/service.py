"""Machine translation of an announcement into a recipient's language, asked once and kept.

``machine_translation(message, locale)`` is what the mail layer calls in the worker, once per
message and language: the first call asks the service (one HTTP call: the subject and the
HTML body as a list, ``format: "html"``) and keeps the answer in ``MessageTranslation``; every
later call (the next batch, another worker) reads the kept row. A refusal for good (400, 403)
is kept too (status "failed" with its reason). Any other failure (429, 5xx, a timeout, an
unreadable answer) is kept as "retry" until it lapses (the service's Retry-After, else
RETRY_SECONDS, kept in ``retry_after``): a service that is down costs one timeout per message
and language for a while, not one per batch, a later batch asks again, and the original goes
out in the meantime.

The caller's transaction is committed before the call and the answer right after it: nothing
written stays uncommitted (locks on SQLite, an idle transaction on PostgreSQL) while the
service is waited on for up to TRANSLATE_TIMEOUT.

What the service returns is re-sanitised with the allowlist of ``render_markdown``: a
translation service is another party, and must not be able to put markup into our mail.
"""

from __future__ import annotations

import html
import logging
from datetime import timedelta
from html.parser import HTMLParser

import nh3
from flask import current_app
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.extensions import db
from app.models import MailMessage, MessageTranslation
from app.models.base import utcnow
from app.translate.client import TranslateClient, TranslateFailure

log = logging.getLogger(__name__)

OK = "ok"
FAILED = "failed"  # refused for good: never asked again
RETRY = "retry"  # failed for now: asked again once its retry_after has passed
# A bad request, a refused key, no such endpoint, a text too long: asking again changes nothing.
PERMANENT = frozenset({400, 403, 404, 413})
RETRY_SECONDS = 600.0  # how long a temporary failure is kept when the service names no Retry-After
MIN_RETRY_SECONDS, MAX_RETRY_SECONDS = 60.0, 3600.0
SUBJECT_MAX = 250  # MessageTranslation.subject
ERROR_MAX = 500  # MessageTranslation.error


def machine_translation(message: MailMessage, locale: str) -> MessageTranslation | None:
    """The kept or new translation of ``message`` into ``locale`` (status "ok"), or None.

    None when TRANSLATE_URL is not set, when ``locale`` is the message's own language, when the
    message has nothing to translate, or when the service failed (now, for good on an earlier
    batch, or for now on a batch not long ago). Never raises for the service's failures; the
    caller sends the original then. Commits the caller's transaction before the call.
    """
    source = message.language or "en"
    if locale == source or not current_app.config.get("TRANSLATE_URL"):
        return None
    kept = _kept(message.id, locale)
    if kept is not None and not _lapsed(kept):
        return kept if kept.status == OK else None
    body_html = _body_html(message)
    if body_html is None:
        return None
    try:
        client = TranslateClient.from_config(current_app.config)
    except RuntimeError as error:  # a wrong setting, not this message's fault: nothing is kept
        log.warning("translation of message %s is off: %s", message.id, error)
        return None
    if client is None:
        return None
    message_id, original_subject = message.id, message.subject
    texts = [html.escape(original_subject, quote=False), body_html]
    # No write may stay open while the service is waited on: another writer would find SQLite
    # locked, and PostgreSQL would hold the rows for as long as the call takes.
    db.session.commit()
    try:
        subject, translated_html = client.translate(texts, source=source, target=locale, format="html")
    except TranslateFailure as failure:
        log.warning("message %s not translated to %s: %s", message_id, locale, failure.reason)
        _keep(message_id, locale, **_failed(failure))
        db.session.commit()
        return None
    safe_html = sanitised(translated_html)
    _keep(
        message_id,
        locale,
        status=OK,
        subject=_plain(subject)[:SUBJECT_MAX] or original_subject,
        body_html=safe_html,
        body_text=html_to_text(safe_html),
    )
    db.session.commit()
    row = _kept(message_id, locale)
    return row if row is not None and row.status == OK else None


def will_ask_again(message_id: int, locale: str) -> bool:
    """Did the service fail for now on this message and language (a later batch may ask again)?"""
    if not current_app.config.get("TRANSLATE_URL"):
        return False
    kept = _kept(message_id, locale)
    return kept is not None and kept.status == RETRY


def _failed(failure: TranslateFailure) -> dict:
    """The row kept for a failure: for good when the service refused the request, else for a while."""
    error = failure.reason[:ERROR_MAX]
    if failure.status in PERMANENT:
        return {"status": FAILED, "error": error}
    wait = failure.retry_after if failure.retry_after is not None else RETRY_SECONDS
    # A service's Retry-After is its word, within reason: not every batch, not never again.
    wait = min(max(wait, MIN_RETRY_SECONDS), MAX_RETRY_SECONDS)
    return {"status": RETRY, "error": error, "retry_after": utcnow() + timedelta(seconds=wait)}


def _lapsed(kept: MessageTranslation) -> bool:
    """A temporary failure whose time has passed: the service may be asked again."""
    return kept.status == RETRY and kept.retry_after is not None and kept.retry_after <= utcnow()


def sanitised(fragment: str) -> str:
    """HTML from elsewhere cut down to what ``render_markdown`` itself lets through."""
    from app.messages import services  # here: app.mail imports this module, and messages imports mail

    return nh3.clean(
        fragment,
        tags=services.ALLOWED_TAGS,
        attributes={"a": {"href"}},
        attribute_filter=services._only_absolute_links,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    )


def _body_html(message: MailMessage) -> str | None:
    """The announcement's body as the email shows it: its Markdown rendered, or the kept HTML."""
    from app.messages import services

    if message.source_markdown:
        return str(services.render_markdown(message.source_markdown))
    context = message.render_context or {}
    body = context.get("body_html")
    return str(body) if body else None


def _kept(message_id: int, locale: str) -> MessageTranslation | None:
    """The kept answer for this message and language, if any."""
    return db.session.scalar(
        select(MessageTranslation).where(
            MessageTranslation.message_id == message_id, MessageTranslation.locale == locale
        )
    )


def _keep(message_id: int, locale: str, **values) -> None:
    """Insert the answer unless another worker kept one first (its row wins; no savepoint needed).

    INSERT ... ON CONFLICT DO NOTHING on the (message_id, locale) key, as the delivery counts
    are kept: a savepoint's RELEASE would commit on its own under pysqlite. A lapsed temporary
    failure gives way to the new answer (only while it is still the lapsed one).
    """
    lapsed = delete(MessageTranslation).where(
        MessageTranslation.message_id == message_id,
        MessageTranslation.locale == locale,
        MessageTranslation.status == RETRY,
        MessageTranslation.retry_after <= utcnow(),
    )
    db.session.execute(lapsed.execution_options(synchronize_session=False))
    dialect = db.session.get_bind().dialect.name
    insert_ = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert_(MessageTranslation).values(message_id=message_id, locale=locale, **values)
    db.session.execute(statement.on_conflict_do_nothing(index_elements=["message_id", "locale"]))


def _plain(fragment: str) -> str:
    """Text of an HTML fragment (a translated subject): tags dropped, entities decoded, one line."""
    return " ".join(html.unescape(nh3.clean(fragment, tags=set())).split())


_BLOCKS = {"p", "h2", "h3", "blockquote", "ul", "ol"}


class _TextMaker(HTMLParser):
    """Plain text of sanitised HTML for the text/plain part: paragraphs, list markers, link targets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.lists: list[list[int]] = []  # per open list: [is ordered, items so far]
        self.href: str | None = None
        self.link_text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in _BLOCKS:
            self.parts.append("\n\n")
        if tag == "br":
            self.parts.append("\n")
        elif tag in ("ul", "ol"):
            self.lists.append([tag == "ol", 0])
        elif tag == "li":
            marker = "- "
            if self.lists:
                self.lists[-1][1] += 1
                if self.lists[-1][0]:
                    marker = f"{self.lists[-1][1]}. "
            self.parts.append("\n" + marker)
        elif tag == "a":
            self.href = dict(attrs).get("href")
            self.link_text = []

    def handle_endtag(self, tag):
        if tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        if tag in _BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a" and self.href:
            if " ".join("".join(self.link_text).split()) != self.href:
                self.parts.append(f" ({self.href})")
            self.href = None

    def handle_data(self, data):
        text = " ".join(data.split())
        if not text:
            self.parts.append(" ")  # the space between two inline tags
            return
        if data[:1].isspace():
            text = " " + text
        if data[-1:].isspace():
            text += " "
        if self.href is not None:
            self.link_text.append(text)
        self.parts.append(text)


def html_to_text(fragment: str) -> str:
    """The text/plain body of a sanitised HTML body: blocks a blank line apart, lines trimmed."""
    maker = _TextMaker()
    maker.feed(fragment)
    maker.close()
    lines = [line.strip() for line in "".join(maker.parts).split("\n")]
    text, blank = [], False
    for line in lines:
        if line:
            text.append(line)
            blank = False
        elif text and not blank:
            text.append("")
            blank = True
    return "\n".join(text).strip()
