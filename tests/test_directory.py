"""The directory: per-field privacy enforced in one place for pages, partials, print and CSV."""

from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import insert, select, text

from app import tenancy
from app.auth.passwords import hash_password
from app.extensions import db
from app.models import (
    Enrollment,
    Family,
    Guardian,
    Membership,
    MembershipStatus,
    Role,
    Student,
    User,
    Visibility,
    listings,
)
from tests.conftest import count_queries, sign_in


def _family(make_family, school, member, name, school_class, **details):
    """``member``'s family, one child (Kid<Surname>) in ``school_class``; ``details`` set on ``member``."""
    with tenancy.bound(school.id):
        for key, value in details.items():
            setattr(member, key, value)
        db.session.commit()
    surname = name.split()[0]
    return make_family(school, [member], name, [(f"Kid{surname}", surname, [school_class.id])])


@pytest.fixture
def school_with_families(make_school, make_member, make_class, make_family):
    """Two classes; Olive's details: email to her classes, phone to the school, address to staff only."""
    school = make_school(name="Linden School")
    rose, tulip = (make_class(school, n, grade="Grade 2") for n in ("Rose", "Tulip"))
    olive = make_member(school, email="olive.owner@example.org", name="Olive Owner")
    _family(
        make_family,
        school,
        olive,
        "Owner family",
        rose,
        phone="+1 555 0100",
        address="12 Privet Lane",
        email_visibility=Visibility.CLASSES,
        phone_visibility=Visibility.SCHOOL,
        address_visibility=Visibility.STAFF,
    )
    classmate = make_member(school, email="clara@example.org", name="Clara Classmate")
    _family(make_family, school, classmate, "Classmate family", rose)
    elsewhere = make_member(school, email="eli@example.org", name="Eli Elsewhere")
    _family(make_family, school, elsewhere, "Elsewhere family", tulip)
    teacher = make_member(school, role=Role.STAFF, email="tess@example.org", name="Tess Teacher")
    return {
        "school": school,
        "rose": rose,
        "classmate": classmate,
        "elsewhere": elsewhere,
        "teacher": teacher,
    }


SEES = {
    # viewer: (email, phone, address) of Olive
    "classmate": (True, True, False),
    "elsewhere": (False, True, False),
    "teacher": (True, True, True),
}


def _olive_seen(text):
    return ("olive.owner@example.org" in text, "+1 555 0100" in text, "12 Privet Lane" in text)


@pytest.mark.parametrize("viewer", list(SEES))
def test_each_viewer_sees_only_what_olive_allows_on_every_surface(client, school_with_families, viewer):
    member = school_with_families[viewer]
    if viewer == "teacher":
        pass
    sign_in(client, member.user.email)
    page = client.get("/directory/").get_data(as_text=True)
    assert "Owner family" in page
    assert _olive_seen(page) == SEES[viewer]
    partial = client.get(
        "/directory/?q=owner", headers={"HX-Request": "true", "HX-Target": "directory-results"}
    )
    assert "<html" not in partial.get_data(as_text=True)
    assert _olive_seen(partial.get_data(as_text=True)) == SEES[viewer]
    rose_page = client.get(f"/classes/{school_with_families['rose'].id}").get_data(as_text=True)
    assert "12 Privet Lane" not in rose_page or SEES[viewer][2]
    if viewer == "teacher":  # staff may print and export: the same rules apply there
        printed = client.get("/directory/print").get_data(as_text=True)
        assert _olive_seen(printed) == SEES[viewer]
        exported = client.get("/directory/export.csv").get_data(as_text=True)
        assert _olive_seen(exported) == SEES[viewer]
    else:
        assert client.get("/directory/print").status_code == 403
        assert client.get("/directory/export.csv").status_code == 403


