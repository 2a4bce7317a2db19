"""Jobs that send the outbox, and the sweeper that finds work a lost job left behind.

``send_message`` claims pending deliveries in batches as large as the backend takes,
re-checks every recipient at send time (account active? still a member of the message's
school? category turned off or gathered into a digest? address suppressed?), sends the rest
in one provider call per batch and language (each recipient's, app/mail/rendering.py) and
records the outcome on each delivery. A delivery marked
sent is never sent again; one handed to the provider without a recorded answer is looked up
with the provider before it is sent again (claims, leases and batch ids: app/mail/claims.py).
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import and_, delete, inspect, or_, select, update

from app import i18n, jobs, sessions, submissions, tenancy
from app.extensions import db
from app.mail import claims, rendering
from app.mail.backends import Batch, OutcomeUnknown, PermanentFailure, Recipient, TemporaryFailure, backend
from app.mail.claims import Run
from app.mail.preferences import modes_for, suppressed
from app.mail.rendering import rendering_or_fallback
from app.models import (
    DeliveryMode,
    DeliveryStatus,
    MailDelivery,
    MailMessage,
    MailRendering,
    Membership,
    MembershipStatus,
    School,
    User,
)
from app.models.base import utcnow
from app.unsubscribe import tokens

log = logging.getLogger(__name__)

NOT_A_MEMBER = "no longer a member of this school"
SETTLED = (
    DeliveryStatus.SENT,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.FAILED,
    DeliveryStatus.DIGEST,
    DeliveryStatus.DIGESTED,
)


@jobs.job
def send_message(message_id: int) -> dict:
    """Send every pending delivery of one message, each at most once."""
    # The outbox holds every school's mail: find the message across schools, then act for its
    # school (or for none, for platform mail), as the request that wrote it did.
    with tenancy.unscoped():
        message = db.session.get(MailMessage, message_id)
    if message is None or message.cancelled_at is not None:
        return {"sent": 0}  # gone, or called off before its time (its deliveries were skipped)
    if message.fanout_after is not None:
        _fan_out(message)
        if message.cancelled_at is not None:
            return {"sent": 0}  # called off while its deliveries were being written
    if message.scheduled_for is not None and message.scheduled_for > utcnow():
        return {"sent": 0}  # scheduled: the sweeper enqueues this job again once the time has passed
    with tenancy.acting_for(message.school_id):
        counts = _send_pending(message)
    from app.consent.jobs import refresh_policy_dispatches
    from app.consent.policy import CHANGE_TEMPLATE

    if message.template == CHANGE_TEMPLATE:
        # A policy change's effective date counts from the moment its email finished going
        # out: note it as soon as a send settles rather than when someone next reads a page
        # (GETs write nothing). The repeating job catches a follow-up lost with Redis.
        jobs.enqueue(refresh_policy_dispatches)
        db.session.commit()
    return counts


def _fan_out(message: MailMessage) -> None:
    """A large announcement's deliveries are written here first, chunk by chunk (app/messages/fanout.py)."""
    from app.messages.fanout import fan_out

    with tenancy.acting_for(message.school_id):
        fan_out(message.id)
    db.session.refresh(message)


def _send_pending(message: MailMessage) -> dict:
    """Claim and send the message's pending deliveries batch by batch; erase a secret body after."""
    message_id = message.id
    counts: Counter[str] = Counter(sent=0, skipped=0, digest=0, failed=0, retry=0)
    # Deliveries are taken in id order and the job never looks back: a failure waits for its
    # retry time rather than being retried at once, and the run's cursor stays one number
    # however many batches there are (a list of tried ids grew with every recipient).
    run = claims.new_run()
    while claimed := claims.claim(message_id, run, limit=backend().max_batch):
        counts.update(_send_batch(message, claimed, run))
        db.session.commit()
    claims.release_message(message_id)
    _erase_sensitive_bodies(message)
    db.session.commit()
    # "recovered" (marked sent from the provider's events) appears only when there were any.
    result = {name: number for name, number in counts.items() if number or name != "recovered"}
    log.info("message %s: %s", message_id, result)
    return result


