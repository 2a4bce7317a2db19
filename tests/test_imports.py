"""CSV import: preview with each row's problems, all-or-nothing apply, re-import is a no-op, invitations."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import func, select
from werkzeug.test import EnvironBuilder

from app import tenancy
from app.extensions import db
from app.imports import services
from app.models import (
    Enrollment,
    Family,
    Guardian,
    Membership,
    MembershipStatus,
    Role,
    Student,
    User,
)
from app.models.audit import AuditEntry
from app.models.base import utcnow
from app.models.consent import ConsentEvent, ConsentKind
from app.models.imports import ImportRun, ImportStatus
from tests.conftest import sign_in, without_csrf_tokens

HEADER = (
    "family_key,guardian_name,guardian_email,guardian_phone,"
    "student_first_name,student_last_name,class_name,grade"
)
GOOD_ROWS = [
    "F-1,Ada Lovelace,ada@example.org,+1 555 0101,Byron,Lovelace,Rose,Grade 2",
    "F-1,Will King,will@example.org,,Byron,Lovelace,Rose,Grade 2",
    "F-1,Ada Lovelace,ada@example.org,,Annabella,Lovelace,Tulip,",
    "F-2,Grace Hopper,grace@example.org,,Walter,Hopper,tulip,Grade 3",
]
NEW_PASSWORD = "a brand new import password"


def _csv(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def _upload(client, data: bytes, filename: str = "families.csv", *, csrf: bool = True):
    fields = {"file": (io.BytesIO(data), filename)}
    if csrf:
        fields["csrf_token"] = client.csrf_token()
    # A large body is spooled to a temporary file: close it even when the app never read it.
    builder = EnvironBuilder(path="/import/", method="POST", data=fields, content_type="multipart/form-data")
    environ = builder.get_environ()
    try:
        return client.open(environ)
    finally:
        environ["wsgi.input"].close()
        builder.close()


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def school(make_school, make_member, make_class):
    """A school with classes Rose (Grade 2) and Tulip (Grade 3), an admin signed in by the tests."""
    school = make_school(name="Linden School")
    make_class(school, "Rose", grade="Grade 2")
    make_class(school, "Tulip", grade="Grade 3")
    school.admin = make_member(school, role=Role.ADMIN, email="admin@linden.example")
    return school


@pytest.fixture
def admin_client(client, school):
    sign_in(client, "admin@linden.example")
    return client


def _apply_latest(client, school):
    with tenancy.bound(school.id):
        run_id = db.session.scalar(select(ImportRun.id).order_by(ImportRun.id.desc()))
    return run_id, client.form(f"/import/{run_id}/apply")


def _counts(school) -> dict[str, int]:
    with tenancy.bound(school.id):
        return {m.__name__: _count(m) for m in (Family, Guardian, Student, Enrollment, Membership)}


def test_only_people_with_import_run_may_import(client, school, make_member):
    parent = make_member(school, email="parent@linden.example")
    sign_in(client, parent.user.email)
    assert client.get("/import/").status_code == 403
    assert _upload(client, _csv(*GOOD_ROWS)).status_code == 403
    assert client.get("/import/template.csv").status_code == 403


def test_page_documents_the_columns_and_offers_the_template(admin_client):
    page = admin_client.get("/import/").get_data(as_text=True)
    for column in ("family_key", "guardian_email", "student_first_name", "class_name", "grade"):
        assert f"<code>{column}</code>" in page
    assert 'href="/import/template.csv"' in page
    template = admin_client.get("/import/template.csv")
    assert template.mimetype == "text/csv"
    header = next(csv.reader(io.StringIO(template.get_data(as_text=True))))
    assert header[:3] == ["family_key", "guardian_name", "guardian_email"]
    assert "Import" in admin_client.get("/").get_data(as_text=True)  # in the navigation


def test_preview_lists_each_rows_problems_and_writes_nothing(admin_client, school):
    before = _counts(school)
    response = _upload(
        admin_client,
        _csv(
            GOOD_ROWS[0],
            "F-3,Bad Email,not-an-email,,Kid,Bad,Rose,",
            "F-4,No Class,nc@example.org,,Kid,Nc,Daisy,",
            GOOD_ROWS[0].upper().replace("ADA@EXAMPLE.ORG", "ada@example.org"),  # same key in other case
            "F-5,,missing@example.org,,Kid,Missing,Rose,",
            "F-6,Wrong Grade,wg@example.org,,Kid,Wg,Rose,Grade 5",
        ),
    )
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr id="line-(\d+)"(.*?)</tr>', page, re.S)}
    assert "None" in rows["2"]
    assert "is not an email address" in rows["3"]
    assert "There is no class named “Daisy”" in rows["4"]
    assert "Duplicate of line 2" in rows["5"]
    assert "guardian&#39;s name is missing" in rows["6"]
    assert "is in Grade 2, not Grade 5" in rows["7"]
    assert "5 of 6 rows have problems" in page
    assert _counts(school) == before
    with tenancy.bound(school.id):
        assert _count(ImportRun) == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"family_key,guardian_name\nF-1,Ada\n", "Missing columns: guardian_email"),
        (b"family_key;guardian_name;guardian_email\n", "semicolons"),
        (
            "family_key,guardian_name,guardian_email,student_first_name,student_last_name,class_name\n"
            "F-1,Zoë Müller,z@example.org,Léa,Müller,Rose\n".encode("latin-1"),
            "not UTF-8",
        ),
        (b"PK\x03\x04\x14\x00\x06\x00binary workbook", "not a CSV file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"),
        (b"", "The file is empty"),
        (b"\n\n", "empty"),
        (HEADER.encode() + b"\n", "no rows"),
        (HEADER.encode() + b'\nF-1,"unclosed,ada@example.org\n', "not valid CSV"),
    ],
)
def test_unreadable_files_are_refused_with_a_clear_message(admin_client, school, data, message):
    response = _upload(admin_client, data)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert message in page.replace("&#34;", '"')
    assert 'id="file-error"' in page  # next to the file field


def test_utf8_with_a_byte_order_mark_is_read(admin_client, school):
    data = ("\ufeff" + HEADER + "\nF-9,Zoë Müller,zoe@example.org,,Léa,Müller,Rose,\n").encode("utf-8")
    response = _upload(admin_client, data)
    assert response.status_code == 303
    assert "Zoë Müller" in admin_client.get(response.headers["Location"]).get_data(as_text=True)


def test_files_over_the_limit_are_refused_clearly(admin_client, school, app):
    # Over the route's limit: refused before the body is read, by the import's own page.
    huge = _csv(*GOOD_ROWS) + b"x" * (10 * 1024 * 1024 + 70 * 1024)
    response = _upload(admin_client, huge)
    assert response.status_code == 413
    assert "larger than 10 MB" in response.get_data(as_text=True)
    # Just over the file limit, within the form's allowance: the view's own check.
    app.config["IMPORT_MAX_BYTES"] = 2000
    response = _upload(admin_client, _csv(*GOOD_ROWS) + b"#" * 2000)
    assert response.status_code == 400 and "larger than" in response.get_data(as_text=True)
    # Other routes keep the app's limit: the import's limit is not global.
    assert app.config["MAX_CONTENT_LENGTH"] == 16 * 1024 * 1024


def test_upload_needs_the_csrf_token(admin_client, school):
    response = _upload(admin_client, _csv(*GOOD_ROWS), csrf=False)
    assert response.status_code == 400
    with tenancy.bound(school.id):
        assert _count(ImportRun) == 0


def _link(envelope) -> str:
    return re.search(r"http://localhost(/\S+)", envelope.text).group(1)


def test_apply_adds_everything_and_invites_new_guardians(admin_client, school, sent_mail):
    preview = admin_client.get(_upload(admin_client, _csv(*GOOD_ROWS)).headers["Location"])
    page = preview.get_data(as_text=True)
    assert "All 4 rows check out" in page and "2 families" in page and "3 people joining the school" in page
    run_id, applied = _apply_latest(admin_client, school)
    assert applied.status_code == 303
    done = admin_client.get(applied.headers["Location"]).get_data(as_text=True)
    assert "Done." in done and "data-hx-trigger" not in done
    assert _counts(school) == {"Family": 2, "Guardian": 3, "Student": 3, "Enrollment": 3, "Membership": 4}
    with tenancy.bound(school.id):
        lovelace = db.session.scalar(select(Family).where(Family.name == "Lovelace family"))
        assert {s.first_name for s in lovelace.students} == {"Byron", "Annabella"}
        ada = db.session.scalar(
            select(Membership)
            .join(User, User.id == Membership.user_id)
            .where(User.email == "ada@example.org")
        )
        assert ada.status is MembershipStatus.APPROVED and ada.phone == "+1 555 0101"
        assert ada.email_visibility is school.default_visibility
        run = db.session.get(ImportRun, run_id)
        assert run.status is ImportStatus.DONE and run.content is None
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "import.applied"))
        assert entry.actor_id == school.admin.user_id and entry.detail["families"] == 2
    assert sorted(m.to for m in sent_mail) == ["ada@example.org", "grace@example.org", "will@example.org"]
    # The invitation is the single-use password link of the reset flow.
    invitation = next(m for m in sent_mail if m.to == "grace@example.org")
    assert "Linden School" in invitation.text
    admin_client.post("/sign-out", headers={"X-CSRFToken": admin_client.csrf_token()})
    landing = admin_client.get(_link(invitation))
    assert landing.status_code == 303
    # Imported, Grace never ticked the policy box: choosing her first password asks for it.
    unticked = admin_client.form(
        landing.headers["Location"], {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    )
    assert unticked.status_code == 400
    assert "accept the privacy policy" in unticked.get_data(as_text=True)
    chosen = admin_client.form(
        landing.headers["Location"], {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD, "accept_policy": "y"}
    )
    assert chosen.status_code == 303
    grace = db.session.scalar(select(User).where(User.email == "grace@example.org"))
    accepted = db.session.scalars(
        select(ConsentEvent).where(
            ConsentEvent.user_id == grace.id, ConsentEvent.kind == ConsentKind.ACCEPTED
        )
    ).all()
    assert len(accepted) == 1
    assert sign_in(admin_client, "grace@example.org", NEW_PASSWORD).status_code == 303
    assert "Hopper family" in admin_client.get("/directory/").get_data(as_text=True)
    assert admin_client.get(_link(invitation)).status_code == 303  # sets the session token ...
    assert admin_client.get("/password/reset").status_code == 400  # ... which is spent


def test_reimporting_the_same_file_changes_nothing(admin_client, school, sent_mail):
    _upload(admin_client, _csv(*GOOD_ROWS))
    _apply_latest(admin_client, school)
    after_first, mails = _counts(school), len(sent_mail)
    again = admin_client.get(_upload(admin_client, _csv(*reversed(GOOD_ROWS))).headers["Location"])
    assert "applying it changes nothing" in again.get_data(as_text=True)
    _run_id, applied = _apply_latest(admin_client, school)
    assert applied.status_code == 303
    assert _counts(school) == after_first
    assert len(sent_mail) == mails


def test_the_preview_does_not_tell_whether_an_address_has_an_account(
    clock, admin_client, school, make_school, make_member
):
    """Joining never reveals an account; neither may an import's preview of one row."""
    make_member(make_school(name="Elsewhere School"), email="elsewhere@example.org")

    def preview_of(email: str) -> str:
        response = _upload(admin_client, _csv(f"F-9,Pat Person,{email},,Kim,Person,Rose,"))
        page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
        return re.sub(r"/import/\d+", "/import/N", page.replace(email, "EMAIL"))

    known = preview_of("elsewhere@example.org")
    clock.shift(seconds=2)  # the tokens' signed timestamps differ, as when two requests straddle a second
    unknown = preview_of("nobody-yet@example.org")
    assert "1 person joining the school" in known
    assert known != unknown  # the tokens did change: the comparison below is not vacuous
    assert without_csrf_tokens(known) == without_csrf_tokens(unknown)


