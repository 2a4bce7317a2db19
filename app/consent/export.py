"""'Your data is yours': a person's own download, and a school's export built by the worker."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import zipfile
from datetime import timedelta

from sqlalchemy import or_, select, update

from app import jobs, tenancy
from app.consent import ledger
from app.extensions import db
from app.models import (
    ClassHelper,
    Enrollment,
    Family,
    Guardian,
    MailDelivery,
    MailMessage,
    MailPreference,
    Membership,
    MembershipStatus,
    School,
    SchoolClass,
    Student,
    User,
    listed_membership,
)
from app.models.base import utcnow
from app.models.consent import DataExport, ExportStatus

EXPORT_LIFETIME = timedelta(hours=24)
ALL_STATUSES = tuple(MembershipStatus)


def _when(value) -> str | None:
    return value.isoformat() if value is not None else None


# --- a person's own data ----------------------------------------------------------------------


def personal_data(user: User) -> dict:
    """Everything the service holds about this person and their family, as they would see it."""
    return {
        "exported_at": _when(utcnow()),
        "profile": {"name": user.name, "email": user.email, "joined_at": _when(user.created_at)},
        "schools": [_school_part(m) for m in tenancy.memberships_of(user.id, ALL_STATUSES)],
        "email_preferences": [
            {"category": p.category.value, "mode": p.mode.value}
            for p in db.session.scalars(select(MailPreference).where(MailPreference.user_id == user.id))
        ],
        "consent_ledger": [
            {"what": event.kind.value, "policy_version": number, "at": _when(event.created_at)}
            for event, number in ledger.ledger_of(user.id)
        ],
        "emails_sent_to_you": _emails_of(user),
    }


def _school_part(membership: Membership) -> dict:
    """One school: the membership, its directory details and the families the person belongs to."""
    with tenancy.bound(membership.school_id):
        families = db.session.scalars(_families_of(membership)).all()
        classes = dict(db.session.execute(select(SchoolClass.id, SchoolClass.name)).all())
        return {
            "school": membership.school.name,
            "role": membership.role.value,
            "status": membership.status.value,
            "joined_at": _when(membership.created_at),
            "directory_details": {
                "title": membership.title,
                "phone": membership.phone,
                "address": membership.address,
                "email_visible_to": membership.email_visibility.value,
                "phone_visible_to": membership.phone_visibility.value,
                "address_visible_to": membership.address_visibility.value,
            },
            "families": [_family_part(family, classes, membership) for family in families],
        }


def _families_of(membership: Membership):
    """The families this membership may download.

    Approved, every family they are a guardian of. Otherwise (waiting, turned down, switched
    off) only a family nobody approved belongs to: the one they typed in themselves when they
    joined, not one they asked to join with its code, nor one they were removed from.
    """
    theirs = select(Guardian.family_id).where(Guardian.membership_id == membership.id)
    query = select(Family).where(Family.id.in_(theirs))
    if membership.status is MembershipStatus.APPROVED:
        return query
    others_approved = (
        select(Guardian.family_id)
        .join(Membership, Membership.id == Guardian.membership_id)
        .where(Membership.id != membership.id, Membership.status == MembershipStatus.APPROVED)
    )
    return query.where(Family.id.not_in(others_approved))


def _family_part(family: Family, classes: dict[int, str], membership: Membership) -> dict:
    """One family: its guardians (approved, open accounts, and the person), children and classes."""
    guardians = db.session.scalars(
        select(User.name)
        .join(Membership, Membership.user_id == User.id)
        .join(Guardian, Guardian.membership_id == Membership.id)
        .where(
            Guardian.family_id == family.id,
            or_(
                Membership.id == membership.id,
                listed_membership(),
            ),
        )
    ).all()
    students = db.session.scalars(select(Student).where(Student.family_id == family.id)).all()
    enrolled = db.session.execute(
        select(Enrollment.student_id, Enrollment.class_id).where(
            Enrollment.student_id.in_([s.id for s in students] or [-1])
        )
    ).all()
    return {
        "family": family.name,
        "guardians": list(guardians),
        "children": [
            {
                "first_name": s.first_name,
                "last_name": s.last_name,
                "classes": [classes.get(c) for sid, c in enrolled if sid == s.id],
            }
            for s in students
        ],
    }


def _emails_of(user: User) -> list[dict]:
    """Every email written to the person, from any of their schools and from the platform."""
    with tenancy.unscoped():  # their own deliveries, named by their user id
        rows = db.session.execute(
            select(MailMessage, MailDelivery)
            .join(MailDelivery, MailDelivery.message_id == MailMessage.id)
            .where(MailDelivery.user_id == user.id)
            .order_by(MailDelivery.created_at)
        ).all()
    return [
        {
            "subject": message.subject,
            "category": message.category.value,
            "to": delivery.to_email,
            "status": delivery.status.value,
            "written_at": _when(delivery.created_at),
            "sent_at": _when(delivery.sent_at),
            # A body holding a secret link is erased once sent; the rest is theirs to keep.
            "text": None if message.sensitive else message.text_body,
        }
        for message, delivery in rows
    ]


def personal_json(user: User) -> bytes:
    return json.dumps(personal_data(user), indent=2, ensure_ascii=False).encode()


# --- a school's export -------------------------------------------------------------------------


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def request_school_export(requested_by: User) -> tuple[DataExport, str]:
    """Queue an export of the current school; returns it and the raw token of its link."""
    raw = secrets.token_urlsafe(32)
    export = DataExport(
        requested_by_id=requested_by.id,
        token_hash=hash_token(raw),
        status=ExportStatus.QUEUED,
        expires_at=utcnow() + EXPORT_LIFETIME,
    )
    db.session.add(export)
    db.session.flush()
    _forget_expired()
    jobs.enqueue(build_school_export, export.id, export.school_id)
    return export, raw


def _forget_expired() -> None:
    """An expired export's file is dropped: the link is dead and the data should not linger."""
    db.session.execute(
        update(DataExport)
        .where(DataExport.expires_at <= utcnow(), DataExport.content.is_not(None))
        .values(content=None)
        .execution_options(synchronize_session=False)
    )