def _send_batch(message: MailMessage, claimed: list[MailDelivery], run: Run) -> Counter[str]:
    """Settle rows an earlier call left unanswered; sort the rest into skipped, digest and to-send;
    send the last in one call per language."""
    counts, claimed = _recover(message, claimed, run)
    if not claimed:
        db.session.commit()
        return counts
    users = _users_of(claimed)
    for delivery in claimed:
        user = _user_of(delivery, users)
        if user is not None and not delivery.address_fixed:
            delivery.to_email = user.email  # the address now, not when the message was written
    modes = modes_for(users, message.category)
    blocked = suppressed(d.to_email for d in claimed)
    members = _members_now(message, users)
    sendable = []
    set_aside: dict[str, list[int]] = defaultdict(list)
    now = utcnow()
    for delivery in claimed:
        # Bookkeeping of the attempt, written with the row: harmless even on a row this run has
        # just lost, unlike an outcome, which only the holder writes (claims.set_aside, _send).
        delivery.attempts += 1
        delivery.updated_at = now
        delivery.first_attempt_at = delivery.first_attempt_at or now
        reason = _skip_reason(message, delivery, users, modes, blocked, members)
        if reason:
            set_aside[reason].append(delivery.id)
        else:
            sendable.append(delivery)
    db.session.flush()
    for reason, ids in set_aside.items():
        if reason == "digest":
            counts["digest"] += claims.set_aside(ids, run, DeliveryStatus.DIGEST, None)
        else:
            counts["skipped"] += claims.set_aside(ids, run, DeliveryStatus.SKIPPED, reason)
    if not sendable:
        db.session.commit()
        return counts
    groups = _by_locale(message, sendable, users)
    translating = rendering.translating(message, groups)
    if translating or len(groups) > 1:
        groups = _hold_for_every_language(message, groups, run, translating)
    # Nothing stays pending while a language is rendered: its translation call may wait up to
    # TRANSLATE_TIMEOUT, and an open write would lock SQLite or hold rows on PostgreSQL. The
    # claims are committed rows under a lease: committing keeps them.
    db.session.commit()
    # Each language is its own batch, with its own id, rendered, handed over and settled on its
    # own: a crash between two of them leaves the later ones merely claimed (sent by the next
    # run), and one language failing to render falls back on the message's own.
    pending = list(groups.items())
    for index, (locale, group) in enumerate(pending):
        rendered = rendering_or_fallback(message, locale)  # may commit (a rendering kept)
        _reload(group)  # commits expired them: two queries, not two per recipient
        untried = [_id_of(d) for _, later in pending[index + 1 :] for d in later]
        result, stopped = _send(message, group, users, run, rendered, untried)
        counts.update(result)
        if stopped:
            break  # the provider is down: the later languages went back with this one
        db.session.commit()  # this language's outcome, before the next may wait on a translation
    return counts


def _id_of(delivery: MailDelivery) -> int:
    """A loaded row's id without loading it again (reading ``.id`` of an expired row does)."""
    identity = inspect(delivery).identity
    assert identity is not None, "a delivery of a claim is a persisted row"
    return identity[0]


def _reload(group: list[MailDelivery]) -> None:
    """Load one language's deliveries and their accounts again after a commit, in one query each.

    A commit expires every loaded row, and reading an expired row (even its id) loads it alone:
    a batch of 1,000 would cost 2,000 queries. The ids come from the identity map, unloaded.
    """
    ids = [_id_of(d) for d in group]
    db.session.scalars(select(MailDelivery).where(MailDelivery.id.in_(ids))).all()
    user_ids = {d.user_id for d in group if d.user_id is not None}
    if user_ids:
        db.session.scalars(select(User).where(User.id.in_(user_ids))).all()


def _hold_for_every_language(
    message: MailMessage, groups: dict[str, list[MailDelivery]], run: Run, translating: bool
) -> dict[str, list[MailDelivery]]:
    """Renew the claim for as long as the languages before the last may take (the translation
    service's timeout for each it may be asked about, a provider call for each batch), so the
    sweeper does not hand later languages' rows on meanwhile; the rows still held (committed)."""
    waits = sum(1 for locale in groups if rendering.may_translate(message, locale)) if translating else 0
    seconds = claims.lease_seconds() + waits * float(current_app.config.get("TRANSLATE_TIMEOUT", 0))
    lease = timedelta(seconds=seconds) + (len(groups) - 1) * claims.call_lease()
    held = set(claims.renew([d.id for g in groups.values() for d in g], run, lease))
    kept = {locale: [d for d in group if _id_of(d) in held] for locale, group in groups.items()}
    return {locale: group for locale, group in kept.items() if group}