def test_existing_accounts_and_families_are_matched_not_changed(admin_client, school, make_member, sent_mail):
    other_school_parent = make_member(school, email="known@example.org", name="Known Name")
    _upload(admin_client, _csv(*GOOD_ROWS))
    _apply_latest(admin_client, school)
    sent_mail.clear()
    # A new co-parent for F-2, and a known account (already a member) in a new family.
    _upload(
        admin_client,
        _csv(
            "F-2,Ray Hopper,ray@example.org,,Walter,Hopper,Tulip,",
            "f-7,Someone Else,KNOWN@example.org,,Mo,Known,Rose,",
        ),
    )
    _apply_latest(admin_client, school)
    with tenancy.bound(school.id):
        hopper = db.session.scalar(select(Family).where(Family.name == "Hopper family"))
        assert sorted(g.membership.user.email for g in hopper.guardians) == [
            "grace@example.org",
            "ray@example.org",
        ]
        assert len(hopper.students) == 1
    assert other_school_parent.user.name == "Known Name"  # the spreadsheet does not rename accounts
    assert sorted(m.to for m in sent_mail) == ["ray@example.org"]


def test_formula_cells_are_stored_as_text_and_neutralised_on_export(admin_client, school):
    row = 'F-8,"=HYPERLINK(""http://evil.example"")",eve@example.org,+1 555 0199,@SUM(A1),-Eve,Rose,'
    _upload(admin_client, _csv(row))
    _apply_latest(admin_client, school)
    with tenancy.bound(school.id):
        assert db.session.scalar(select(User.name).where(User.email == "eve@example.org")) == (
            '=HYPERLINK("http://evil.example")'
        )
        assert db.session.scalar(select(Student.first_name)) == "@SUM(A1)"
    exported = admin_client.get("/directory/export.csv").get_data(as_text=True)
    cells = [cell for line in csv.reader(io.StringIO(exported)) for cell in line]
    assert '\'=HYPERLINK("http://evil.example")' in cells
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)


