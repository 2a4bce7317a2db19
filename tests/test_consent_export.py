"""'Your data is yours' (P15): a person's own download, and a school's export with an expiring link."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import delete as sa_delete
from sqlalchemy import select

from app import tenancy
from app.consent import policy
from app.extensions import db
from app.mail import queue_email
from app.models import (
    Category,
    DeliveryMode,
    Family,
    Guardian,
    MailPreference,
    Role,
    SchoolClass,
)
from app.models.audit import AuditEntry
from app.models.base import utcnow
from app.models.consent import DataExport, DataExportChunk
from tests.conftest import sign_in


@pytest.fixture
def schools(make_school, make_member, make_class, make_family):
    birch = make_school(name="Birch School")
    wren = make_class(birch, "Wren")
    parent = make_member(birch, email="fern.family@example.org", name="Fern Family")
    with tenancy.bound(birch.id):
        parent.phone = "+1 555 0142"
        db.session.commit()
    make_family(birch, [parent], "Family household", [("Juniper", "Family", [wren.id])])
    neighbour = make_member(birch, email="ned.neighbour@example.org", name="Ned Neighbour")
    make_family(birch, [neighbour], "Neighbour household", [("Nettle", "Neighbour", [wren.id])])
    admin = make_member(birch, role=Role.ADMIN, email="bea.admin@example.org", name="Bea Admin")
    other = make_school(name="Cedar School")
    outsider = make_member(other, email="olaf.outsider@example.org", name="Olaf Outsider")
    other_admin = make_member(other, role=Role.ADMIN, email="cy.admin@example.org", name="Cy Admin")
    return {
        "birch": birch,
        "parent": parent,
        "admin": admin,
        "other": other,
        "outsider": outsider,
        "other_admin": other_admin,
    }


# --- my own data --------------------------------------------------------------------------------


def _families_in_download(client, email: str) -> list[dict]:
    """Sign in and download my data; the families of my one school."""
    sign_in(client, email)
    response = client.get("/account/my-data.json")
    assert response.status_code == 200
    (school,) = json.loads(response.get_data())["schools"]
    return school["families"]


def test_a_family_reaches_a_download_only_through_an_approved_membership(client, schools, make_member, app):
    """Waiting to join a family with its code, or removed from it, is not belonging to it."""
    from app.models import MembershipStatus

    birch = schools["birch"]
    with tenancy.bound(birch.id):
        family_id = db.session.scalar(select(Family.id).where(Family.name == "Family household"))
    asking = make_member(
        birch, status=MembershipStatus.PENDING, email="asking@example.org", name="Ash Asking"
    )
    removed = make_member(
        birch, status=MembershipStatus.DEACTIVATED, email="gone@example.org", name="Gil Gone"
    )
    closed = make_member(birch, email="closed@example.org", name="Cleo Closed")
    closed.user.active = False
    with tenancy.bound(birch.id):
        for member in (asking, removed, closed):
            db.session.add(Guardian(family_id=family_id, membership_id=member.id))
        db.session.commit()
    assert _families_in_download(app.test_client(), "asking@example.org") == []
    assert _families_in_download(app.test_client(), "gone@example.org") == []
    (family,) = _families_in_download(client, "fern.family@example.org")
    assert family["guardians"] == ["Fern Family"]  # not the waiting, removed or closed ones
    assert family["children"][0]["first_name"] == "Juniper"


def test_a_newcomer_waiting_for_approval_downloads_the_family_they_typed_in(
    client, schools, make_member, make_family
):
    from app.models import MembershipStatus

    birch = schools["birch"]
    newcomer = make_member(birch, status=MembershipStatus.PENDING, email="new@example.org", name="Nia New")
    with tenancy.bound(birch.id):
        wren = db.session.scalar(select(SchoolClass).where(SchoolClass.name == "Wren"))
    make_family(birch, [newcomer], "New household", [("Sorrel", "New", [wren.id])])
    (family,) = _families_in_download(client, "new@example.org")
    assert family["family"] == "New household" and family["guardians"] == ["Nia New"]


def test_a_person_downloads_their_own_and_their_familys_data(client, schools, sent_mail):
    parent = schools["parent"]
    db.session.add(
        MailPreference(user_id=parent.user_id, category=Category.NEWSLETTERS, mode=DeliveryMode.OFF)
    )
    policy.ensure_placeholder()
    queue_email("email_change_notice", [parent.user], name=parent.user.name)
    db.session.commit()
    sign_in(client, "fern.family@example.org")
    response = client.get("/account/my-data.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert "attachment" in response.headers["Content-Disposition"]
    data = json.loads(response.get_data(as_text=True))
    assert data["profile"] == {
        "name": "Fern Family",
        "email": "fern.family@example.org",
        "joined_at": data["profile"]["joined_at"],
    }
    (school,) = data["schools"]
    assert school["school"] == "Birch School" and school["directory_details"]["phone"] == "+1 555 0142"
    (family,) = school["families"]
    assert family["family"] == "Family household" and family["guardians"] == ["Fern Family"]
    assert family["children"] == [{"first_name": "Juniper", "last_name": "Family", "classes": ["Wren"]}]
    assert data["email_preferences"] == [{"category": "newsletters", "mode": "off"}]
    assert [e["subject"] for e in data["emails_sent_to_you"]]
    assert isinstance(data["consent_ledger"], list)
    text = response.get_data(as_text=True)
    for stranger in ("Nettle", "Ned Neighbour", "ned.neighbour", "Olaf", "Cedar School"):
        assert stranger not in text


def test_the_download_includes_the_consent_ledger(client, schools):
    from app.consent import ledger
    from app.models.consent import ConsentKind

    version = policy.ensure_placeholder()
    ledger.record(schools["parent"].user_id, ConsentKind.ACCEPTED, version.id)
    db.session.commit()
    sign_in(client, "fern.family@example.org")
    data = client.get("/account/my-data.json").get_json()
    assert (
        data["consent_ledger"][0]["what"] == "accepted" and data["consent_ledger"][0]["policy_version"] == 1
    )


def test_strangers_are_sent_to_sign_in(client, schools):
    assert client.get("/account/my-data.json").status_code == 302


# --- the school's export ------------------------------------------------------------------------


def _request_export(client) -> str:
    response = client.form("/school/export")
    assert response.status_code == 303
    location = response.headers["Location"]
    assert re.fullmatch(r"/school/export/[A-Za-z0-9_-]{40,}", location), location
    return location


def test_only_people_with_data_export_may_export(client, schools):
    sign_in(client, "fern.family@example.org")
    assert client.get("/school/export").status_code == 403
    assert client.form("/school/export").status_code == 403
    with tenancy.bound(schools["birch"].id):
        assert db.session.scalar(select(DataExport)) is None


def test_the_worker_builds_a_zip_of_json_and_csv_for_this_school_only(client, schools):
    sign_in(client, "bea.admin@example.org")
    status_url = _request_export(client)
    page = client.get(status_url).get_data(as_text=True)
    assert "Your export is ready" in page
    download = client.get(status_url + "/download")
    assert download.status_code == 200 and download.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(download.data))
    assert {"school.json", "members.csv", "families.csv", "students.csv", "classes.csv"} <= set(
        archive.namelist()
    )
    tables = json.loads(archive.read("school.json"))
    assert {m["email"] for m in tables["members"]} == {
        "fern.family@example.org",
        "ned.neighbour@example.org",
        "bea.admin@example.org",
    }
    students = list(csv.DictReader(io.StringIO(archive.read("students.csv").decode())))
    assert {s["first_name"] for s in students} == {"Juniper", "Nettle"}
    everything = b"".join(archive.read(name) for name in archive.namelist())
    assert b"Olaf" not in everything and b"Cedar" not in everything
    with tenancy.bound(schools["birch"].id):
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "export.school_data"))
        assert entry is not None and entry.actor_id == schools["admin"].user_id


def test_the_status_partial_is_what_htmx_polls(client, schools):
    sign_in(client, "bea.admin@example.org")
    status_url = _request_export(client)
    partial = client.get(status_url, headers={"HX-Request": "true", "HX-Target": "export-status"})
    body = partial.get_data(as_text=True)
    assert "<html" not in body and "Download the ZIP" in body


def test_a_queued_export_polls_and_offers_no_download_yet(client, schools):
    sign_in(client, "bea.admin@example.org")
    from app.consent import export as exports

    with tenancy.bound(schools["birch"].id):
        _, raw = exports.request_school_export(schools["admin"].user)
        db.session.commit()  # the job waits in this session (no request ran it)
    page = client.get(f"/school/export/{raw}").get_data(as_text=True)
    assert 'data-hx-trigger="every 2s"' in page and "Preparing the export" in page
    assert client.get(f"/school/export/{raw}/download").status_code == 410


def test_the_link_expires_after_24_hours(client, schools):
    sign_in(client, "bea.admin@example.org")
    status_url = _request_export(client)
    with time_machine.travel(utcnow() + timedelta(hours=24, minutes=1)):
        assert "This link has expired" in client.get(status_url).get_data(as_text=True)
        assert client.get(status_url + "/download").status_code == 410
    with tenancy.bound(schools["birch"].id):
        db.session.expire_all()
        assert db.session.scalar(select(DataExportChunk)) is None  # the file is gone, not just hidden


def test_another_schools_admin_or_a_wrong_token_finds_nothing(client, schools):
    sign_in(client, "bea.admin@example.org")
    status_url = _request_export(client)
    client.form("/sign-out")
    sign_in(client, "cy.admin@example.org")
    assert client.get(status_url).status_code == 404
    assert client.get(status_url + "/download").status_code == 404
    assert client.get("/school/export/not-a-real-token").status_code == 404
    assert client.get("/school/export/" + "x" * 500).status_code == 404


def test_the_database_keeps_only_a_hash_of_the_link(client, schools):
    sign_in(client, "bea.admin@example.org")
    token = _request_export(client).rsplit("/", 1)[1]
    with tenancy.bound(schools["birch"].id):
        stored = db.session.scalar(select(DataExport))
    assert token not in stored.token_hash and len(stored.token_hash) == 64


# --- the school's export, streamed ----------------------------------------------------------------


def _download(client, status_url: str) -> zipfile.ZipFile:
    download = client.get(status_url + "/download")
    assert download.status_code == 200
    assert download.headers["Content-Length"] == str(len(download.data))
    return zipfile.ZipFile(io.BytesIO(download.data))


def test_school_json_is_written_as_it_comes_with_the_text_json_dumps_gives():
    from app.consent.export import JsonTables

    tables = {
        "school": [{"name": "Birch\nSchool", "emoji": "Ünïcode ✓", "n": 1, "none": None, "yes": True}],
        "empty": [],
        "rows": [{"a": 1.5, "b": 'x"\\'}, {"a": 2, "b": ""}, {}, {"nested": [1, {"c": None}]}],
    }
    buffer = io.BytesIO()
    writer = JsonTables(buffer)
    for name, rows in tables.items():
        writer.begin(name)
        for row in rows:
            writer.row(row)
        writer.end()
    writer.close()
    assert buffer.getvalue().decode() == json.dumps(tables, indent=2, ensure_ascii=False)
    empty = io.BytesIO()
    JsonTables(empty).close()
    assert empty.getvalue() == b"{}"


def test_the_zip_is_stored_and_sent_in_pieces(client, schools, monkeypatch):
    from app.consent import export as exports

    monkeypatch.setattr(exports, "CHUNK_SIZE", 256)
    monkeypatch.setattr(exports, "BATCH", 1)  # every row its own fetch: the batching is exercised
    sign_in(client, "bea.admin@example.org")
    status_url = _request_export(client)
    with tenancy.bound(schools["birch"].id):
        export = db.session.scalar(select(DataExport))
        pieces = db.session.scalars(
            select(DataExportChunk.data)
            .where(DataExportChunk.export_id == export.id)
            .order_by(DataExportChunk.seq)
        ).all()
        assert len(pieces) > 3 and all(len(p) == 256 for p in pieces[:-1])
        assert export.size == sum(len(p) for p in pieces)
        expected = json.dumps(exports.school_tables(schools["birch"].id), indent=2, ensure_ascii=False)
    archive = _download(client, status_url)
    assert archive.testzip() is None
    assert archive.read("school.json").decode() == expected
    families = list(csv.DictReader(io.StringIO(archive.read("families.csv").decode())))
    assert sorted(f["name"] for f in families) == ["Family household", "Neighbour household"]


def test_csv_cells_that_would_run_as_formulas_are_neutralised(client, schools):
    parent = schools["parent"]
    parent.user.name = "=HYPERLINK(evil)"
    db.session.commit()
    sign_in(client, "bea.admin@example.org")
    archive = _download(client, _request_export(client))
    members = list(csv.DictReader(io.StringIO(archive.read("members.csv").decode())))
    assert "'=HYPERLINK(evil)" in {m["name"] for m in members}
    assert "=HYPERLINK(evil)" in {m["name"] for m in json.loads(archive.read("school.json"))["members"]}


def test_a_new_export_drops_the_pieces_of_expired_ones(client, schools):
    sign_in(client, "bea.admin@example.org")
    _request_export(client)
    with tenancy.bound(schools["birch"].id):
        first = db.session.scalar(select(DataExport.id))
    with time_machine.travel(utcnow() + timedelta(hours=25)):
        _request_export(client)
    with tenancy.bound(schools["birch"].id):
        kept = set(db.session.scalars(select(DataExportChunk.export_id)))
    assert kept and first not in kept


def test_a_ready_export_whose_pieces_are_gone_is_410_not_a_broken_file(client, schools):
    sign_in(client, "bea.admin@example.org")
    status_url = _request_export(client)
    with tenancy.bound(schools["birch"].id):
        db.session.execute(sa_delete(DataExportChunk))
        db.session.commit()
    assert client.get(status_url + "/download").status_code == 410


def test_deleting_an_export_deletes_its_pieces(client, schools):
    sign_in(client, "bea.admin@example.org")
    _request_export(client)
    with tenancy.bound(schools["birch"].id):
        db.session.delete(db.session.scalar(select(DataExport)))
        db.session.commit()
        assert db.session.scalar(select(DataExportChunk)) is None


def test_the_download_includes_what_the_person_read_and_how_they_hear_of_requests(client, schools):
    """The home feed's read marks are the person's data too (and only theirs are in it)."""
    from app.models.reading import MessageRead

    parent, admin = schools["parent"], schools["admin"]
    with tenancy.bound(parent.school_id):
        message = queue_email("email_change_notice", [parent.user], school_id=parent.school_id, name="x")
        db.session.flush()
        db.session.add(MessageRead(membership_id=parent.id, message_id=message.id))
        db.session.add(MessageRead(membership_id=admin.id, message_id=message.id))
        db.session.commit()
    sign_in(client, "fern.family@example.org")
    (school,) = json.loads(client.get("/account/my-data.json").get_data(as_text=True))["schools"]
    assert [read["message"] for read in school["announcements_read"]] == [message.id]  # not the admin's
    assert school["join_request_notices"] == "immediate"
