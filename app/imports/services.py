"""Checking and applying an import: what a file would change, then all of it in one transaction.

A row is one guardian and one child of one family. Each is matched on a stable key, so
importing the same file twice changes nothing the second time: the family by the school's
family key, the guardian by email, the child by name within the family, the class by name
(and grade). New guardians get an account with no usable password and an emailed
single-use link (the password-reset token) to choose one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app, request
from sqlalchemy import delete, func, insert, select, update

from app import audit, jobs, tenancy
from app.auth.passwords import hash_password
from app.extensions import db
from app.imports.parsing import FileProblem, ParsedFile, Row, check_against_school, decode, parse
from app.members import lifecycle
from app.models import (
    Enrollment,
    Family,
    Guardian,
    Membership,
    MembershipStatus,
    Role,
    School,
    SchoolClass,
    Student,
    User,
    listings,
)
from app.models.base import rowcount, utcnow
from app.models.imports import STALE_FILE, STOPPED, ImportedFamily, ImportRun, ImportStatus

log = logging.getLogger(__name__)

WORKER_THRESHOLD = 500  # rows; larger files are applied by the worker with a progress bar
STUCK_AFTER = timedelta(minutes=2)  # a queued run not started by then may be started again
PREVIEW_DAYS = 7  # a checked file not applied within this is deleted
CHUNK = 500  # ids per IN (...) list, well inside SQLite's parameter limit


@dataclass
class Checked:
    """A parsed file checked against the school: rows (with errors) and each row's class."""

    parsed: ParsedFile
    class_of: dict[int, int]

    @property
    def ok(self) -> bool:
        return not self.parsed.error_rows


def check(text: str) -> Checked:
    """Parse and check a file's text against the current school's classes (FileProblem if unreadable)."""
    parsed = parse(text)
    classes = db.session.execute(select(SchoolClass.id, SchoolClass.name, SchoolClass.grade)).all()
    return Checked(
        parsed, check_against_school(parsed, [(c_id, name, grade) for c_id, name, grade in classes])
    )


def read_upload(raw: bytes) -> tuple[str, Checked]:
    """The decoded text of an upload and its check (FileProblem if it cannot be read)."""
    text = decode(raw)
    return text, check(text)