def test_parent_granted_export_gets_only_what_they_may_see(client, school_with_families, grant_permissions):
    elsewhere = school_with_families["elsewhere"]
    grant_permissions(elsewhere, "directory.export")
    sign_in(client, elsewhere.user.email)
    rows = list(csv.DictReader(io.StringIO(client.get("/directory/export.csv").get_data(as_text=True))))
    olive = next(r for r in rows if r["Guardian"] == "Olive Owner")
    # A leading + would start a formula in a spreadsheet, so the phone is neutralised too.
    assert (olive["Email"], olive["Phone"], olive["Address"]) == ("", "'+1 555 0100", "")


def test_the_csv_streams_in_batches_with_the_same_rows(client, school_with_families, monkeypatch):
    """A large school's export is written a few families at a time, never built whole."""
    from app.directory import services

    sign_in(client, school_with_families["teacher"].user.email)
    whole = client.get("/directory/export.csv").get_data(as_text=True)
    monkeypatch.setattr(services, "EXPORT_BATCH", 1)
    response = client.get("/directory/export.csv", buffered=False)
    assert response.is_streamed
    pieces = [piece.decode() for piece in response.response]
    response.close()
    assert "".join(pieces) == whole
    families = {row["Family"] for row in csv.DictReader(io.StringIO(whole))}
    assert len(pieces) == 1 + len(families)  # the header, then one piece per batch
    assert pieces[0] == "Family,Guardian,Email,Phone,Address,Children\r\n"


def test_past_the_cap_the_count_says_more_and_the_pages_still_go_on(
    client, school_with_families, monkeypatch
):
    """A large school's matches are counted up to COUNT_CAP ("1,000+ families"), not all of them."""
    from app.directory import services

    sign_in(client, school_with_families["teacher"].user.email)
    exact = client.get("/directory/").get_data(as_text=True)
    families = int(re.search(r"(\d+) families", exact).group(1))
    assert families >= 3
    monkeypatch.setattr(services, "COUNT_CAP", 1)
    monkeypatch.setattr(services, "PAGE_SIZE", 1)
    first = client.get("/directory/").get_data(as_text=True)
    assert (
        "1+ families · page 1<" in first
        and "page=2" in first
        and " of " not in first.split("families")[1][:20]
    )
    last = client.get(f"/directory/?page={families}").get_data(as_text=True)
    assert f"page={families + 1}" not in last and f"page={families - 1}" in last
    past = client.get("/directory/?page=9999").get_data(as_text=True)  # an old link: the last page
    assert f"· page {families}<" in past


def test_pending_and_deactivated_people_are_not_listed(
    client, school_with_families, make_member, make_family
):
    school = school_with_families["school"]
    pending = make_member(school, status=MembershipStatus.PENDING, name="Pending Penelope")
    gone = make_member(school, name="Gone Gordon")
    _family(make_family, school, pending, "Pending family", school_with_families["rose"])
    _family(make_family, school, gone, "Gone family", school_with_families["rose"])
    gone.user.active = False
    db.session.commit()
    sign_in(client, school_with_families["teacher"].user.email)
    page = client.get("/directory/").get_data(as_text=True)
    assert "Pending Penelope" not in page and "Gone Gordon" not in page
    assert "Gone Gordon" not in client.get("/directory/export.csv").get_data(as_text=True)


def test_search_and_filters(client, school_with_families):
    sign_in(client, school_with_families["teacher"].user.email)
    by_child = client.get("/directory/?q=kidelsewhere").get_data(as_text=True)
    assert "Elsewhere family" in by_child and "Owner family" not in by_child
    by_class = client.get(f"/directory/?class_id={school_with_families['rose'].id}").get_data(as_text=True)
    assert "Owner family" in by_class and "Elsewhere family" not in by_class
    wildcard = client.get("/directory/?q=%25").get_data(as_text=True)  # '%' is text, not a wildcard
    assert "0 families" in wildcard
    for junk in ("?page=-3", "?page=abc", "?class_id=x", "?page=99999999999", "?grade=" + "g" * 500):
        assert client.get("/directory/" + junk).status_code == 200, junk


