"""What this deployment tells people about itself, from its configuration and the code's own
constants: the outside services it uses (the third-party page and the default policy), the
cookies it sets (the cookies page and the default policy), and how long things are kept.

One source for each, so the pages and the policy cannot drift from what the app does.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from flask_babel import gettext as _

from app.consent import analytics

ZENDESK_SETTINGS = ("ZENDESK_SUBDOMAIN", "ZENDESK_EMAIL", "ZENDESK_API_TOKEN")
# What Google's script sets (the server sets no analytics cookie of its own).
ANALYTICS_COOKIES = ("_ga", "_ga_…")


@dataclass(frozen=True)
class Processor:
    """An outside service this deployment sends personal data to: what for, and what it gets."""

    key: str  # mailgun, analytics, zendesk, translate
    name: str
    purpose: str
    data: str


def mailgun_configured() -> bool:
    return current_app.config.get("MAIL_BACKEND") == "mailgun"


def zendesk_configured() -> bool:
    return all(current_app.config.get(name) for name in ZENDESK_SETTINGS)


def translate_configured() -> bool:
    return bool(current_app.config.get("TRANSLATE_URL"))


def processors() -> list[Processor]:
    """The outside services this deployment uses, from its configuration, in a fixed order."""
    found = []
    if mailgun_configured():
        found.append(
            Processor(
                "mailgun",
                "Mailgun",
                _("Delivers the emails the service sends."),
                _("Each recipient's email address, and the message itself."),
            )
        )
    if analytics.enabled():
        found.append(
            Processor(
                "analytics",
                "Google Analytics",
                _("Counts which kinds of page are visited, so we can improve them."),
                _(
                    "The page's pattern (never its real address, ids or names), your browser's "
                    "type, screen size and language, and a random visitor number in a cookie. "
                    "No account id; Google signals and ad personalisation are off; nothing is "
                    "sent if your browser asks not to be tracked."
                ),
            )
        )
    if zendesk_configured():
        found.append(
            Processor(
                "zendesk",
                "Zendesk",
                _("Handles support and contact requests."),
                _("Your name, your email address and what you wrote in the request."),
            )
        )
    if translate_configured():
        found.append(
            Processor(
                "translate",
                "LibreTranslate",
                _("Machine-translates announcements for families who read another language."),
                _("The text of the announcement only: no names, addresses or account details."),
            )
        )
    return found


def cookie_names() -> list[str]:
    """Every cookie this site sets: the session cookie, and Google's when analytics is on."""
    names = [current_app.config["SESSION_COOKIE_NAME"]]
    if analytics.enabled():
        names.extend(ANALYTICS_COOKIES)
    return names


@dataclass(frozen=True)
class Retention:
    """How long the code keeps each kind of short-lived thing (from the constants it uses)."""

    session_days: int
    anonymous_session_hours: int
    reset_link_hours: int
    email_change_hours: int
    invitation_days: int
    export_hours: int
    import_preview_days: int
    support_grant_max_hours: int
    help_grant_hours: int
    notice_days: int


def retention() -> Retention:
    """The figures the code runs on, read where the code reads them."""
    from app.consent.export import EXPORT_LIFETIME
    from app.imports.services import PREVIEW_DAYS
    from app.members.lifecycle import INVITATION_HOURS
    from app.models.consent import NOTICE_PERIOD
    from app.sessions import ANONYMOUS_LIFETIME
    from app.settings.support_access import MAX_GRANT_HOURS
    from app.support.forms import GRANT_HOURS

    config = current_app.config
    return Retention(
        session_days=config["PERMANENT_SESSION_LIFETIME"].days,
        anonymous_session_hours=int(ANONYMOUS_LIFETIME.total_seconds() // 3600),
        reset_link_hours=config["PASSWORD_RESET_HOURS"],
        email_change_hours=config["EMAIL_CHANGE_HOURS"],
        invitation_days=INVITATION_HOURS // 24,
        export_hours=int(EXPORT_LIFETIME.total_seconds() // 3600),
        import_preview_days=PREVIEW_DAYS,
        support_grant_max_hours=MAX_GRANT_HOURS,
        help_grant_hours=GRANT_HOURS,
        notice_days=NOTICE_PERIOD.days,
    )
