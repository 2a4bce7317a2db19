"""Privacy policy versions: drafts, publishing, the notice email, effective dates and diffs.

Services flush and never commit; the route (or command) commits once.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import datetime

from flask import current_app, render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from markupsafe import Markup
from sqlalchemy import func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm.attributes import set_committed_value

from app.consent import analytics, disclosures
from app.extensions import db
from app.i18n import current_locale
from app.lazytext import lazy_gettext as _l
from app.mail import queue_email
from app.messages.services import render_markdown
from app.models import Category, DeliveryStatus, MailDelivery, MailMessage, User
from app.models.base import rowcount, utcnow
from app.models.consent import ConsentEvent, ConsentKind, PolicyVersion
from app.urls import external_url

# Our own words, shipped so the page is never empty; the operator publishes their policy over it.
# Being ours, they are translated (an operator's policy is shown as written, in its language).
# The text is rendered from this deployment's configuration (app/consent/disclosures.py): it
# names the outside services that are configured, the cookies the app sets and the figures the
# code keeps things for, so it says what this site really does.
DEFAULT_POLICY_TEMPLATE = "consent/default_policy.txt"


def placeholder_body() -> str:
    """The default policy's Markdown in the reader's language, for this configuration."""
    cookie_names = disclosures.cookie_names()
    text = render_template(
        DEFAULT_POLICY_TEMPLATE,
        product_name=current_app.config.get("PRODUCT_NAME", "Join Our Class"),
        processors=disclosures.processors(),
        retention=disclosures.retention(),
        cookie_names=cookie_names,
        analytics_cookies=", ".join(f"**{name}**" for name in cookie_names[1:]),
        analytics=analytics.enabled(),
        # Whole addresses: policy links must be http(s) (the announcements' rules), and
        # external_url needs no request (the seed-policy command).
        links={
            "cookies": external_url("consent.cookies"),
            "third_parties": external_url("consent.third_parties"),
            "contact": external_url("support.contact"),
        },
    )
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"  # sections left out leave no gaps


def placeholder_summary() -> str:
    """The placeholder version's summary in the reader's language."""
    return _("Placeholder text shipped with the software.")


def english_placeholder() -> tuple[str, str]:
    """(body, summary) of the placeholder as stored: in English, whoever's request stores it."""
    with force_locale("en"):
        return placeholder_body(), placeholder_summary()


CHANGE_TEMPLATE = "policy_change"  # the email telling every account of a new version


def render_body(version: PolicyVersion) -> Markup:
    """The version's Markdown as sanitised HTML (the same rules as announcements).

    Our placeholder is shown in the reader's language; an operator's text as they wrote it.
    """
    if is_placeholder(version):
        return render_markdown(placeholder_body())
    return render_markdown(version.body_markdown)


def is_placeholder(version: PolicyVersion) -> bool:
    """Is this version our shipped placeholder, word for word?"""
    return version.body_markdown == english_placeholder()[0]


def body_language(version: PolicyVersion) -> str:
    """The language its text is shown in: the reader's for our placeholder, else the operator's."""
    return current_locale() if is_placeholder(version) else version.language


def posted_versions() -> list[PolicyVersion]:
    """Every published version, newest first."""
    query = select(PolicyVersion).where(PolicyVersion.posted_at.is_not(None))
    return list(db.session.scalars(query.order_by(PolicyVersion.number.desc())))


def all_versions() -> list[PolicyVersion]:
    """Drafts and published versions, newest first (for platform administrators)."""
    return list(db.session.scalars(select(PolicyVersion).order_by(PolicyVersion.number.desc())))


def get_version(number: int) -> PolicyVersion | None:
    """The version with this number, draft or posted."""
    return db.session.scalar(select(PolicyVersion).where(PolicyVersion.number == number))


def newest_posted() -> PolicyVersion | None:
    """The most recently published version (what a newcomer accepts)."""
    query = select(PolicyVersion).where(PolicyVersion.posted_at.is_not(None))
    return db.session.scalar(query.order_by(PolicyVersion.number.desc()).limit(1))


def ensure_placeholder() -> PolicyVersion:
    """The newest posted version, publishing our placeholder as version 1 when there is none."""
    version = newest_posted()
    if version is not None:
        return version
    body, summary = english_placeholder()
    version = PolicyVersion(number=_next_number(), body_markdown=body, summary=summary, material=False)
    db.session.add(version)
    version.posted_at = utcnow()
    db.session.flush()
    return version