def _chunks(values: list, size: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class Plan:
    """What applying the rows would create (existing rows are found, never changed)."""

    families: dict[str, int | None] = field(default_factory=dict)  # key -> existing id or None
    family_names: dict[str, str] = field(default_factory=dict)
    users: dict[str, int | None] = field(default_factory=dict)  # email -> existing user id or None
    user_names: dict[str, str] = field(default_factory=dict)
    members: dict[str, int] = field(default_factory=dict)  # email -> existing membership id
    phones: dict[str, str] = field(default_factory=dict)
    guardians: set[tuple[int, int]] = field(default_factory=set)  # existing (family id, membership id)
    students: dict[tuple[int, str, str], int] = field(default_factory=dict)  # existing by family and name
    enrollments: set[tuple[int, int]] = field(default_factory=set)  # existing (student id, class id)

    def counts(self, rows: list[Row], class_of: dict[int, int]) -> dict[str, int]:
        """How many families, guardians, children and class places the rows would add."""
        links, children, places = set(), set(), set()
        for row in rows:
            key, email, first, last = row.key
            family_id, member_id = self.families[key], self.members.get(email)
            if family_id is None or member_id is None or (family_id, member_id) not in self.guardians:
                links.add((key, email))
            student_id = self.students.get((family_id, first, last)) if family_id else None
            if student_id is None:
                children.add((key, first, last))
            if student_id is None or (student_id, class_of[row.line]) not in self.enrollments:
                places.add((key, first, last, class_of[row.line]))
        return {
            "families": sum(1 for v in self.families.values() if v is None),
            # No count of new against existing accounts: that would tell the school whether an
            # address has an account on the platform, which joining never reveals either.
            "memberships": sum(1 for email in self.users if email not in self.members),
            "guardians": len(links),
            "students": len(children),
            "enrollments": len(places),
        }


def plan(rows: list[Row]) -> Plan:
    """Look up, in a few queries per 500 keys, which families, people and children exist already."""
    result = Plan()
    for row in rows:
        key, email = row.values["family_key"].lower(), row.values["guardian_email"]
        result.families.setdefault(key, None)
        result.family_names.setdefault(
            key, row.values["family_name"] or f"{row.values['student_last_name']} family"
        )
        result.users.setdefault(email, None)
        result.user_names.setdefault(email, row.values["guardian_name"])
        if row.values["guardian_phone"]:
            result.phones.setdefault(email, row.values["guardian_phone"])
    for keys in _chunks(list(result.families)):
        statement = select(ImportedFamily.family_key, ImportedFamily.family_id).where(
            ImportedFamily.family_key.in_(keys)
        )
        result.families.update(dict(db.session.execute(statement).all()))
    for emails in _chunks(list(result.users)):
        result.users.update(
            dict(db.session.execute(select(User.email, User.id).where(User.email.in_(emails))).all())
        )
    existing_users = {uid: email for email, uid in result.users.items() if uid is not None}
    for ids in _chunks(list(existing_users)):
        memberships = select(Membership.user_id, Membership.id).where(Membership.user_id.in_(ids))
        result.members.update({existing_users[uid]: mid for uid, mid in db.session.execute(memberships)})
    family_ids = [fid for fid in result.families.values() if fid is not None]
    for ids in _chunks(family_ids):
        result.guardians.update(
            (family_id, membership_id)
            for family_id, membership_id in db.session.execute(
                select(Guardian.family_id, Guardian.membership_id).where(Guardian.family_id.in_(ids))
            )
        )
        students = db.session.execute(
            select(
                Student.family_id, func.lower(Student.first_name), func.lower(Student.last_name), Student.id
            ).where(Student.family_id.in_(ids))
        )
        result.students.update({(f, first, last): sid for f, first, last, sid in students})
    for ids in _chunks(list(result.students.values())):
        result.enrollments.update(
            (student_id, class_id)
            for student_id, class_id in db.session.execute(
                select(Enrollment.student_id, Enrollment.class_id).where(Enrollment.student_id.in_(ids))
            )
        )
    return result


def _insert_returning(model, rows: list[dict]) -> list[int]:
    if not rows:
        return []
    return list(db.session.scalars(insert(model).returning(model.id, sort_by_parameter_order=True), rows))


def apply(checked: Checked, school: School, *, progress: Callable[[int], None] = lambda done: None) -> dict:
    """Write everything the rows add, in the caller's transaction; returns what was created.

    Existing families, accounts, memberships, guardians and children are left as they are.
    """
    rows, class_of = checked.parsed.rows, checked.class_of
    found = plan(rows)
    counts = found.counts(rows, class_of)
    sid = school.id

    new_keys = [key for key, fid in found.families.items() if fid is None]
    new_family_ids = _insert_returning(
        Family, [{"school_id": sid, "name": found.family_names[k]} for k in new_keys]
    )
    # Every key has an id now: the ones found, and the ones just inserted (new_keys were the rest).
    families = {key: fid for key, fid in found.families.items() if fid is not None}
    families |= dict(zip(new_keys, new_family_ids, strict=True))
    if new_keys:
        db.session.execute(
            insert(ImportedFamily),
            [{"school_id": sid, "family_key": k, "family_id": families[k]} for k in new_keys],
        )

    # Nobody knows this password; hashed once per import (scrypt is slow on purpose), it makes
    # signing in to an invited account cost the same time as to any other.
    unusable = hash_password(secrets.token_urlsafe(32))
    new_emails = [email for email, uid in found.users.items() if uid is None]
    new_user_ids = _insert_returning(
        User,
        [
            {
                "email": e,
                "name": found.user_names[e],
                "password_hash": unusable,
                "mail_key": secrets.token_hex(16),
            }
            for e in new_emails
        ],
    )
    users = {**found.users, **dict(zip(new_emails, new_user_ids, strict=True))}
    joining = [email for email in users if email not in found.members]
    new_member_ids = _insert_returning(
        Membership,
        [
            {
                "school_id": sid,
                "user_id": users[e],
                "role": Role.PARENT,
                "status": MembershipStatus.APPROVED,  # the school vouches for the people it imports
                "decided_at": utcnow(),
                "phone": found.phones.get(e),
                "email_visibility": school.default_visibility,
                "phone_visibility": school.default_visibility,
            }
            for e in joining
        ],
    )
    members = {**found.members, **dict(zip(joining, new_member_ids, strict=True))}

    guardian_rows, student_rows, student_keys = {}, [], []
    students = dict(found.students)
    for row in rows:
        key, email, first, last = row.key
        link = (families[key], members[email])
        if link not in found.guardians and link not in guardian_rows:
            guardian_rows[link] = {"school_id": sid, "family_id": link[0], "membership_id": link[1]}
        child = (families[key], first, last)
        if child not in students:
            students[child] = -1  # placeholder until inserted
            student_keys.append(child)
            student_rows.append(
                {
                    "school_id": sid,
                    "family_id": families[key],
                    "first_name": row.values["student_first_name"],
                    "last_name": row.values["student_last_name"],
                }
            )
    if guardian_rows:
        db.session.execute(insert(Guardian), list(guardian_rows.values()))
    students.update(zip(student_keys, _insert_returning(Student, student_rows), strict=True))
    places = {}
    for row in rows:
        key, _email, first, last = row.key
        place = (students[(families[key], first, last)], class_of[row.line])
        if place not in found.enrollments:
            places[place] = {"school_id": sid, "student_id": place[0], "class_id": place[1]}
    if places:
        db.session.execute(insert(Enrollment), list(places.values()))
    progress(len(rows) // 2)  # the rows are written; what is left is one invitation per newcomer

    _invite(school, new_user_ids, [members[e] for e in joining if e not in new_emails], progress, len(rows))
    # Bulk inserts, which no flush sees: the families and members they touched are recomputed,
    # last, so the rows stay locked only until the import commits, not through the invitations.
    listings.refresh_members(new_member_ids)
    listings.refresh_listings(set(families.values()))
    return counts


def _invite(
    school: School, new_user_ids: list[int], existing_member_ids: list[int], progress: Callable, total: int
) -> None:
    """Email each new account a link to choose a password, and each existing account a notice."""
    invited = 0
    everyone = len(new_user_ids) + len(existing_member_ids) or 1
    for ids in _chunks(new_user_ids, 200):
        for user in db.session.scalars(select(User).where(User.id.in_(ids))):
            lifecycle.queue_invitation("import_invitation", school, user, has_account=False)
            invited += 1
        progress(total // 2 + total * invited // (2 * everyone))
    for ids in _chunks(existing_member_ids, 200):
        statement = select(User).join(Membership, Membership.user_id == User.id).where(Membership.id.in_(ids))
        for user in db.session.scalars(statement):
            lifecycle.queue_invitation("import_invitation", school, user, has_account=True)


def start(run: ImportRun) -> bool:
    """Claim a previewed run for applying (False if it was already claimed, e.g. a double click)."""
    claimed = db.session.execute(
        update(ImportRun)
        .where(ImportRun.id == run.id, ImportRun.status == ImportStatus.PREVIEWED)
        .values(status=ImportStatus.QUEUED, queued_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not rowcount(claimed):
        db.session.rollback()  # SQLite locks on any UPDATE, even one that matched nothing
        return False
    db.session.refresh(run)
    return True


def run_import(run: ImportRun) -> None:
    """Apply a queued run in one transaction; on any failure nothing is written and the run says so."""
    school = db.session.get_one(School, run.school_id)
    run_id = run.id
    running = db.session.execute(
        update(ImportRun)
        .where(ImportRun.id == run_id, ImportRun.status == ImportStatus.QUEUED)
        .values(status=ImportStatus.RUNNING, processed_rows=0)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if not rowcount(running):
        return  # another job (a run started again) has it, or it is finished
    db.session.refresh(run)
    try:
        checked = check(run.content or "")
        if not checked.ok:
            raise FileProblem(STALE_FILE)  # stored in English; shown via ImportRun.display_failure
        counts = apply(checked, school, progress=lambda done: _report_progress(run_id, done))
        run = db.session.get_one(ImportRun, run_id)
        run.status, run.summary, run.processed_rows = ImportStatus.DONE, counts, run.total_rows
        run.content = None  # the file's people now live in the directory; don't keep a second copy
        run.finished_at = utcnow()
        entry = audit.record(
            "import.applied", target=run.filename or "CSV file", rows=run.total_rows, **counts
        )
        entry.actor_id = run.created_by_id
        db.session.commit()
    except Exception as error:  # any failure: roll the whole file back and tell the person
        db.session.rollback()
        if not isinstance(error, FileProblem):
            log.exception("import run %s failed", run_id)
        run = db.session.get_one(ImportRun, run_id)
        run.status, run.finished_at = ImportStatus.FAILED, utcnow()
        run.failure = str(error)[:500] if isinstance(error, FileProblem) else STOPPED
        db.session.commit()


def _report_progress(run_id: int, done: int) -> None:
    """Record progress on its own connection, so the page can show it while the transaction runs.

    SQLite allows one writer at a time and the import's transaction is it: there the
    progress jumps from 0 to done.
    """
    if db.engine.dialect.name == "sqlite":
        return
    with db.engine.begin() as connection:
        connection.execute(update(ImportRun).where(ImportRun.id == run_id).values(processed_rows=done))


@jobs.job
def apply_import_job(run_id: int, school_id: int) -> None:
    """Worker: apply a large import run of one school."""
    with tenancy.bound(school_id):
        run = db.session.get(ImportRun, run_id)
        if run is not None:
            run_import(run)  # claims it, or leaves it to whoever already did


def apply_or_enqueue(run: ImportRun) -> bool:
    """Apply a small run now; queue a large one for the worker. True if it was queued."""
    if run.total_rows > WORKER_THRESHOLD:
        _enqueue(run)
        db.session.commit()
        return True
    run_import(run)
    return False


def _enqueue(run: ImportRun) -> None:
    jobs.enqueue(apply_import_job, run.id, run.school_id, job_timeout=1800)


def stuck(run: ImportRun) -> bool:
    """Queued for longer than STUCK_AFTER: Redis was down, or the job was lost with a worker."""
    return (
        run.status is ImportStatus.QUEUED
        and run.queued_at is not None
        and run.queued_at < utcnow() - STUCK_AFTER
    )


def start_again(run: ImportRun) -> bool:
    """Queue a stuck run once more (True if queued); the first job to claim it runs it."""
    if not stuck(run):
        return False
    run.queued_at = utcnow()
    _enqueue(run)
    db.session.commit()
    return True


def forget_stale_previews() -> None:
    """Delete files checked but never applied after PREVIEW_DAYS: they hold people's details."""
    cutoff = utcnow() - timedelta(days=PREVIEW_DAYS)
    db.session.execute(
        delete(ImportRun)
        .where(ImportRun.status == ImportStatus.PREVIEWED, ImportRun.created_at < cutoff)
        .execution_options(synchronize_session=False)
    )


def max_bytes() -> int:
    """The largest file the import takes (10 MB unless configured)."""
    return current_app.config.get("IMPORT_MAX_BYTES", 10 * 1024 * 1024)


def limit_upload_size() -> None:
    """before_request, before the CSRF check reads the body: refuse an upload over the import's
    limit (the app allows more elsewhere) without reading it."""
    if request.endpoint == "imports.index" and request.method == "POST":
        request.max_content_length = max_bytes() + 64 * 1024  # the file and the form around it