def test_a_failure_while_applying_writes_nothing(admin_client, school, monkeypatch, sent_mail):
    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(services, "_invite", broken)
    before = _counts(school)
    _upload(admin_client, _csv(*GOOD_ROWS))
    run_id, applied = _apply_latest(admin_client, school)
    page = admin_client.get(applied.headers["Location"]).get_data(as_text=True)
    assert "nothing was changed" in page
    assert _counts(school) == before and sent_mail == []
    with tenancy.bound(school.id):
        assert db.session.get(ImportRun, run_id).status is ImportStatus.FAILED
    # A run can be applied once: a second click does not start it again.
    assert admin_client.form(f"/import/{run_id}/apply").status_code == 303
    assert _counts(school) == before


def test_large_files_go_to_the_worker_with_a_polling_progress_partial(admin_client, school, monkeypatch):
    monkeypatch.setattr(services, "WORKER_THRESHOLD", 2)
    enqueued = []
    real_enqueue = services.jobs.enqueue
    monkeypatch.setattr(
        services.jobs, "enqueue", lambda func, *a, **kw: (enqueued.append(func), real_enqueue(func, *a, **kw))
    )
    _upload(admin_client, _csv(*GOOD_ROWS))
    run_id, applied = _apply_latest(admin_client, school)
    assert enqueued[0] is services.apply_import_job
    # In-process mode ran the job after the request; the partial now says done and stops polling.
    partial = admin_client.get(
        f"/import/{run_id}/progress", headers={"HX-Request": "true", "HX-Target": "import-progress"}
    )
    body = partial.get_data(as_text=True)
    assert "<html" not in body and "Done." in body and "data-hx-trigger" not in body
    assert _counts(school)["Family"] == 2
    # While a run waits or runs, the partial polls itself every second.
    with tenancy.bound(school.id):
        waiting = ImportRun(status=ImportStatus.RUNNING, total_rows=1000, processed_rows=250, content="")
        db.session.add(waiting)
        db.session.commit()
        waiting_id = waiting.id
    polling = admin_client.get(
        f"/import/{waiting_id}/progress", headers={"HX-Request": "true", "HX-Target": "import-progress"}
    ).get_data(as_text=True)
    assert (
        'data-hx-trigger="every 1s"' in polling and "250 of 1000 rows" in polling and 'value="25"' in polling
    )
    assert 'data-hx-trigger="every 1s"' in admin_client.get(f"/import/{waiting_id}").get_data(as_text=True)


