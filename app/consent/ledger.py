"""The consent ledger: what each person was told, acknowledged and did about each policy version.

Lines are only ever added (``app.models.consent``), each kind at most once per person and
version. ``load_notice`` runs before every signed-in request with ONE query (the person's
ledger lines for the material versions posted after they joined) and only reads: it decides
whether the notice banner shows. Nothing is written while someone merely reads pages (a GET
may be a prefetch, a crawler with the cookie, a reload): the lines are written by the acts
of use that change something, where the request writes anyway:

- "continued use" at sign-in (``note_sign_in``) and at the first state-changing request
  (POST, PUT, PATCH, DELETE) after a version took effect for them (``record_use``);
- "notice shown" at the first state-changing request made while the banner is on their
  pages: the page they acted from carried it.

A person with a live session who only reads after the effective date is recorded at their
next sign-in or change; the policy's effect does not wait for the line (``effective_at``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import g, request
from flask_login import current_user
from sqlalchemy import and_, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import defer

from app.consent import policy
from app.extensions import db
from app.models import Membership
from app.models.base import utcnow
from app.models.consent import NOTICE_PERIOD, ConsentEvent, ConsentKind, PolicyVersion


def record(user_id: int, kind: ConsentKind, version_id: int | None) -> None:
    """Add a ledger line unless this person already has this one for this version (races included)."""
    row = {"user_id": user_id, "version_id": version_id, "kind": kind.value, "created_at": utcnow()}
    dialect = db.session.get_bind().dialect.name
    maker = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = maker(ConsentEvent).values(row)
    if version_id is not None:
        statement = statement.on_conflict_do_nothing(index_elements=["user_id", "version_id", "kind"])
    db.session.execute(statement)


def record_acceptance(user) -> None:
    """At sign-up: the newcomer accepted the newest posted version (our placeholder if none)."""
    version = policy.ensure_placeholder()
    record(user.id, ConsentKind.ACCEPTED, version.id)


def has_accepted_a_version(user_id: int) -> bool:
    """Has this person ever accepted a version (at sign-up, or when joining another school)?"""
    query = select(ConsentEvent.id).where(
        ConsentEvent.user_id == user_id, ConsentEvent.kind == ConsentKind.ACCEPTED
    )
    return db.session.scalar(query.limit(1)) is not None


def ledger_of(user_id: int) -> list[tuple[ConsentEvent, int | None]]:
    """A person's own ledger, oldest first, with each line's version number."""
    rows = db.session.execute(
        select(ConsentEvent, PolicyVersion.number)
        .outerjoin(PolicyVersion, PolicyVersion.id == ConsentEvent.version_id)
        .where(ConsentEvent.user_id == user_id)
        .order_by(ConsentEvent.created_at, ConsentEvent.id)
    ).all()
    return [(event, number) for event, number in rows]


@dataclass(frozen=True)
class Notice:
    """A material version the banner is about, as this person sees it."""

    version_id: int
    number: int
    summary: str
    effective_at: datetime | None
    in_force: bool


STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class _Standing:
    """The one query's answer for this request: the versions, the lines seen, the notice."""

    versions: dict[int, PolicyVersion]
    seen: set[tuple[int, ConsentKind]]
    notice: Notice | None


def load_notice() -> None:
    """before_request: set ``g.consent_notice`` for the banner (one query; reads only)."""
    g.consent_notice = None
    g.consent_standing = None
    if request.endpoint in (None, "static") or not current_user.is_authenticated:
        return
    versions, seen = _material_versions_since_joined(current_user.id, current_user.created_at)
    if not versions:
        return
    notice = _notice_to_show(versions.values(), seen, utcnow())
    g.consent_standing = _Standing(versions, seen, notice)
    g.consent_notice = notice


def record_use() -> None:
    """before_request, after load_notice: a state-changing request is use; record it (and the
    banner it was made from) once per version, committed at once whatever the view does."""
    standing = g.get("consent_standing")
    if standing is None or request.method not in STATE_CHANGING:
        return
    wrote = _record_continued_use(current_user.id, standing)
    notice = standing.notice
    if notice is not None and (notice.version_id, ConsentKind.NOTICE_SHOWN) not in standing.seen:
        record(current_user.id, ConsentKind.NOTICE_SHOWN, notice.version_id)
        wrote = True
    if wrote:
        db.session.commit()