def forget_if_expired(export: DataExport) -> bool:
    """Drop an expired export's file when its link is used; True if it has expired."""
    if export.expires_at > utcnow():
        return False
    if export.content is not None:
        export.content = None
        db.session.commit()
    return True


def find_export(raw_token: str) -> DataExport | None:
    """The current school's export this link token opens (None for another school's or a wrong token)."""
    if not raw_token or len(raw_token) > 100:
        return None
    return db.session.scalar(select(DataExport).where(DataExport.token_hash == hash_token(raw_token)))


@jobs.job
def build_school_export(export_id: int, school_id: int) -> str:
    """Build the school's data as a ZIP of one JSON file and one CSV per table."""
    with tenancy.bound(school_id):
        export = db.session.get(DataExport, export_id)
        if export is None or export.status is not ExportStatus.QUEUED:
            return "skipped"
        try:
            content = school_zip(school_id)
        except Exception:  # the page must say it failed rather than poll forever
            db.session.rollback()
            export = db.session.get_one(DataExport, export_id)  # found above, before the rollback
            export.status, export.finished_at = ExportStatus.FAILED, utcnow()
            db.session.commit()
            raise
        export.content, export.size = content, len(content)
        export.status, export.finished_at = ExportStatus.READY, utcnow()
        db.session.commit()
        return "ready"


def school_tables(school_id: int) -> dict[str, list[dict]]:
    """The school's data, table by table, as rows of plain values (call with the school bound)."""
    school = db.session.get_one(School, school_id)  # the school being exported exists
    members = db.session.execute(
        select(Membership, User).join(User, User.id == Membership.user_id).order_by(Membership.id)
    ).all()
    return {
        "school": [
            {"name": school.name, "timezone": school.timezone, "created_at": _when(school.created_at)}
        ],
        "members": [
            {
                "member_id": m.id,
                "name": u.name,
                "email": u.email,
                "account_active": u.active,
                "role": m.role.value,
                "status": m.status.value,
                "title": m.title,
                "phone": m.phone,
                "address": m.address,
                "joined_at": _when(m.created_at),
            }
            for m, u in members
        ],
        "classes": _rows(SchoolClass, "id", "name", "grade", "school_year"),
        "class_helpers": _rows(ClassHelper, "class_id", "membership_id", "role"),
        "families": _rows(Family, "id", "name"),
        "guardians": _rows(Guardian, "family_id", "membership_id"),
        "students": _rows(Student, "id", "family_id", "first_name", "last_name"),
        "enrollments": _rows(Enrollment, "student_id", "class_id"),
        "messages": [
            {"subject": m.subject, "category": m.category.value, "written_at": _when(m.created_at)}
            for m in db.session.scalars(
                select(MailMessage).where(MailMessage.school_id == school_id).order_by(MailMessage.id)
            )
        ],
    }


def _rows(model, *columns: str) -> list[dict]:
    query = select(*(getattr(model, c) for c in columns)).order_by(getattr(model, columns[0]))
    return [
        {c: (v.value if hasattr(v, "value") else v) for c, v in zip(columns, row, strict=True)}
        for row in db.session.execute(query)
    ]


def school_zip(school_id: int) -> bytes:
    """school.json with every table, and the same tables as CSV files, in one ZIP."""
    tables = school_tables(school_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("school.json", json.dumps(tables, indent=2, ensure_ascii=False))
        for name, rows in tables.items():
            archive.writestr(f"{name}.csv", _csv(rows))
    return buffer.getvalue()


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            # A cell starting with = + - @ would run as a formula in a spreadsheet.
            writer.writerow({k: _safe_cell(v) for k, v in row.items()})
    return out.getvalue()


def _safe_cell(value):
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