def test_another_schools_run_is_not_found(admin_client, school, make_school):
    other = make_school(name="Other School")
    with tenancy.bound(other.id):
        run = ImportRun(content=HEADER, total_rows=0)
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    assert admin_client.get(f"/import/{run_id}").status_code == 404
    assert admin_client.form(f"/import/{run_id}/apply").status_code == 404


def test_files_checked_but_never_applied_are_deleted_after_a_week(admin_client, school):
    _upload(admin_client, _csv(*GOOD_ROWS))
    with time_machine.travel(utcnow() + timedelta(days=8)):
        _upload(admin_client, _csv(GOOD_ROWS[0]))
    with tenancy.bound(school.id):
        assert db.session.scalars(select(ImportRun.total_rows)).all() == [1]


def test_an_oversized_upload_from_someone_signed_out_gets_the_plain_error(client, school):
    response = _upload(client, b"x" * (10 * 1024 * 1024 + 70 * 1024))
    assert response.status_code == 413
    page = response.get_data(as_text=True)
    assert "That file is too big" in page and "family_key" not in page


def test_a_queued_import_no_worker_started_can_be_started_again(admin_client, school):
    with tenancy.bound(school.id):
        run = ImportRun(
            content=_csv(*GOOD_ROWS).decode(),
            total_rows=4,
            status=ImportStatus.QUEUED,
            queued_at=utcnow() - timedelta(seconds=30),
        )
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    assert "Start it again" not in admin_client.get(f"/import/{run_id}").get_data(as_text=True)  # not yet
    assert admin_client.form(f"/import/{run_id}/again").status_code == 303
    assert _counts(school)["Family"] == 0
    with time_machine.travel(utcnow() + timedelta(minutes=3)):
        page = admin_client.get(f"/import/{run_id}").get_data(as_text=True)
        assert "No worker has started it" in page
        assert admin_client.form(f"/import/{run_id}/again").status_code == 303
    # In-process mode ran the job after that request: the run is done, once.
    assert "Done." in admin_client.get(f"/import/{run_id}").get_data(as_text=True)
    assert _counts(school)["Family"] == 2
