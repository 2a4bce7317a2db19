"""The reference data set: the sizes asked for, realistic shapes, and accounts that can sign in."""

from __future__ import annotations

import re

from sqlalchemy import func, select, text

from app import tenancy
from app.extensions import db
from app.models import ClassHelper, ClassRole, Enrollment, Family, Guardian, Membership, Role, Student
from app.reference_data import PASSWORD, generate
from tests.conftest import count_queries, sign_in


def _count(statement) -> int:
    return db.session.scalar(select(func.count()).select_from(statement.subquery()))


def test_builds_the_sizes_asked_for_with_varied_shapes(app):
    built = generate(families=40, classes=4, students=60, seed=7)
    db.session.commit()
    with tenancy.bound(built.school_id):
        assert _count(select(Family.id)) == 40
        assert _count(select(Student.id)) == 60
        assert _count(select(Enrollment.id)) == 60
        assert _count(select(Student.family_id).distinct()) == 40  # every family has a child
        guardians = _count(select(Guardian.id))
        assert 40 * 1.3 <= guardians <= 40 * 1.9
        # Some parents belong to two households.
        in_two = select(Guardian.membership_id).group_by(Guardian.membership_id).having(func.count() > 1)
        assert _count(in_two) >= 1
        assert _count(select(ClassHelper.id).where(ClassHelper.role == ClassRole.TEACHER)) == 4
        assert _count(select(ClassHelper.id).where(ClassHelper.role == ClassRole.ROOM_PARENT)) == 4
        assert _count(select(Membership.id).where(Membership.role == Role.ROOM_PARENT)) == 4
        for field in ("email", "phone", "address"):
            column = getattr(Membership, f"{field}_visibility")
            assert _count(select(column).distinct()) == 3, f"every {field} visibility choice is in use"
    assert built.counts["families"] == 40


def test_two_sets_in_one_database_do_not_collide(app):
    first = generate(families=3, classes=1, students=3)
    second = generate(families=3, classes=1, students=3)
    db.session.commit()
    assert first.school_id != second.school_id and first.admin_email != second.admin_email


def test_accounts_sign_in_and_see_the_directory(app, client):
    built = generate(families=5, classes=2, students=6)
    db.session.commit()
    assert sign_in(client, built.staff_email, PASSWORD).status_code in (302, 303)
    page = client.get("/directory/")
    assert page.status_code == 200 and "family" in page.get_data(as_text=True)


def test_cli_builds_a_set(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["reference-data", "--families", "4", "--classes", "2", "--students", "5"])
    assert result.exit_code == 0, result.output
    assert re.search(r"families +4\n", result.output)
    refused = runner.invoke(args=["reference-data", "--families", "4", "--students", "3"])
    assert refused.exit_code != 0


def _surfaces(built, *, staff: bool) -> list[tuple[str, dict]]:
    """Every directory surface, with the headers that make it a page or an htmx partial."""
    partial = {"HX-Request": "true", "HX-Target": "directory-results"}
    urls = [
        ("/directory/", {}),
        ("/directory/?page=9999", {}),  # past the last page at both sizes: shows the last one
        ("/directory/?q=family", partial),
        ("/directory/?q=an", partial),
        (f"/directory/?class_id={built.first_class_id}", partial),
        ("/directory/?grade=Grade+1", partial),
        ("/directory/staff", {}),
        ("/directory/me/preview?as=classmate", {}),
        ("/classes/", {}),
        (f"/classes/{built.first_class_id}", {}),
    ]
    if staff:
        urls += [("/directory/print", {}), ("/directory/export.csv", {}), ("/directory/print?q=an", {})]
    return urls


def _query_counts(client, built, *, staff: bool) -> dict[str, int]:
    sign_in(client, built.staff_email if staff else built.parent_email, PASSWORD)
    counts = {}
    for _round in range(2):  # the first round may still write the new session
        for url, headers in _surfaces(built, staff=staff):
            with count_queries() as statements:
                response = client.get(url, headers=headers)
            assert response.status_code == 200, url
            label = url.replace(f"={built.first_class_id}", "=<first>").replace(
                f"/{built.first_class_id}", "/<first>"
            )
            counts[label + (" (partial)" if headers else "")] = len(statements)
    return counts


def test_every_directory_surface_runs_the_same_queries_at_10_and_1000_families(app, build_app):
    small = generate(families=10, classes=3, students=15, seed=1)
    large = generate(families=1000, classes=30, students=1500, seed=2)
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:  # as autovacuum would, after a bulk load
            conn.execute(text("ANALYZE"))
            conn.commit()
    for staff in (True, False):
        at_10 = _query_counts(app.test_client(), small, staff=staff)
        at_1000 = _query_counts(app.test_client(), large, staff=staff)
        assert at_10 == at_1000, f"staff={staff}"


def test_a_page_past_the_end_shows_the_last_page(app, client):
    built = generate(families=30, classes=2, students=30)
    db.session.commit()
    sign_in(client, built.staff_email, PASSWORD)
    assert "30 families · page 1 of 2" in client.get("/directory/").get_data(as_text=True)
    last = client.get("/directory/?page=9999").get_data(as_text=True)
    assert "30 families · page 2 of 2" in last and last.count('class="card family"') == 5
