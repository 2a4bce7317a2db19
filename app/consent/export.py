"""'Your data is yours': a person's own download, and a school's export built by the worker."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from json.encoder import encode_basestring
from typing import BinaryIO

from sqlalchemy import delete, or_, select

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
from app.models.consent import DataExport, DataExportChunk, ExportStatus
from app.models.reading import MessageRead

EXPORT_LIFETIME = timedelta(hours=24)
ALL_STATUSES = tuple(MembershipStatus)
CHUNK_SIZE = 1 << 20  # the stored pieces of an export's ZIP, and what the download sends at a time
BATCH = 1000  # rows fetched from the database at a time while building


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
            "join_request_notices": membership.join_notices.value,
            # Which announcements the person opened in the app (the home feed's unread marks).
            "announcements_read": [
                {"message": message_id, "read_at": _when(read_at)}
                for message_id, read_at in db.session.execute(
                    select(MessageRead.message_id, MessageRead.read_at)
                    .where(MessageRead.membership_id == membership.id)
                    .order_by(MessageRead.read_at, MessageRead.message_id)
                )
            ],
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
    expired = select(DataExport.id).where(DataExport.expires_at <= utcnow())
    db.session.execute(
        delete(DataExportChunk)
        .where(DataExportChunk.export_id.in_(expired))
        .execution_options(synchronize_session=False)
    )


def forget_if_expired(export: DataExport) -> bool:
    """Drop an expired export's file when its link is used; True if it has expired."""
    if export.expires_at > utcnow():
        return False
    dropped = db.session.execute(
        delete(DataExportChunk)
        .where(DataExportChunk.export_id == export.id)
        .execution_options(synchronize_session=False)
    )
    if dropped.rowcount:  # type: ignore[attr-defined]  # a CursorResult for a DELETE
        db.session.commit()
    return True


def find_export(raw_token: str) -> DataExport | None:
    """The current school's export this link token opens (None for another school's or a wrong token)."""
    if not raw_token or len(raw_token) > 100:
        return None
    return db.session.scalar(select(DataExport).where(DataExport.token_hash == hash_token(raw_token)))


def chunk_of(export_id: int, seq: int) -> bytes | None:
    """One piece of the export's ZIP (None past the last, or once the file is dropped)."""
    return db.session.scalar(
        select(DataExportChunk.data).where(DataExportChunk.export_id == export_id, DataExportChunk.seq == seq)
    )


@jobs.job
def build_school_export(export_id: int, school_id: int) -> str:
    """Build the school's data as a ZIP of one JSON file and one CSV per table."""
    with tenancy.bound(school_id):
        export = db.session.get(DataExport, export_id)
        if export is None or export.status is not ExportStatus.QUEUED:
            return "skipped"
        try:
            size = _build_and_store(export_id, school_id)
        except Exception:  # the page must say it failed rather than poll forever
            db.session.rollback()
            export = db.session.get_one(DataExport, export_id)  # found above, before the rollback
            # A second run of the same job (a requeue) fails on the first one's pieces: the
            # export it finished stays ready.
            if export.status is ExportStatus.QUEUED:
                export.status, export.finished_at = ExportStatus.FAILED, utcnow()
                db.session.commit()
            raise
        export = db.session.get_one(DataExport, export_id)
        export.size = size
        export.status, export.finished_at = ExportStatus.READY, utcnow()
        db.session.commit()
        return "ready"


def _build_and_store(export_id: int, school_id: int) -> int:
    """Write the ZIP to a temporary file, then store it in pieces; returns its size."""
    with tempfile.TemporaryFile() as spool:
        write_school_zip(school_id, spool)
        size = spool.tell()
        spool.seek(0)
        seq = 0
        while piece := spool.read(CHUNK_SIZE):
            chunk = DataExportChunk(export_id=export_id, seq=seq, data=piece)
            db.session.add(chunk)
            db.session.flush()
            db.session.expunge(chunk)  # the session keeps no reference to the bytes sent
            seq += 1
        return size


# Each table of the export: its name, and the rows as plain values, read in batches.
def school_table_rows(school_id: int) -> dict[str, Callable[[], Iterator[dict]]]:
    """The school's tables, each a function yielding its rows (call them with the school bound)."""
    return {
        "school": lambda: _school_row(school_id),
        "members": _member_rows,
        "classes": lambda: _rows(SchoolClass, "id", "name", "grade", "school_year"),
        "class_helpers": lambda: _rows(ClassHelper, "class_id", "membership_id", "role"),
        "families": lambda: _rows(Family, "id", "name"),
        "guardians": lambda: _rows(Guardian, "family_id", "membership_id"),
        "students": lambda: _rows(Student, "id", "family_id", "first_name", "last_name"),
        "enrollments": lambda: _rows(Enrollment, "student_id", "class_id"),
        "messages": lambda: _message_rows(school_id),
    }


def school_tables(school_id: int) -> dict[str, list[dict]]:
    """Every table read whole into memory: the tests' oracle and the bench's old build (not the export)."""
    return {name: list(rows()) for name, rows in school_table_rows(school_id).items()}


def _school_row(school_id: int) -> Iterator[dict]:
    """The school itself, one row."""
    school = db.session.get_one(School, school_id)  # the school being exported exists
    yield {"name": school.name, "timezone": school.timezone, "created_at": _when(school.created_at)}