def _next_number() -> int:
    return (db.session.scalar(select(func.max(PolicyVersion.number))) or 0) + 1


def create_draft(
    *,
    body: str,
    summary: str,
    material: bool,
    email: bool,
    notice: bool,
    by: User | None,
    language: str = "en",
):
    """A new draft, numbered after the last version."""
    version = PolicyVersion(
        number=_next_number(),
        body_markdown=body,
        language=language,
        summary=summary,
        material=material,
        notify_by_email=material and email,
        notify_by_notice=material and notice,
        created_by_id=by.id if by else None,
    )
    db.session.add(version)
    db.session.flush()
    return version


def update_draft(
    version: PolicyVersion,
    *,
    body: str,
    summary: str,
    material: bool,
    email: bool,
    notice: bool,
    language: str | None = None,
):
    """Change a draft; a posted version is never changed (people agreed to its words).

    A conditional UPDATE: a publish that committed after this request read the draft makes it
    match no row, and the edit is refused rather than rewriting what was posted and emailed.
    """
    if version.is_posted:
        raise PublishRefused(str(POSTED_IS_FIXED))
    result = db.session.execute(
        update(PolicyVersion)
        .where(PolicyVersion.id == version.id, PolicyVersion.posted_at.is_(None))
        .values(
            body_markdown=body,
            language=language or version.language,
            summary=summary,
            material=material,
            notify_by_email=material and email,
            notify_by_notice=material and notice,
        )
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        raise PublishRefused(str(POSTED_IS_FIXED))


class PublishRefused(ValueError):
    """The draft cannot be posted yet; the message says why, in words for the administrator."""


POSTED_IS_FIXED = _l("A posted version cannot change. Write a new version instead.")


def publish(version: PolicyVersion) -> PolicyVersion:
    """Post a draft: a material change also posts the notice and/or emails every active account.

    A version posted while the previous one is still to come takes effect no earlier than it.
    """
    if version.is_posted:
        raise PublishRefused(_("Version %(number)s is already posted.", number=version.number))
    now = utcnow()
    previous = newest_posted()
    if previous is not None:
        refresh_dispatch(previous)
        if previous.effective_at is None:
            raise PublishRefused(
                _(
                    "Version %(number)s's email is still going out, so its date is not known yet. "
                    "Publish once it has gone out.",
                    number=previous.number,
                )
            )
        if previous.effective_at > now:
            version.not_before = previous.effective_at
    _claim_for_posting(version, now)
    if version.material and version.notify_by_notice:
        version.notice_posted_at = now
    if version.material and version.notify_by_email:
        _email_everyone(version)
    db.session.flush()
    return version


def _claim_for_posting(version: PolicyVersion, now: datetime) -> None:
    """Mark the draft posted only if it still is a draft, so a double-click emails nobody twice.

    A conditional UPDATE: on PostgreSQL the second request waits for the first to commit and
    then finds the row posted; it is refused, and its transaction (and email) rolled back.
    """
    result = db.session.execute(
        update(PolicyVersion)
        .where(PolicyVersion.id == version.id, PolicyVersion.posted_at.is_(None))
        .values(posted_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        raise PublishRefused(_("Version %(number)s is already posted.", number=version.number))
    set_committed_value(version, "posted_at", now)


def _email_everyone(version: PolicyVersion) -> None:
    """One administrative message to every active account's current address (the worker sends it)."""
    # Copied in the database: every account on the platform is too many to load in a request.
    recipients = select(User.id, User.email).where(User.active.is_(True))
    message = queue_email(
        CHANGE_TEMPLATE,
        recipients,
        category=Category.ADMINISTRATIVE,
        number=version.number,
        summary=version.summary,
        policy_url=external_url("main.privacy"),
        notice_url=external_url("consent.notice"),
        account_url=external_url("auth.account"),
    )
    version.email_message_id = message.id


def _note_emailed(version: PolicyVersion) -> None:
    """Once the dispatch finished: "told by email" for each person whose delivery was sent, at that time.

    A skipped delivery (deactivated meanwhile, dead address) told nobody, so it is not noted.
    """
    sent = select(
        MailDelivery.user_id,
        literal(version.id),
        literal(ConsentKind.NOTIFIED_EMAIL.value),
        MailDelivery.sent_at,
    ).where(
        MailDelivery.message_id == version.email_message_id,
        MailDelivery.status == DeliveryStatus.SENT,
        MailDelivery.user_id.is_not(None),
    )
    dialect = db.session.get_bind().dialect.name
    maker = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = maker(ConsentEvent).from_select(["user_id", "version_id", "kind", "created_at"], sent)
    db.session.execute(statement.on_conflict_do_nothing(index_elements=["user_id", "version_id", "kind"]))


UNFINISHED = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)


def refresh_dispatch(version: PolicyVersion) -> bool:
    """Record when the notice email finished going out, once no delivery is left to send.

    "Finished" is the time the last delivery was settled; the count is the deliveries sent.
    Returns True when it changed the version (the caller commits).
    """
    if not version.notify_by_email or version.email_message_id is None:
        return False
    if version.email_dispatch_finished_at is not None:
        return False
    waiting = db.session.scalar(
        select(func.count(MailDelivery.id)).where(
            MailDelivery.message_id == version.email_message_id, MailDelivery.status.in_(UNFINISHED)
        )
    )
    if waiting:
        return False
    last, sent = db.session.execute(
        select(
            func.max(MailDelivery.updated_at),
            func.count(MailDelivery.id).filter(MailDelivery.status == DeliveryStatus.SENT),
        ).where(MailDelivery.message_id == version.email_message_id)
    ).one()
    if last is None:  # nobody to write to: finished when written
        last = db.session.scalar(
            select(MailMessage.created_at).where(MailMessage.id == version.email_message_id)
        )
    if last is not None and last.tzinfo is None:  # SQLite's aggregate loses the column type
        last = datetime.fromisoformat(str(last)).replace(tzinfo=utcnow().tzinfo)
    version.email_dispatch_finished_at = last or utcnow()
    version.email_recipient_count = sent or 0
    _note_emailed(version)
    return True


def refresh_all_dispatches() -> bool:
    """refresh_dispatch for every version still waiting on its email (normally none or one)."""
    waiting = db.session.scalars(
        select(PolicyVersion).where(
            PolicyVersion.notify_by_email.is_(True),
            PolicyVersion.email_message_id.is_not(None),
            PolicyVersion.email_dispatch_finished_at.is_(None),
        )
    ).all()
    changed = [refresh_dispatch(v) for v in waiting]  # every one, not just up to the first change
    return any(changed)


@dataclass
class PolicyState:
    """What the public page shows: the version in force, those coming, and the history."""

    in_force: PolicyVersion | None
    upcoming: list[PolicyVersion]
    history: list[PolicyVersion]


def state(now: datetime | None = None) -> PolicyState:
    """The version in force for existing users now, the ones not yet in force, and all posted."""
    now = now or utcnow()
    history = posted_versions()
    in_force = next((v for v in history if v.effective_at is not None and v.effective_at <= now), None)
    upcoming = [v for v in history if v.effective_at is None or v.effective_at > now]
    if in_force is not None:
        upcoming = [v for v in upcoming if v.number > in_force.number]
    return PolicyState(in_force, list(reversed(upcoming)), history)


def version_for_user(user: User, now: datetime | None = None) -> PolicyVersion | None:
    """The version governing this person: in force for all, or newer if they joined after it was posted."""
    now = now or utcnow()
    accepted = set(
        db.session.scalars(
            select(ConsentEvent.version_id).where(
                ConsentEvent.user_id == user.id, ConsentEvent.kind == ConsentKind.ACCEPTED
            )
        )
    )
    for version in posted_versions():
        effective, posted = version.effective_at, version.posted_at
        if (effective is not None and effective <= now) or (posted is not None and posted <= user.created_at):
            return version
        if version.id in accepted:
            return version
    return None


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "remove", "context" or "hunk"
    text: str


def diff(old: PolicyVersion, new: PolicyVersion) -> list[DiffLine]:
    """A line diff of the two versions' Markdown (the template escapes every line)."""
    lines = difflib.unified_diff(
        old.body_markdown.splitlines(),
        new.body_markdown.splitlines(),
        fromfile=_("Version %(number)s", number=old.number),
        tofile=_("Version %(number)s", number=new.number),
        lineterm="",
        n=3,
    )
    result = []
    for line in lines:
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            result.append(DiffLine("hunk", "…"))
        elif line.startswith("+"):
            result.append(DiffLine("add", line[1:]))
        elif line.startswith("-"):
            result.append(DiffLine("remove", line[1:]))
        else:
            result.append(DiffLine("context", line[1:]))
    return result