def _by_locale(
    message: MailMessage, deliveries: list[MailDelivery], users: dict[int, User]
) -> dict[str, list[MailDelivery]]:
    """The deliveries by their recipient's language now: theirs, else the school's default.

    Platform mail has no school: it falls back on the message's own language, which is its one
    reader's (a digest: theirs or their school's) or English (a policy change to everyone).
    A message written before renderings existed has one body for all: one group.
    """
    if message.render_context is None:
        return {message.language: deliveries}
    school = db.session.get(School, message.school_id) if message.school_id is not None else None
    fallback = school.default_language if school is not None else message.language

    def language(delivery: MailDelivery) -> str:
        """One recipient's language; a delivery without an account takes the fallback."""
        user = _user_of(delivery, users)
        return i18n.mail_locale(user.language if user is not None else None, fallback)

    return i18n.group_by_locale((d, language(d)) for d in deliveries)


def _recover(message: MailMessage, claimed: list[MailDelivery], run: Run) -> tuple[Counter[str], list]:
    """Ask the provider about rows handed to it before without an answer; the rows left to send."""
    recovery = claims.recover(claimed, run)
    counts: Counter[str] = Counter(recovered=recovery.recovered)
    if recovery.waiting and recovery.wake_at is not None:
        waiting = claims.wait_for_events(recovery.waiting, recovery.wake_at, run)
        jobs.enqueue_in((recovery.wake_at - utcnow()).total_seconds(), send_message, message.id, queue="mail")
        counts["retry"] += waiting
    if recovery.unreadable:
        failure = TemporaryFailure(recovery.reason)
        ids = [d.id for d in recovery.unreadable]
        attempts = max(d.attempts for d in recovery.unreadable)
        counts.update(_retry_later(message.id, ids, run, failure, attempts, keep_batch=True))
    return counts, recovery.to_send


def _users_of(deliveries: list[MailDelivery]) -> dict[int, User]:
    """The accounts of a batch's recipients, by id, in one query."""
    ids = {d.user_id for d in deliveries if d.user_id is not None}
    if not ids:
        return {}
    return {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(ids)))}


def _user_of(delivery: MailDelivery, users: dict[int, User]) -> User | None:
    """The delivery's account among ``users``; None when it has none (deleted) or it is not there."""
    return users.get(delivery.user_id) if delivery.user_id is not None else None


def _members_now(message: MailMessage, users: dict[int, User]) -> set[int] | None:
    """Which of these people hold an approved membership of the message's school now (one query).

    Recipients were chosen when the message was written, but a scheduled announcement waits
    up to 90 days: someone deactivated or rejected since must not get it. None means "do not
    ask": mail of no school, and administrative mail, which is about the membership itself
    ("your request was declined") and reaches every active account (P11).
    """
    if message.school_id is None or not message.category.optional:
        return None
    return {user_id for _, user_id in approved_memberships({message.school_id}, users)}


def approved_memberships(school_ids: Iterable[int], user_ids: Iterable[int]) -> set[tuple[int, int]]:
    """(school id, user id) of each approved membership among these schools and people, in one query."""
    school_ids, user_ids = list(school_ids), list(user_ids)
    if not school_ids or not user_ids:
        return set()
    query = select(Membership.school_id, Membership.user_id).where(
        Membership.school_id.in_(school_ids),
        Membership.user_id.in_(user_ids),
        Membership.status == MembershipStatus.APPROVED,
    )
    # Jobs have no school bound; the schools are named in the query itself.
    with tenancy.unscoped():
        return {(school_id, user_id) for school_id, user_id in db.session.execute(query)}


def _skip_reason(message, delivery, users, modes, blocked, members) -> str | None:
    """Why this delivery must not go now (P10, P11), or None to send it."""
    suppression = blocked.get(delivery.to_email.lower())
    if suppression is not None and (message.category.optional or suppression.blocks_administrative):
        return f"address suppressed ({suppression.reason})"
    if delivery.user_id is None:
        # No account (it was deleted) is no membership either; other mail goes to the address.
        return NOT_A_MEMBER if members is not None else None
    user = users.get(delivery.user_id)
    if user is None or not user.active:
        return "account deactivated"
    if members is not None and user.id not in members:
        return NOT_A_MEMBER
    mode = modes.get(user.id, DeliveryMode.IMMEDIATE)
    if mode is DeliveryMode.OFF:
        return "unsubscribed from this category"
    if mode is DeliveryMode.DIGEST and message.category.can_digest and message.template != "digest":
        return "digest"
    return None