def test_my_details_form_and_preview(client, school_with_families):
    classmate = school_with_families["classmate"]
    sign_in(client, classmate.user.email)
    bad = client.form(
        "/directory/me",
        {
            "phone": "call me maybe",
            "address": "1 Road",
            "email_visibility": "school",
            "phone_visibility": "nonsense",
            "address_visibility": "staff",
        },
    )
    assert bad.status_code == 400
    body = bad.get_data(as_text=True)
    assert "Use digits, spaces" in body and "1 Road" in body
    ok = client.form(
        "/directory/me",
        {
            "phone": "+44 20 7946 0000",
            "address": "1 Road",
            "email_visibility": "school",
            "phone_visibility": "staff",
            "address_visibility": "classes",
        },
    )
    assert ok.status_code == 303
    as_schoolmate = client.get("/directory/me/preview?as=schoolmate").get_data(as_text=True)
    assert "clara@example.org" in as_schoolmate and "+44 20 7946 0000" not in as_schoolmate
    assert "1 Road" not in as_schoolmate
    as_classmate = client.get("/directory/me/preview?as=classmate").get_data(as_text=True)
    assert "1 Road" in as_classmate and "+44 20 7946 0000" not in as_classmate
    as_staff = client.get("/directory/me/preview?as=staff").get_data(as_text=True)
    assert "+44 20 7946 0000" in as_staff
    assert client.get("/directory/me/preview?as=nobody").status_code == 404


def test_previewing_as_staff_shows_only_my_own_details_as_staff_see_them(
    client, school_with_families, make_member
):
    """Olive keeps her address for staff only; her co-guardian previewing "as staff" must not read it."""
    school = school_with_families["school"]
    co_guardian = make_member(school, email="oscar@example.org", name="Oscar Owner")
    with tenancy.bound(school.id):
        family = db.session.scalar(select(Family).where(Family.name == "Owner family"))
        db.session.add(Guardian(family_id=family.id, membership_id=co_guardian.id))
        co_guardian.address = "99 Other Street"
        co_guardian.address_visibility = Visibility.STAFF
        db.session.commit()
    sign_in(client, "oscar@example.org")
    as_staff = client.get("/directory/me/preview?as=staff").get_data(as_text=True)
    assert "99 Other Street" in as_staff  # my own staff-only address, as staff would see it
    assert "12 Privet Lane" not in as_staff  # Olive's staff-only address stays hidden from me
    assert "+1 555 0100" in as_staff  # Olive shares her phone with the school: I see it anyway


def test_print_and_csv_carry_the_search_in_forms_not_link_addresses(client, school_with_families):
    """Analytics tools report a download link's full address; search words can be a child's name."""
    sign_in(client, school_with_families["teacher"].user.email)
    page = client.get("/directory/?q=Owner").get_data(as_text=True)
    assert not re.search(r'href="[^"]*(export\.csv|print)[^"]*"', page)
    assert re.search(
        r'<form method="get" action="/directory/export.csv">\s*<input type="hidden" name="q" value="Owner">',
        page,
    )
    # Outside the live region (screen readers hear the results only), replaced out of band.
    assert page.index('id="directory-export"') < page.index('id="directory-results"')
    partial = client.htmx("/directory/?q=Kid", target="directory-results", method="GET").get_data(
        as_text=True
    )
    assert 'id="directory-export" class="actions export-actions" data-hx-swap-oob="true"' in partial
    assert 'name="q" value="Kid"' in partial  # the forms follow the live search
    csv_body = client.get("/directory/export.csv?q=Owner").get_data(as_text=True)
    assert "Owner family" in csv_body and "Classmate family" not in csv_body


def test_csv_neutralises_formulas(client, school_with_families, make_member, make_family):
    school = school_with_families["school"]
    sneaky = make_member(school, name='=HYPERLINK("http://evil.example")')
    _family(make_family, school, sneaky, "+cmd family", school_with_families["rose"], address="@SUM(A1)")
    sign_in(client, school_with_families["teacher"].user.email)
    rows = list(csv.reader(io.StringIO(client.get("/directory/export.csv").get_data(as_text=True))))
    cells = [cell for row in rows for cell in row]
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)
    assert '\'=HYPERLINK("http://evil.example")' in cells and "'@SUM(A1)" in cells


