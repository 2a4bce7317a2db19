"""The suppression list as people see it, and lifting a suppression here and at the provider.

School admins see the suppressions of their school's members' addresses; platform admins see
every one. Lifting deletes the suppression at once and queues its removal from Mailgun's own
lists (``remove_from_provider``), which retries with a capped backoff until Mailgun has it: an
outage delays the removal, it never loses it. The sweeper re-enqueues a removal whose job was
lost, prunes remembered webhook tokens and forgets finished removals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, delete, or_, select

from app import audit, jobs, tenancy
from app.extensions import db
from app.mail.backends import PermanentFailure, TemporaryFailure, backend
from app.mail.provider_events import SUPPRESSING, lists_of
from app.models import Membership, MembershipStatus, Suppression, SuppressionLift, User, WebhookToken
from app.models.base import rowcount, utcnow

log = logging.getLogger(__name__)

PAGE = 50
MEMBERS = (MembershipStatus.APPROVED, MembershipStatus.DEACTIVATED)
# A removal whose job was lost (Redis down at enqueue) is picked up after this long.
LOST_AFTER = timedelta(minutes=2)

# Each reason in words: what happened, and what it stops.
REASONS: dict[str, tuple[str, str]] = {
    "bounce": ("Bounced: the receiving server says the address does not exist", "All email"),
    "complaint": ("Marked one of our emails as spam", "Optional email (account notices still go)"),
    "unsubscribed": ("Unsubscribed through Mailgun's link", "Optional email (account notices still go)"),
    "suppress-bounce": (
        "Mailgun refused to send: the address is on its bounce list",
        "Optional email (account notices are still tried)",
    ),
    "suppress-complaint": (
        "Mailgun refused to send: the address is on its spam complaint list",
        "Optional email (account notices are still tried)",
    ),
    "suppress-unsubscribe": (
        "Mailgun refused to send: the address is on its unsubscribe list",
        "Optional email (account notices are still tried)",
    ),
}


def reason_text(reason: str) -> str:
    """A reason in words (a reason we do not know is shown as it is stored)."""
    return REASONS.get(reason, (reason, ""))[0]


def stops_text(suppression: Suppression) -> str:
    """What the suppression stops, as the send job reads it (jobs._skip_reason)."""
    if suppression.blocks_administrative:
        return "All email"
    return REASONS.get(suppression.reason, ("", "Optional email (account notices still go)"))[1]


# -- reading the list ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """One suppression as a page shows it; ``name`` is the member's, on a school's page."""

    suppression: Suppression
    name: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of the list, newest first, and the id to continue before (None: the last page)."""

    rows: list[Listed]
    next_before_id: int | None


def _members_addresses():
    """Accounts with a membership of the bound school (the tenancy scope adds the school)."""
    return (
        select(User.email, User.name)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.status.in_(MEMBERS))
        .subquery()
    )


def school_page(before_id: int | None = None, limit: int = PAGE) -> Page:
    """Suppressions of addresses that belong to the current school's members, newest first."""
    members = _members_addresses()
    query = select(Suppression, members.c.name).join(members, members.c.email == Suppression.email)
    return _paged(query, before_id, limit, lambda row: Listed(row[0], row[1]))


def platform_page(before_id: int | None = None, limit: int = PAGE) -> Page:
    """Every suppression, newest first (the operator's view: addresses only, no schools)."""
    return _paged(select(Suppression), before_id, limit, lambda row: Listed(row[0]))


def _paged(query, before_id: int | None, limit: int, listed) -> Page:
    """One page of ``query`` by suppression id (one row more than a page says if another follows)."""
    if before_id is not None:
        query = query.where(Suppression.id < before_id)
    rows = [listed(row) for row in db.session.execute(query.order_by(Suppression.id.desc()).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1].suppression.id if more and rows else None)


def school_suppression(suppression_id: int) -> Listed | None:
    """A suppression of one of the current school's members (None for anyone else's)."""
    members = _members_addresses()
    row = db.session.execute(
        select(Suppression, members.c.name)
        .join(members, members.c.email == Suppression.email)
        .where(Suppression.id == suppression_id)
    ).first()
    return Listed(row[0], row[1]) if row else None


def any_suppression(suppression_id: int) -> Listed | None:
    """Any suppression by id (platform admins)."""
    found = db.session.scalar(select(Suppression).where(Suppression.id == suppression_id))
    return Listed(found) if found else None


def pending_lifts(*, school: bool) -> list[SuppressionLift]:
    """Lifts whose removal from the provider's lists is still under way (the school's members only)."""
    query = select(SuppressionLift).where(SuppressionLift.done_at.is_(None))
    if school:
        members = _members_addresses()
        query = query.join(members, members.c.email == SuppressionLift.email)
    return list(db.session.scalars(query.order_by(SuppressionLift.id.desc()).limit(PAGE)))


# -- lifting -----------------------------------------------------------------------------------