def _send(
    message: MailMessage,
    deliveries: list[MailDelivery],
    users: dict[int, User],
    run: Run,
    rendered: MailRendering,
    untried: list[int],
) -> tuple[dict, bool]:
    """One provider call for the batch, its id committed first; every delivery records what came of it.

    Also whether to stop: after a temporary failure the ``untried`` rows (the later languages of
    the claim) go back with these in one step, under one retry job, without a call of their own.
    """
    message_id = message.id
    batch = _batch(message, deliveries, users, rendered)
    attempts = max(d.attempts for d in deliveries)
    held = claims.hand_over(batch, deliveries, run)  # commits: from here the rows may have gone
    if not held:
        return {}, False
    try:
        provider_ids = backend().send_batch(batch)
    except OutcomeUnknown as failure:
        # Asked about before it goes again, once the provider can no longer be taking it (the
        # call's deadline): what it took is marked sent then, the rest waits for the lag.
        failure.retry_after = max(failure.retry_after or 0, claims.call_lease().total_seconds())
        return _retry_later(message_id, held, run, failure, attempts, keep_batch=True, untried=untried), True
    except TemporaryFailure as failure:
        return _retry_later(message_id, held, run, failure, attempts, keep_batch=False, untried=untried), True
    except PermanentFailure as failure:
        return {"failed": claims.record_failed(held, run, failure.reason)}, False
    return {"sent": claims.record_sent(held, provider_ids, run)}, False