def _bulk_families(school, school_class, count, offset):
    """Insert families with one approved guardian and one child each, fast (core inserts)."""
    password = hash_password("bulk families only")
    users = [
        {
            "email": f"bulk{offset + n}@example.org",
            "name": f"Bulk Parent {offset + n}",
            "password_hash": password,
            "mail_key": f"{offset + n:032d}",
        }
        for n in range(count)
    ]
    user_ids = list(db.session.scalars(insert(User).returning(User.id), users))
    member_ids = list(
        db.session.scalars(
            insert(Membership).returning(Membership.id),
            [
                {
                    "school_id": school.id,
                    "user_id": uid,
                    "role": Role.PARENT,
                    "status": MembershipStatus.APPROVED,
                }
                for uid in user_ids
            ],
        )
    )
    family_ids = list(
        db.session.scalars(
            insert(Family).returning(Family.id),
            [{"school_id": school.id, "name": f"Bulk family {offset + n:05d}"} for n in range(count)],
        )
    )
    db.session.execute(
        insert(Guardian),
        [
            {"school_id": school.id, "family_id": f, "membership_id": m}
            for f, m in zip(family_ids, member_ids, strict=True)
        ],
    )
    student_ids = list(
        db.session.scalars(
            insert(Student).returning(Student.id),
            [
                {"school_id": school.id, "family_id": f, "first_name": "Kid", "last_name": "Bulk"}
                for f in family_ids
            ],
        )
    )
    db.session.execute(
        insert(Enrollment),
        [{"school_id": school.id, "student_id": s, "class_id": school_class.id} for s in student_ids],
    )
    listings.refresh_listings(family_ids)  # bulk inserts, which no flush sees
    listings.refresh_members(member_ids)
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        # As autovacuum would: without statistics on freshly filled tables the planner
        # assumes one row each and nests loops over every family, student and enrollment.
        with db.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()


def test_query_counts_do_not_grow_with_the_data(client, make_school, make_member, make_class):
    school = make_school()
    school_class = make_class(school, "Big", grade="Grade 1")
    staff = make_member(school, role=Role.STAFF)
    sign_in(client, staff.user.email)
    urls = [
        "/directory/",
        "/directory/?q=bulk",
        f"/directory/?class_id={school_class.id}",
        "/directory/export.csv",
        "/directory/print",
        f"/classes/{school_class.id}",
    ]

    def counts():
        result = {}
        for url in urls:
            with count_queries() as statements:
                assert client.get(url).status_code == 200
            result[url] = len(statements)
        return result

    _bulk_families(school, school_class, 10, 0)
    counts()  # warm-up: the first requests after signing in may still write the session
    small = counts()
    _bulk_families(school, school_class, 990, 10)
    large = counts()
    assert small == large


def test_a_pending_co_guardians_name_finds_nothing_and_unlisted_families_are_not_counted(
    client, make_school, make_member, make_class, make_family
):
    school = make_school()
    birch = make_class(school, "Birch", grade="Grade 1")
    approved = make_member(school, name="Anna Approved")
    pending = make_member(school, status=MembershipStatus.PENDING, name="Zephyrine Pendingname")
    only_pending = make_member(school, status=MembershipStatus.PENDING, name="Otto Onlypending")
    make_family(school, [approved, pending], "Shared family", [("Kit", "Shared", [birch.id])])
    make_family(school, [only_pending], "Hidden family", [("Kit", "Shared", [birch.id])])
    sign_in(client, make_member(school, role=Role.STAFF).user.email)
    assert "0 families" in client.get("/directory/?q=zephyrine").get_data(as_text=True)
    everything = client.get("/directory/").get_data(as_text=True)
    assert "1 family" in everything and "Hidden family" not in everything