def _batched(query) -> Iterator:
    """Rows of a query fetched BATCH at a time (a server-side cursor on PostgreSQL)."""
    return iter(db.session.execute(query.execution_options(yield_per=BATCH)))


def _member_rows() -> Iterator[dict]:
    """Every membership of the school with its account's name and email."""
    query = (
        select(
            Membership.id,
            User.name,
            User.email,
            User.active,
            Membership.role,
            Membership.status,
            Membership.title,
            Membership.phone,
            Membership.address,
            Membership.created_at,
        )
        .join(User, User.id == Membership.user_id)
        .order_by(Membership.id)
    )
    for m_id, name, email, active, role, status, title, phone, address, joined in _batched(query):
        yield {
            "member_id": m_id,
            "name": name,
            "email": email,
            "account_active": active,
            "role": role.value,
            "status": status.value,
            "title": title,
            "phone": phone,
            "address": address,
            "joined_at": _when(joined),
        }


def _message_rows(school_id: int) -> Iterator[dict]:
    """The school's messages: subject, category and when (never the bodies)."""
    query = (
        select(MailMessage.subject, MailMessage.category, MailMessage.created_at)
        .where(MailMessage.school_id == school_id)
        .order_by(MailMessage.id)
    )
    for subject, category, created_at in _batched(query):
        yield {"subject": subject, "category": category.value, "written_at": _when(created_at)}


def _rows(model, *columns: str) -> Iterator[dict]:
    """Some columns of a school table, in the order of the first."""
    query = select(*(getattr(model, c) for c in columns)).order_by(getattr(model, columns[0]))
    for row in _batched(query):
        yield {c: (v.value if hasattr(v, "value") else v) for c, v in zip(columns, row, strict=True)}


def write_school_zip(school_id: int, out: BinaryIO) -> None:
    """school.json with every table, and the same tables as CSV files, written into ``out``.

    One pass over each table: its rows go to its CSV entry as they come and to school.json,
    spooled to a temporary file meanwhile (a ZIP takes one entry at a time) and added last.
    """
    with (
        tempfile.TemporaryFile() as json_spool,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        tables = JsonTables(json_spool)
        for name, rows in school_table_rows(school_id).items():
            tables.begin(name)
            with archive.open(f"{name}.csv", "w", force_zip64=True) as entry:
                _write_csv(io.TextIOWrapper(entry, encoding="utf-8", newline=""), rows(), tables)
        tables.close()
        json_spool.seek(0)
        with archive.open("school.json", "w", force_zip64=True) as entry:
            shutil.copyfileobj(json_spool, entry, CHUNK_SIZE)


def _write_csv(out: io.TextIOWrapper, rows: Iterator[dict], tables: JsonTables) -> None:
    """A table's rows to its CSV entry (a header from the first row) and to school.json."""
    with out:
        writer = None
        for row in rows:
            tables.row(row)
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(row))
                writer.writeheader()
            # A cell starting with = + - @ would run as a formula in a spreadsheet.
            writer.writerow({k: _safe_cell(v) for k, v in row.items()})
        tables.end()


class JsonTables:
    """Tables of rows written as they come: the text ``json.dumps(tables, indent=2)`` gives."""

    def __init__(self, binary: BinaryIO) -> None:
        self.out, self.tables, self.rows = io.TextIOWrapper(binary, encoding="utf-8"), 0, 0

    def begin(self, name: str) -> None:
        """Open the next table's list."""
        self.out.write(("{\n" if not self.tables else ",\n") + f"  {_dumps(name)}: [")
        self.tables, self.rows = self.tables + 1, 0

    def row(self, row: dict) -> None:
        """One row of the open table, indented as its place in the whole document."""
        self.out.write(("\n" if not self.rows else ",\n") + "    " + _row_text(row))
        self.rows += 1

    def end(self) -> None:
        """Close the open table's list."""
        self.out.write("\n  ]" if self.rows else "]")

    def close(self) -> None:
        """Close the document and hand back the file underneath, flushed and still open."""
        self.out.write("\n}" if self.tables else "{}")
        self.out.detach()  # flushes; closing the wrapper would close the file


def _dumps(value) -> str:
    """One value as school.json has always written it."""
    return json.dumps(value, indent=2, ensure_ascii=False)


_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def _scalar(value) -> str:
    """A plain value as json writes it (the common kinds without the encoder's overhead)."""
    if isinstance(value, str):
        return encode_basestring(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return int.__repr__(value)
    return _ENCODE(value)  # floats (nan and infinity are json's own business), and the rest


def _row_text(row: dict) -> str:
    """A row as ``json.dumps(..., indent=2)`` writes it at the depth of a table's rows.

    A row of plain values is joined by hand with the fast encoder (``indent`` makes json use
    its pure-Python encoder, several times slower); anything nested goes through json itself.
    """
    if not row or any(isinstance(v, dict | list | tuple) for v in row.values()):
        return _dumps(row).replace("\n", "\n    ")
    items = ",\n      ".join(f"{encode_basestring(k)}: {_scalar(v)}" for k, v in row.items())
    return "{\n      " + items + "\n    }"


def _safe_cell(value):
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
