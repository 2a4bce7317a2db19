"""One object of every kind that a route takes by id or token, built in one school of the hostile
world, and the map from ``url_map`` arguments to those kinds.

A route argument is an *id kind* when it names a row: ``<int:event_id>`` names an ``event``,
``<token>`` of ``calendar.feed`` names a ``calendar_feed``. Every argument of every rule must
resolve to a kind with a factory here, or be listed in ``NOT_IDS`` with the reason it names no
row; ``tests/test_hostile_tenants.py`` fails on an argument that does neither, so a route added
with a new kind of id is not tried with an id that exists nowhere.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import Flask
from PIL import Image
from sqlalchemy import select
from werkzeug.routing import IntegerConverter

from app import tenancy
from app.auth import tokens as account_tokens
from app.calendar import services as calendar_services
from app.consent.export import hash_token as export_hash
from app.extensions import db
from app.identity import services as identity_services
from app.models import (
    DevMail,
    SupportKind,
    SupportRequest,
    Suppression,
    User,
)
from app.models.calendar import Event
from app.models.consent import DataExport, DataExportChunk, ExportStatus, PolicyVersion
from app.models.imports import ImportRun
from app.models.support import DeletionState, SupportGrant
from app.unsubscribe import tokens as unsubscribe_tokens
from tests.hostile_world import Side, table_for_argument

# Route arguments that name no row, and why (they are filled with a valid value instead).
NOT_IDS: dict[str, str] = {
    "category": "a mail category's name, the same words in every school",
    "decision": "'approve' or 'reject', a verb",
    "filename": "a file under app/static, served to everyone",
    "version": "a hash of the brand stylesheet's text: the requester's own school's is served",
}
FILLERS: dict[str, str] = {
    "category": "newsletters",
    "decision": "approve",
    "filename": "css/app.css",
    "version": "0123456789abcdef",
}

# String arguments that carry a secret standing for a row, by endpoint.
TOKEN_KINDS: dict[tuple[str, str], str] = {
    ("calendar.feed", "token"): "calendar feed token",
    ("consent.school.export_status", "token"): "school export token",
    ("consent.school.export_download", "token"): "school export token",
    ("auth.email_link", "token"): "email confirmation token",
    ("auth.reset_link", "token"): "password reset token",
    ("unsubscribe.confirm", "token"): "unsubscribe token",
    ("unsubscribe.apply", "token"): "unsubscribe token",
    ("identity.crest", "checksum"): "school crest",
}
# Int arguments whose name does not follow ``<table stem>_id``.
INT_KINDS: dict[str, str] = {"number": "policy_version"}


@dataclass(frozen=True)
class IdKind:
    """What one kind of id names: its table, how the URL's value finds the row, whose row it is."""

    name: str
    table: str
    school_data: bool  # a row of one school: another school's id must be refused
    build: Callable[[Side], int | str | list]  # a list: each value is tried
    column: str = "id"  # the column the URL's value (or its hash) is looked up in
    transform: Callable[[int | str], int | str] = lambda value: value
    # For rows with no school_id that still belong to one school (an address of its member).
    school_of_row: Callable[[object], int | None] | None = None


def kind_of_argument(rule, argument: str) -> str | None:
    """The id kind of one argument of one rule, or None when it names no row (see NOT_IDS)."""
    if argument in NOT_IDS:
        return None
    if (rule.endpoint, argument) in TOKEN_KINDS:
        return TOKEN_KINDS[(rule.endpoint, argument)]
    if isinstance(rule._converters[argument], IntegerConverter):  # app.urls.RowIdConverter
        return INT_KINDS.get(argument) or table_for_argument(argument) or f"unknown int {argument}"
    return f"unknown {rule.endpoint}:{argument}"


def id_kinds_in(app: Flask) -> dict[str, set[str]]:
    """Every id kind that a route takes, with the rules that take it (static files aside)."""
    kinds: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        for argument in rule.arguments:
            kind = kind_of_argument(rule, argument)
            if kind is not None:
                kinds.setdefault(kind, set()).add(rule.rule)
    return kinds


def _now() -> datetime:
    return datetime.now(UTC)