def _batch(
    message: MailMessage, deliveries: list[MailDelivery], users: dict[int, User], rendered: MailRendering
) -> Batch:
    """The message in one language, with each recipient's own unsubscribe link (in that language)
    as a recipient variable."""
    headers = {"X-Category": message.category.value}
    if message.category.optional:
        mailto = current_app.config.get("MAIL_UNSUBSCRIBE_MAILTO")
        target = "<%recipient.unsubscribe_url%>" + (f", <mailto:{mailto}>" if mailto else "")
        headers |= {"List-Unsubscribe": target, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        headers["List-Id"] = _list_id(message)
    link = _unsubscribe_link_maker(message, rendered.locale)
    return Batch(
        sender=current_app.config["MAIL_FROM"],
        subject=rendered.subject,
        text=rendered.text_body or "",
        html=rendered.html_body,
        tag=message.category.value,
        headers=headers,
        recipients=[
            Recipient(d.id, d.to_email, link(_user_of(d, users)) if link else {}) for d in deliveries
        ],
    )


def _list_id(message: MailMessage) -> str:
    """RFC 2919 List-Id of the message's list: its category at its school, under our host.

    ``<school-announcements.maple-elementary.school.example.org>``; mail of no school is the
    platform's. Only list mail (the categories one can leave, which carry List-Unsubscribe) has
    one: a password reset or an approval is a message to one person, not a list's.
    """
    school = db.session.get(School, message.school_id) if message.school_id is not None else None
    owner = school.slug if school is not None else "platform"
    host = urlsplit(current_app.config.get("PUBLIC_URL") or "").hostname or "localhost"
    labels = [message.category.value.replace("_", "-"), owner]
    return "<" + ".".join(_LIST_LABEL.sub("-", label).strip("-") or "list" for label in labels) + f".{host}>"


_LIST_LABEL = re.compile(r"[^A-Za-z0-9-]+")


def _unsubscribe_link_maker(message: MailMessage, locale: str):
    """Build links from one URL template per batch (20,000 url_for calls would dominate a send);
    the page they open is in the email's language."""
    if not message.category.optional:
        return None
    placeholder = "UNSUBSCRIBE-TOKEN"
    template = tokens.link_template(placeholder, lang=locale)

    def variables(user: User | None) -> dict[str, str]:
        """One recipient's unsubscribe link as a recipient variable (none without an account)."""
        if user is None:
            return {}
        return {"unsubscribe_url": template.replace(placeholder, tokens.make(user, message.category))}

    return variables


def _retry_later(
    message_id: int,
    ids: list[int],
    run: Run,
    failure: TemporaryFailure,
    attempts: int,
    *,
    keep_batch: bool,
    untried: Iterable[int] = (),
) -> dict[str, int]:
    """Put the rows back with a capped backoff (or the provider's Retry-After) and schedule the retry;
    failed only once MAIL_GIVE_UP_AFTER has passed since their first attempt. ``untried`` rows were
    never handed over in this run: they go back with them, no batch left to ask about."""
    config = current_app.config
    backoff = min(config["MAIL_RETRY_BASE_SECONDS"] * 2 ** (attempts - 1), config["MAIL_RETRY_MAX_SECONDS"])
    delay = max(failure.retry_after or 0, backoff)
    counts = claims.put_back(ids, run, failure.reason, delay, keep_batch=keep_batch)
    if untried := list(untried):
        more = claims.put_back(untried, run, failure.reason, delay, keep_batch=False)
        counts = {name: counts[name] + more[name] for name in counts}
    if counts["retry"]:
        jobs.enqueue_in(delay, send_message, message_id, queue="mail")
        log.warning(
            "message %s: %d deliveries delayed, retry in %.1fs (%s)",
            message_id,
            counts["retry"],
            delay,
            failure.reason,
        )
    if counts["failed"]:
        failed = counts["failed"]
        log.error("message %s: %d deliveries failed for good (%s)", message_id, failed, failure.reason)
    return counts


def _erase_sensitive_bodies(message: MailMessage) -> None:
    """A reset link in a stored body is a key under the mat: drop it once all are settled, with the
    context it was rendered from and every language's rendering."""
    if not message.sensitive or (message.text_body is None and message.render_context is None):
        return
    unsettled = db.session.scalar(
        select(MailDelivery.id)
        .where(MailDelivery.message_id == message.id, MailDelivery.status.not_in(SETTLED))
        .limit(1)
    )
    if unsettled is None:
        message.text_body = message.html_body = None
        message.render_context = None
        db.session.execute(delete(MailRendering).where(MailRendering.message_id == message.id))


@jobs.job
@jobs.repeating
def sweep() -> dict:
    """Re-enqueue messages whose deliveries sat pending (or stuck sending) too long."""
    with tenancy.unscoped():  # every school's outbox, on purpose
        found = _lost_messages()
    # The session store has its own connection: prune after our transaction is closed.
    pruned = sessions.prune_expired()
    # So do the claimed form keys (app/submissions.py): a day old, a key is a fresh form again.
    return {"messages": found, "sessions_pruned": pruned, "submissions_pruned": submissions.prune_expired()}


def _lost_messages() -> int:
    """Reset stuck deliveries and enqueue each message with lost or due ones; how many."""
    now = utcnow()
    # Pending rows of a message no run is working on. A run renews its hold with every batch,
    # so a message being sent is left alone however long the send takes.
    unattended = and_(
        MailDelivery.status == DeliveryStatus.PENDING,
        MailDelivery.next_attempt_at.is_(None),
        MailDelivery.message_id.not_in(claims.live_runs(now)),
    )
    # Lost: its job never ran (Redis was down) and it has waited past SWEEP_PENDING_AFTER, or
    # a run held the message and lapsed (its worker was killed between two batches).
    lost = and_(
        unattended,
        or_(
            MailDelivery.updated_at < now - current_app.config["SWEEP_PENDING_AFTER"],
            MailDelivery.message_id.in_(claims.lapsed_runs(now)),
        ),
    )
    retry_due = and_(MailDelivery.status == DeliveryStatus.PENDING, MailDelivery.next_attempt_at <= now)
    # A worker killed mid-send leaves rows in "sending": once their lease has run out they are
    # pending again, and the next run asks the provider about any batch they were handed to.
    stuck = claims.expired(now)
    # A scheduled message is due once its time has passed; until then its pending rows are not lost.
    scheduled = select(MailMessage.id).where(MailMessage.scheduled_for.is_not(None))
    due = and_(unattended, MailDelivery.message_id.in_(scheduled.where(MailMessage.scheduled_for <= now)))
    not_yet = MailDelivery.message_id.not_in(scheduled.where(MailMessage.scheduled_for > now))
    found = select(MailDelivery.message_id).where(or_(lost, retry_due, stuck, due), not_yet).distinct()
    message_ids = list(db.session.scalars(found))
    message_ids += [m for m in db.session.scalars(_preparing_too_long(now)) if m not in message_ids]
    db.session.execute(
        update(MailDelivery)
        .where(stuck)
        .values(status=DeliveryStatus.PENDING, lease_until=None, next_attempt_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    for message_id in message_ids:
        jobs.enqueue(send_message, message_id, queue="mail")
    db.session.commit()
    return len(message_ids)


def _preparing_too_long(now):
    """Messages whose deliveries the worker has not finished writing well after they were composed
    (its job was lost with Redis, or the worker died between chunks): fan_out resumes them."""
    return select(MailMessage.id).where(
        MailMessage.fanout_after.is_not(None),  # ix_mail_message_preparing: only these rows
        MailMessage.cancelled_at.is_(None),
        MailMessage.created_at < now - current_app.config["SWEEP_PENDING_AFTER"],
        or_(MailMessage.sending_until.is_(None), MailMessage.sending_until < now),  # no live run
    )
