"""Writing email to the outbox, in the caller's transaction, sent by a job.

The message keeps its templates' context: the send job renders it in each recipient's language
(app/mail/rendering.py). The subject and bodies are also rendered now, once, in the message's
own language, for the web UI, the dev mailbox and lists.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Select, false, insert, literal, select

from app import i18n, jobs
from app.extensions import db
from app.identity import colours
from app.mail.rendering import ANNOUNCEMENT, render_email, render_in, storable_context
from app.models import Category, MailDelivery, MailMessage, School, User

__all__ = ["copy_deliveries", "queue_email", "render_email"]


def queue_email(
    template: str,
    recipients: Iterable[User] | Select,
    *,
    category: Category = Category.ADMINISTRATIVE,
    school_id: int | None = None,
    sensitive: bool = False,
    to_email: str | None = None,
    created_by_id: int | None = None,
    language: str | None = None,
    **context,
) -> MailMessage:
    """Write one message and a delivery per recipient; a job sends them after commit.

    ``recipients`` is a list of users, or a select of (user id, email) rows for audiences too
    large to load (every account on the platform): those rows are copied by the database.
    ``to_email`` overrides the address for a single recipient (an email change is
    confirmed at the new address before it becomes the account's).
    ``language`` is the one it was written in (default: see ``_language_of``).
    """
    if not isinstance(recipients, Select):
        recipients = list(recipients)  # read twice: for the language, then for the rows
    language = i18n.supported(language) or _language_of(template, recipients, school_id)
    if school_id is not None and "brand" not in context:
        context["brand"] = _brand_of(school_id)
    stored = storable_context(context)
    subject, text, html = render_in(language, template, category, context)
    message = MailMessage(
        school_id=school_id,
        category=category,
        template=template,
        subject=subject,
        text_body=text,
        html_body=html,
        sensitive=sensitive,
        created_by_id=created_by_id,
        language=language,
        render_context=stored,
    )
    db.session.add(message)
    db.session.flush()
    if isinstance(recipients, Select):
        copy_deliveries(message.id, recipients)
    else:
        _insert_deliveries(message, recipients, to_email)
    from app.mail.jobs import send_message

    jobs.enqueue(send_message, message.id, queue="mail")
    return message


def _language_of(template: str, recipients: list[User] | Select, school_id: int | None) -> str:
    """The message's own language: an announcement's is its author's (the page being used);
    other mail's is its one recipient's, else the school's default, else English."""
    if template == ANNOUNCEMENT:
        return i18n.current_locale()
    school = db.session.get(School, school_id) if school_id is not None else None
    school_language = school.default_language if school is not None else None
    if isinstance(recipients, list) and len(recipients) == 1:
        return i18n.mail_locale(recipients[0].language, school_language)
    return i18n.mail_locale(None, school_language)


def _brand_of(school_id: int) -> dict[str, str] | None:
    """The school's name and colour for the email layout's heading (kept with the message, so
    every language's rendering shows the brand it was sent under). No crest: see _layout.html."""
    school = db.session.get(School, school_id)
    if school is None:
        return None
    return {"name": school.name, "colour": school.brand_colour or colours.DEFAULT_BRAND}


def _insert_deliveries(message: MailMessage, recipients: Iterable[User], to_email: str | None) -> None:
    """One delivery row per user, in one multi-row INSERT.

    The ORM would write one statement per recipient on SQLite, and a school-wide send would
    cost a statement per family.
    """
    rows = [
        {
            "message_id": message.id,
            "user_id": u.id,
            "to_email": to_email or u.email,
            "address_fixed": bool(to_email),
        }
        for u in recipients
    ]
    if rows:
        db.session.execute(insert(MailDelivery), rows)


def copy_deliveries(message_id: int, people: Select) -> None:
    """One delivery row per (user id, email) row of ``people``, as INSERT ... SELECT in the database."""
    user_id, email = people.subquery().c
    rows = select(literal(message_id), user_id, email, false())
    columns = ["message_id", "user_id", "to_email", "address_fixed"]
    db.session.execute(insert(MailDelivery).from_select(columns, rows))