def _school_row(side: Side, row) -> int:
    """Add one row of the side's school (bound to it, as its own code would be) and return its id."""
    with tenancy.bound(side.school.id):
        db.session.add(row)
        db.session.commit()
        return row.id


def _event(side: Side) -> int:
    start = _now() + timedelta(days=1)
    label = side.markers[0]
    return _school_row(
        side, Event(title=f"{label} picnic", starts_at=start, ends_at=start + timedelta(hours=2))
    )


def _import_run(side: Side) -> int:
    label = side.markers[0]
    return _school_row(
        side,
        ImportRun(
            filename=f"{label.lower()}.csv",
            content=(
                "family_key,guardian_name,guardian_email,student_first_name,student_last_name,class_name\n"
                f"k1,{label} Importee,importee@{label.lower()}.example,{label}kin,{label}ton,{label} Owls\n"
            ),
            total_rows=1,
        ),
    )


def _support_request(side: Side) -> int:
    """A deletion request support has marked: what the school's admin confirms next."""
    admin = side.actors["admin"]
    label = side.markers[0]
    return _school_row(
        side,
        SupportRequest(
            kind=SupportKind.DELETION,
            user_id=admin.user_id,
            school_id=side.school.id,
            name=f"{label} Admin",
            email=admin.user.email,
            subject=f"{label} deletion",
            message=f"{label} please delete",
            deletion_state=DeletionState.MARKED,
            deletion_marked_at=_now(),
        ),
    )


def _support_grant(side: Side) -> int:
    """A grant that has ended: revoking it would still be a write, and support cannot enter with it."""
    return _school_row(
        side, SupportGrant(starts_at=_now() - timedelta(hours=3), expires_at=_now() - timedelta(hours=1))
    )


def _school_crest(side: Side) -> str:
    """The school's crest, a colour of its own (two schools' crests never share a checksum)."""
    image = Image.new("RGB", (64, 64), (side.school.id % 256, 80, 160))
    data = io.BytesIO()
    image.save(data, "PNG")
    with tenancy.bound(side.school.id):
        crest = identity_services.save_crest(side.school, data.getvalue())
        db.session.commit()
        return crest.checksum


def _calendar_feed(side: Side) -> str:
    with tenancy.bound(side.school.id):
        token = calendar_services.new_feed(side.actors["parent"].id)
        db.session.commit()
    return token


def _school_export(side: Side) -> str:
    raw = f"{side.markers[0].lower()}-export-token-{side.school.id}"
    label = side.markers[0]
    with tenancy.bound(side.school.id):
        db.session.add(
            DataExport(
                requested_by_id=side.actors["superadmin"].user_id,
                token_hash=export_hash(raw),
                status=ExportStatus.READY,
                size=len(f"{label} zip"),
                expires_at=_now() + timedelta(days=1),
            )
        )
        db.session.flush()
        export_id = db.session.scalar(select(DataExport.id).where(DataExport.token_hash == export_hash(raw)))
        db.session.add(DataExportChunk(export_id=export_id, seq=0, data=f"{label} zip".encode()))
        db.session.commit()
    return raw


def _account_token(purpose: str) -> Callable[[Side], str]:
    def build(side: Side) -> str:
        user = db.session.get(User, side.actors["parent"].user_id)
        raw = account_tokens.issue(user, purpose, hours=2, payload={"email": f"new-{user.email}"})
        db.session.commit()
        return raw

    return build


def _unsubscribe_token(side: Side) -> str:
    user = db.session.get(User, side.actors["parent"].user_id)
    return unsubscribe_tokens.make(user, unsubscribe_tokens.ALL)


def _policy_version(side: Side) -> int:
    """A posted, non-material version (platform-wide: its number is not a school's)."""
    number = (db.session.scalar(select(db.func.max(PolicyVersion.number))) or 0) + 1
    db.session.add(PolicyVersion(number=number, body_markdown="The policy.", posted_at=_now()))
    db.session.commit()
    return number


def _dev_mail(side: Side) -> int:
    """Mail caught for one of the side's people (the dev mailbox is off outside development)."""
    mail = DevMail(
        to_email=side.actors["parent"].user.email,
        subject=f"{side.markers[0]} reset link",
        text_body=f"{side.markers[0]} secret",
    )
    db.session.add(mail)
    db.session.commit()
    return mail.id