def lift(suppression: Suppression, by: User | None) -> SuppressionLift | None:
    """Lift a suppression now and queue its removal from the provider's lists (None if already lifted).

    The caller writes the audit entry and commits; the removal job runs after the commit.
    """
    email, reason = suppression.email, suppression.reason
    provider_lists = lists_of(f"{suppression.provider_lists},{SUPPRESSING.get(reason, ('',))[0]}")
    # DELETE, not session.delete: of two people lifting it at once, only one removes the row.
    deleted = db.session.execute(
        delete(Suppression)
        .where(Suppression.id == suppression.id)
        .execution_options(synchronize_session=False)
    )
    if rowcount(deleted) == 0:
        return None
    db.session.expunge(suppression)
    lifted = SuppressionLift(
        email=email,
        reason=reason,
        provider_lists=",".join(provider_lists),
        requested_by_id=by.id if by is not None else None,
        requested_at=utcnow(),
    )
    db.session.add(lifted)
    db.session.flush()
    jobs.enqueue(remove_from_provider, lifted.id, queue="mail")
    return lifted


def audit_in_schools_of(email: str, reason: str) -> int:
    """A platform admin's lift goes into the log of every school the address's owner belongs to."""
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None:
        return 0
    memberships = tenancy.memberships_of(user.id, (*MEMBERS, MembershipStatus.PENDING))
    for membership in memberships:
        with tenancy.bound(membership.school_id):
            audit.record(
                "suppression.lifted", target=user.name, school_id=membership.school_id, reason=reason
            )
            db.session.flush()
    return len(memberships)


@jobs.job
def remove_from_provider(lift_id: int) -> dict:
    """Remove a lifted address from the provider's lists; on failure try again later, never give up."""
    lifted = db.session.get(SuppressionLift, lift_id)
    if lifted is None or lifted.done_at is not None:
        return {"removed": False}
    lists = _lists_to_clear(lifted)
    try:
        if lists:
            backend().remove_suppression(lifted.email, lists)
    except (TemporaryFailure, PermanentFailure) as failure:
        # Even a refusal (a key being rotated) is retried: a lift asked for is never dropped.
        return _retry_later(lifted, failure.reason)
    lifted.done_at, lifted.last_error, lifted.next_attempt_at = utcnow(), None, None
    db.session.commit()
    log.info("suppression lift %s removed from the provider's %s", lift_id, ",".join(lists) or "lists (none)")
    return {"removed": True, "lists": lists}


def _lists_to_clear(lifted: SuppressionLift) -> list[str]:
    """The lift's lists, less those a newer suppression of the address has put it back on."""
    again = db.session.scalar(
        select(Suppression).where(
            Suppression.email == lifted.email, Suppression.created_at > lifted.requested_at
        )
    )
    keep = set(lists_of(again.provider_lists)) if again is not None else set()
    return [name for name in lists_of(lifted.provider_lists) if name not in keep]


def _retry_later(lifted: SuppressionLift, reason: str) -> dict:
    config = current_app.config
    lifted.attempts += 1
    delay = min(
        config["MAIL_RETRY_BASE_SECONDS"] * 2 ** (lifted.attempts - 1), config["MAIL_RETRY_MAX_SECONDS"]
    )
    lifted.last_error = reason[:300]
    lifted.next_attempt_at = utcnow() + timedelta(seconds=delay)
    lift_id = lifted.id
    db.session.commit()
    jobs.enqueue_in(delay, remove_from_provider, lift_id, queue="mail")
    log.warning(
        "suppression lift %s: the provider refused for now, retry in %.1fs (%s)", lift_id, delay, reason
    )
    return {"removed": False, "retry_in": delay}


# -- the sweeper -----------------------------------------------------------------------------------


@jobs.job
@jobs.repeating
def sweep_suppressions() -> dict:
    """Re-enqueue removals that are due or lost; forget old webhook tokens and finished lifts."""
    now = utcnow()
    due = db.session.scalars(
        select(SuppressionLift.id).where(
            SuppressionLift.done_at.is_(None),
            or_(
                SuppressionLift.next_attempt_at <= now,
                and_(
                    SuppressionLift.next_attempt_at.is_(None), SuppressionLift.requested_at < now - LOST_AFTER
                ),
            ),
        )
    ).all()
    for lift_id in due:
        jobs.enqueue(remove_from_provider, lift_id, queue="mail")
    tokens = prune_webhook_tokens()
    forgotten = rowcount(
        db.session.execute(
            delete(SuppressionLift).where(SuppressionLift.done_at < now - webhook_memory()),
        )
    )
    db.session.commit()
    return {"lifts": len(due), "tokens_pruned": tokens, "lifts_forgotten": forgotten}


def webhook_memory() -> timedelta:
    """How long a webhook token (or a finished lift) matters: the freshness window and the skew."""
    config = current_app.config
    return timedelta(seconds=config["WEBHOOK_MAX_AGE_SECONDS"] + config["WEBHOOK_MAX_AHEAD_SECONDS"])


def prune_webhook_tokens(now: datetime | None = None) -> int:
    """Forget tokens older than any webhook we would still accept (flushes; the caller commits)."""
    cutoff = (now or utcnow()) - webhook_memory()
    return rowcount(db.session.execute(delete(WebhookToken).where(WebhookToken.seen_at < cutoff)))
