"""Writing email to the outbox: rendered now, in the caller's transaction, sent by a job."""

from __future__ import annotations

from collections.abc import Iterable

from flask import current_app, render_template
from sqlalchemy import Select, false, insert, literal, select

from app import jobs
from app.extensions import db
from app.models import Category, MailDelivery, MailMessage, User
from app.urls import external_url


def render_email(template: str, **context) -> tuple[str, str, str]:
    """Subject, text and HTML of ``templates/email/<template>.{subject,txt,html}``."""
    context.setdefault("product_name", current_app.config.get("PRODUCT_NAME", "Join Our Class"))
    subject = render_template(f"email/{template}.subject.txt", **context).strip()
    text = render_template(f"email/{template}.txt", **context)
    html = render_template(f"email/{template}.html", **context)
    return subject, text, html


def queue_email(
    template: str,
    recipients: Iterable[User] | Select,
    *,
    category: Category = Category.ADMINISTRATIVE,
    school_id: int | None = None,
    sensitive: bool = False,
    to_email: str | None = None,
    created_by_id: int | None = None,
    **context,
) -> MailMessage:
    """Write one message and a delivery per recipient; a job sends them after commit.

    ``recipients`` is a list of users, or a select of (user id, email) rows for audiences too
    large to load (every account on the platform): those rows are copied by the database.
    ``to_email`` overrides the address for a single recipient (an email change is
    confirmed at the new address before it becomes the account's).
    """
    if category.optional:
        # Filled per recipient at send time (Mailgun recipient variables).
        context.setdefault("unsubscribe_url", "%recipient.unsubscribe_url%")
        context.setdefault("preferences_url", external_url("unsubscribe.preferences"))
    subject, text, html = render_email(template, **context)
    message = MailMessage(
        school_id=school_id,
        category=category,
        template=template,
        subject=subject,
        text_body=text,
        html_body=html,
        sensitive=sensitive,
        created_by_id=created_by_id,
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