def _suppression(side: Side) -> int:
    """A suppressed address of one of the side's members (Suppression rows name no school)."""
    email = side.actors["room_parent"].user.email
    suppression = Suppression(
        email=email, reason="bounce", blocks_administrative=True, provider_lists="bounces"
    )
    db.session.add(suppression)
    db.session.commit()
    return suppression.id


def _school_of_address(row) -> int | None:
    """The school of the member whose address is suppressed (each test address has one)."""
    with db.engine.connect() as conn:
        users, memberships = db.metadata.tables["user"], db.metadata.tables["membership"]
        query = select(memberships.c.school_id).join(users, users.c.id == memberships.c.user_id)
        schools = set(conn.scalars(query.where(users.c.email == row.email)))
    assert len(schools) == 1, schools
    return schools.pop()


def _memberships(side: Side) -> list[int]:
    """A pending applicant (approve, reject) and an approved member (their settings page)."""
    return [side.ids["membership"], side.actors["parent"].id]


def _from_side(table: str) -> Callable[[Side], int]:
    """A kind that build_side already made (classes, families, students, memberships, messages)."""
    return lambda side: side.ids[table]


_feed_hash = calendar_services._hash  # tokens are stored only as their hash
_ACCOUNT = ("token_hash", account_tokens._digest)

KINDS: dict[str, IdKind] = {
    kind.name: kind
    for kind in (
        IdKind("school", "school", True, lambda side: side.school.id),
        IdKind("school_class", "school_class", True, _from_side("school_class")),
        IdKind("family", "family", True, _from_side("family")),
        # A pending applicant (approve, reject) and an approved member (their settings page).
        IdKind(
            "membership", "membership", True, lambda side: [side.ids["membership"], side.actors["parent"].id]
        ),
        IdKind("mail_message", "mail_message", True, _from_side("mail_message")),
        IdKind("event", "event", True, _event),
        IdKind("import_run", "import_run", True, _import_run),
        IdKind("support_request", "support_request", True, _support_request),
        IdKind("support_grant", "support_grant", True, _support_grant),
        IdKind("calendar feed token", "calendar_feed", True, _calendar_feed, "token_hash", _feed_hash),
        IdKind("school crest", "school_crest", True, _school_crest, "checksum"),
        IdKind("school export token", "data_export", True, _school_export, "token_hash", export_hash),
        IdKind(
            "email confirmation token",
            "account_token",
            False,
            _account_token("email"),
            "token_hash",
            account_tokens._digest,
        ),
        IdKind(
            "password reset token",
            "account_token",
            False,
            _account_token("reset"),
            "token_hash",
            account_tokens._digest,
        ),
        IdKind(
            "unsubscribe token",
            "user",
            False,
            _unsubscribe_token,
            "mail_key",
            lambda token: str(token).split(".")[0],
        ),
        IdKind("policy_version", "policy_version", False, _policy_version, "number"),
        IdKind("dev_mail", "dev_mail", False, _dev_mail),
        IdKind("suppression", "suppression", True, _suppression, school_of_row=_school_of_address),
    )
}


def build_every_kind(side: Side) -> dict[str, list[int | str]]:
    """One object of every id kind in the side's school (two of some): kind -> the URL values."""
    built = {name: kind.build(side) for name, kind in KINDS.items()}
    return {name: value if isinstance(value, list) else [value] for name, value in built.items()}


def school_of(kind_name: str, value: int | str) -> int | None:
    """Look the URL's value up (Core, no tenancy filter): the school of the row it names.

    Raises AssertionError when no row answers to it, so a refusal is never of an id that exists
    nowhere. Rows of no school (a user, a policy version) answer None.
    """
    kind = KINDS[kind_name]
    table = db.metadata.tables[kind.table]
    with db.engine.connect() as conn:
        row = conn.execute(select(table).where(table.c[kind.column] == kind.transform(value))).first()
    assert row is not None, f"the {kind_name} {value!r} names no row"
    if kind.table == "school":
        return row.id
    if kind.school_of_row is not None:
        return kind.school_of_row(row)
    return getattr(row, "school_id", None)