def note_sign_in(user) -> None:
    """At sign-in (a POST, whose route commits): signing in after a version took effect is use."""
    versions, seen = _material_versions_since_joined(user.id, user.created_at)
    if versions:
        _record_continued_use(user.id, _Standing(versions, seen, None))


def _record_continued_use(user_id: int, standing: _Standing) -> bool:
    """A continued-use line for every version in force that this person neither accepted nor has one for."""
    if _dispatching(standing.versions.values()) and policy.refresh_all_dispatches():
        db.session.flush()  # an email notice finished: its effective date is known now
    now = utcnow()
    wrote = False
    for version in standing.versions.values():
        effective = version.effective_at
        took_effect = effective is not None and effective <= now
        agreed = (version.id, ConsentKind.ACCEPTED) in standing.seen  # ticked it joining another school
        if took_effect and not agreed and (version.id, ConsentKind.CONTINUED_USE) not in standing.seen:
            record(user_id, ConsentKind.CONTINUED_USE, version.id)
            wrote = True
    return wrote


def _dispatching(versions) -> bool:
    """Is a notice email still going out (so its effective date may have become known)?"""
    return any(v.notify_by_email and v.email_dispatch_finished_at is None for v in versions)


def _material_versions_since_joined(user_id: int, joined: datetime):
    """The one query: material versions posted after the person joined, with their ledger kinds."""
    rows = db.session.execute(
        select(PolicyVersion, ConsentEvent.kind)
        .outerjoin(
            ConsentEvent, and_(ConsentEvent.version_id == PolicyVersion.id, ConsentEvent.user_id == user_id)
        )
        .where(PolicyVersion.material.is_(True), PolicyVersion.posted_at > joined)
        .options(defer(PolicyVersion.body_markdown))  # small: the policy text is never needed here
    ).all()
    versions: dict[int, PolicyVersion] = {}
    seen: set[tuple[int, ConsentKind]] = set()
    for version, kind in rows:
        versions[version.id] = version
        if kind is not None:
            seen.add((version.id, ConsentKind(kind)))
    return versions, seen


def _notice_to_show(versions, seen, now: datetime) -> Notice | None:
    """The newest material version still coming or newly in force that the person has not acknowledged."""
    for version in sorted(versions, key=lambda v: v.number, reverse=True):
        if (version.id, ConsentKind.ACKNOWLEDGED) in seen or (version.id, ConsentKind.ACCEPTED) in seen:
            continue
        effective = version.effective_at
        if effective is None or now < effective + NOTICE_PERIOD:
            return Notice(
                version.id,
                version.number,
                version.display_summary,
                effective,
                effective is not None and effective <= now,
            )
    return None


def latest_material_notice(now: datetime | None = None) -> PolicyVersion | None:
    """The newest posted material version, for the always-reachable notice page."""
    query = select(PolicyVersion).where(
        PolicyVersion.material.is_(True), PolicyVersion.posted_at.is_not(None)
    )
    return db.session.scalar(query.order_by(PolicyVersion.number.desc()).limit(1))


def objections_due(user, now: datetime | None = None) -> list[PolicyVersion]:
    """Posted material versions not yet in force for this person: closing now objects to them."""
    now = now or utcnow()
    query = select(PolicyVersion).where(
        PolicyVersion.material.is_(True),
        PolicyVersion.posted_at.is_not(None),
        PolicyVersion.posted_at > user.created_at,
    )
    return [v for v in db.session.scalars(query) if v.effective_at is None or v.effective_at > now]


def counts_for_school() -> dict[int, dict[str, int]]:
    """Per version and kind, how many people of the current school have that line (never who)."""
    members = select(Membership.user_id)  # tenancy keeps this to the current school
    rows = db.session.execute(
        select(PolicyVersion.number, ConsentEvent.kind, func.count(func.distinct(ConsentEvent.user_id)))
        .join(PolicyVersion, PolicyVersion.id == ConsentEvent.version_id)
        .where(ConsentEvent.user_id.in_(members))
        .group_by(PolicyVersion.number, ConsentEvent.kind)
    ).all()
    counts: dict[int, dict[str, int]] = {}
    for number, kind, count in rows:
        counts.setdefault(number, {})[ConsentKind(kind).value] = count
    return counts
