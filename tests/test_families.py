"""Families: who edits children, class changes that wait for approval, and what nobody sees meanwhile."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import Enrollment, Family, Guardian, Role, SchoolClass, Student, Visibility
from app.models.directory import ChangeStatus, EnrollmentChange
from tests.conftest import assert_constant_queries, sign_in


def _enrolled(school, student_first):
    db.session.expire_all()
    with tenancy.bound(school.id):
        rows = db.session.execute(
            select(SchoolClass.name)
            .join(Enrollment, Enrollment.class_id == SchoolClass.id)
            .join(Student, Student.id == Enrollment.student_id)
            .where(Student.first_name == student_first)
        ).all()
    return {name for (name,) in rows}


def _student_id(school, first):
    with tenancy.bound(school.id):
        return db.session.scalar(select(Student.id).where(Student.first_name == first))


def _edit_student(client, family, student_id, first, last, class_ids, url="/classes/families/mine/students"):
    prefix = f"st{student_id}" if student_id else "new"
    data = {
        "form_prefix": prefix,
        "family_id": str(family.id),
        f"{prefix}-student_id": str(student_id or ""),
        f"{prefix}-first_name": first,
        f"{prefix}-last_name": last,
        f"{prefix}-classes": [str(c.id) for c in class_ids],
    }
    return client.form(url, data)


@pytest.fixture
def world(make_school, make_member, make_class, make_family):
    """Oak school: Gina's family (Mia in Hazel); Jules's family in Juniper with details for classmates."""
    school = make_school(name="Oak School")
    school.families_edit_own = True
    db.session.commit()
    hazel, juniper = make_class(school, "Hazel"), make_class(school, "Juniper")
    gina = make_member(school, name="Gina Guardian", email="gina@example.org")
    family = make_family(school, [gina], "Guardian family", [("Mia", "Guardian", [hazel.id])])
    jules = make_member(school, name="Jules Juniper", email="jules@example.org")
    with tenancy.bound(school.id):
        jules.phone = "+1 555 0199"
        jules.phone_visibility = Visibility.CLASSES
        db.session.commit()
    make_family(school, [jules], "Juniper family", [("Jo", "Juniper", [juniper.id])])
    staff = make_member(school, role=Role.STAFF, name="Sam Staff")
    return school, hazel, juniper, gina, family, staff


def test_a_move_waits_for_approval_and_shows_nobody_the_new_class(client, world, app):
    school, hazel, juniper, gina, family, staff = world
    sign_in(client, gina.user.email)
    mia = _student_id(school, "Mia")
    response = _edit_student(client, family, mia, "Mia", "Guardian", [juniper])
    assert response.status_code == 303
    page = client.get("/classes/families/mine").get_data(as_text=True)
    assert "The class change waits for the school&#39;s approval." in page
    assert "move from Hazel to Juniper" in page
    # Still in the old class only: the old roster lists the family, the new one does not.
    assert _enrolled(school, "Mia") == {"Hazel"}
    assert "Guardian family" in client.get(f"/classes/{hazel.id}").get_data(as_text=True)
    assert "Guardian family" not in client.get(f"/classes/{juniper.id}").get_data(as_text=True)
    # Gina does not become a Juniper classmate: Jules's class-only phone stays hidden from her.
    directory = client.get("/directory/?q=Juniper").get_data(as_text=True)
    assert "Jules Juniper" in directory and "+1 555 0199" not in directory

    approver = app.test_client()
    sign_in(approver, staff.user.email)
    queue = approver.get("/members/pending").get_data(as_text=True)
    assert "Class changes waiting" in queue and "Move from Hazel to Juniper" in queue
    change_id = int(re.search(r'id="change-(\d+)"', queue).group(1))
    decided = approver.htmx(
        "/classes/families/changes/approve", {"target": str(change_id)}, target=f"change-{change_id}"
    )
    assert decided.status_code == 200
    assert (
        decided.get_data(as_text=True)
        .lstrip()
        .startswith(f'<li class="card queue-row decided" id="change-{change_id}"')
    )
    assert _enrolled(school, "Mia") == {"Juniper"}
    assert "+1 555 0199" in client.get("/directory/?q=Juniper").get_data(as_text=True)
    again = approver.form("/classes/families/changes/approve", {"target": str(change_id)})
    assert again.status_code == 404  # decided once


def test_adding_a_class_or_a_child_waits_removing_a_class_does_not(client, world, app):
    school, hazel, juniper, gina, family, staff = world
    sign_in(client, gina.user.email)
    mia = _student_id(school, "Mia")
    _edit_student(client, family, mia, "Mia", "Guardian", [hazel, juniper])
    assert _enrolled(school, "Mia") == {"Hazel"}
    assert _edit_student(client, family, None, "Noah", "Guardian", [hazel]).status_code == 303
    assert _enrolled(school, "Noah") == set()  # the child exists, the class waits
    with tenancy.bound(school.id):
        waiting = db.session.scalars(
            select(EnrollmentChange).where(EnrollmentChange.status == ChangeStatus.PENDING)
        )
        assert {(c.from_class_id, c.to_class_id) for c in waiting} == {(None, juniper.id), (None, hazel.id)}
    # Leaving a class needs nobody's approval (and drops Mia's waiting request).
    _edit_student(client, family, mia, "Mia", "Guardian", [])
    assert _enrolled(school, "Mia") == set()

    approver = app.test_client()
    sign_in(approver, staff.user.email)
    queue = approver.get("/members/pending").get_data(as_text=True)
    change_id = int(re.search(r'id="change-(\d+)"', queue).group(1))
    assert "Join Hazel" in queue and "Juniper" not in queue
    response = approver.form("/classes/families/changes/reject", {"target": str(change_id)})
    assert response.status_code == 303 and response.headers["Location"] == "/members/pending"
    assert "Class change rejected." in approver.get("/members/pending").get_data(as_text=True)
    assert _enrolled(school, "Noah") == set()


def test_without_families_edit_own_only_families_manage_edits(client, world, app, grant_permissions):
    school, hazel, juniper, gina, family, staff = world
    school.families_edit_own = False
    db.session.commit()
    sign_in(client, gina.user.email)
    page = client.get("/classes/families/mine").get_data(as_text=True)
    assert "Mia Guardian (Hazel)" in page and "Add child" not in page
    assert _edit_student(client, family, None, "Noah", "Guardian", [hazel]).status_code == 403
    assert client.get(f"/classes/families/{family.id}").status_code == 403
    assert client.get("/classes/families/").status_code == 403

    # An admin (families.manage) edits any family; changes apply at once.
    editor = app.test_client()
    admin = staff
    grant_permissions(admin, "families.manage")
    sign_in(editor, admin.user.email)
    assert "Guardian family" in editor.get("/classes/families/?q=guard").get_data(as_text=True)
    url = f"/classes/families/{family.id}/students"
    mia = _student_id(school, "Mia")
    assert _edit_student(editor, family, mia, "Mia", "Guardian", [juniper], url=url).status_code == 303
    assert _enrolled(school, "Mia") == {"Juniper"}
    renamed = editor.form(f"/classes/families/{family.id}/name", {"name": "Guardian-Smith family"})
    assert renamed.status_code == 303
    missing = editor.form(f"/classes/families/{family.id}/name", {"name": ""})
    assert missing.status_code == 400 and "Enter the family&#39;s name." in missing.get_data(as_text=True)


def test_errors_stay_by_the_field_and_keep_what_was_typed(client, world):
    school, hazel, juniper, gina, family, staff = world
    sign_in(client, gina.user.email)
    response = _edit_student(client, family, None, "Noah", "", [hazel])
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert 'id="new-last_name-error"' in body and "Enter the child&#39;s last name." in body
    assert 'value="Noah"' in body


def test_another_familys_child_or_another_schools_family_is_not_found(
    client, world, make_school, make_member, make_family, grant_permissions
):
    school, hazel, juniper, gina, family, staff = world
    jo = _student_id(school, "Jo")  # Jules's child
    sign_in(client, gina.user.email)
    assert _edit_student(client, family, jo, "Jo", "Hacked", [hazel]).status_code == 404
    with tenancy.bound(school.id):
        other_family = db.session.scalar(select(Family).where(Family.name == "Juniper family"))
    forged = _edit_student(client, other_family, None, "Cuckoo", "Egg", [hazel])
    assert forged.status_code == 404  # not Gina's family
    assert _enrolled(school, "Jo") == {"Juniper"}

    elsewhere = make_school()
    stranger = make_member(elsewhere, role=Role.SUPERADMIN)
    foreign = make_family(elsewhere, [stranger], "Foreign family")
    grant_permissions(staff, "families.manage")
    editor = client.application.test_client()
    sign_in(editor, staff.user.email)
    assert editor.get(f"/classes/families/{foreign.id}").status_code == 404
    assert editor.form(f"/classes/families/{foreign.id}/name", {"name": "x"}).status_code == 404


def test_guardians_see_their_co_guardians_and_code(client, world, make_member):
    school, hazel, juniper, gina, family, staff = world
    partner = make_member(school, name="Pat Partner")
    with tenancy.bound(school.id):
        db.session.add(Guardian(family_id=family.id, membership_id=partner.id))
        db.session.commit()
    sign_in(client, gina.user.email)
    page = client.get("/classes/families/mine").get_data(as_text=True)
    assert "Pat Partner" in page and "Jules Juniper" not in page
    code = re.search(r'<code id="family-code">([A-Z0-9]+)</code>', page).group(1)
    assert len(code) == 10
    assert code in client.get("/classes/families/mine").get_data(as_text=True)  # stable until rotated
    rotated = client.form("/classes/families/mine/code", {"family_id": str(family.id)})
    assert rotated.status_code == 303
    new_page = client.get("/classes/families/mine").get_data(as_text=True)
    assert code not in new_page and re.search(r'<code id="family-code">[A-Z0-9]{10}</code>', new_page)


def test_family_lists_and_the_queue_run_the_same_queries_for_10_or_200(
    client, world, make_member, make_family, grant_permissions
):
    school, hazel, juniper, gina, family, staff = world
    grant_permissions(staff, "families.manage")
    sign_in(client, staff.user.email)

    def add(n, offset):
        for i in range(offset, offset + n):
            parent = make_member(school, name=f"Parent {i}")
            made = make_family(school, [parent], f"Bulk{i} family", [(f"Kid{i}", f"Bulk{i}", [hazel.id])])
            with tenancy.bound(school.id):
                student_id = db.session.scalar(select(Student.id).where(Student.family_id == made.id))
                db.session.add(
                    EnrollmentChange(student_id=student_id, from_class_id=hazel.id, to_class_id=juniper.id)
                )
                db.session.commit()

    assert_constant_queries(
        [(client, url) for url in ("/classes/families/", "/members/pending", "/classes/families/mine")], add
    )


def test_another_schools_class_change_or_guardian_request_cannot_be_decided(
    client, world, make_school, make_member, make_class, make_family
):
    school, hazel, juniper, gina, family, staff = world
    elsewhere = make_school()
    elm = make_class(elsewhere, "Elm")
    far_parent = make_member(elsewhere)
    far_family = make_family(elsewhere, [far_parent], "Far family", [("Finn", "Far", [elm.id])])
    with tenancy.bound(elsewhere.id):
        finn = db.session.scalar(select(Student.id).where(Student.family_id == far_family.id))
        change = EnrollmentChange(student_id=finn, from_class_id=None, to_class_id=elm.id)
        db.session.add(change)
        db.session.commit()
    sign_in(client, staff.user.email)
    assert client.form("/classes/families/changes/approve", {"target": str(change.id)}).status_code == 404
    assert "Finn" not in client.get("/members/pending").get_data(as_text=True)
    db.session.expire_all()
    with tenancy.bound(elsewhere.id):
        assert db.session.get(EnrollmentChange, change.id).status is ChangeStatus.PENDING
    guardian = client.application.test_client()
    sign_in(guardian, gina.user.email)
    response = guardian.form(
        "/classes/families/mine/guardians/approve",
        {"family_id": str(far_family.id), "target": str(far_parent.id)},
    )
    assert response.status_code == 404


def test_a_guardian_removes_their_own_child_but_no_one_elses(client, world):
    school, hazel, juniper, gina, family, staff = world
    sign_in(client, gina.user.email)
    jo = _student_id(school, "Jo")
    forged = client.form(
        "/classes/families/mine/students/remove", {"family_id": str(family.id), "target": str(jo)}
    )
    assert forged.status_code == 404
    mia = _student_id(school, "Mia")
    response = client.form(
        "/classes/families/mine/students/remove", {"family_id": str(family.id), "target": str(mia)}
    )
    assert response.status_code == 303
    assert _student_id(school, "Mia") is None and _student_id(school, "Jo") is not None
    assert "Guardian family" not in client.get(f"/classes/{hazel.id}").get_data(as_text=True)


def _many_changes(school, family, hazel, juniper, count):
    """``count`` children of one family, each waiting to move; pairs share a timestamp."""
    from datetime import timedelta

    from app.models.base import utcnow

    start = utcnow() - timedelta(days=1)
    with tenancy.bound(school.id):
        students = [
            Student(family_id=family.id, first_name=f"Kid{i:02d}", last_name="Many") for i in range(count)
        ]
        db.session.add_all(students)
        db.session.flush()
        for i, student in enumerate(students):
            db.session.add(
                EnrollmentChange(
                    student_id=student.id,
                    from_class_id=hazel.id,
                    to_class_id=juniper.id,
                    created_at=start + timedelta(seconds=i // 2),  # ties: the id orders them
                )
            )
        db.session.commit()


def _kids_on(page: str) -> list[int]:
    return [int(n) for n in re.findall(r"<strong>Kid(\d\d) Many</strong>", page)]


def test_class_changes_beside_the_queue_come_50_at_a_time_oldest_first(client, world):
    school, hazel, juniper, gina, family, staff = world
    _many_changes(school, family, hazel, juniper, 55)
    sign_in(client, staff.user.email)
    first = client.get("/members/pending").get_data(as_text=True)
    assert _kids_on(first) == list(range(50))
    assert "55 changes waiting" in first
    link = re.search(r'href="(/members/pending\?changes_after=\d+)"', first)
    assert link, "a next link for the class changes"
    second = client.get(link.group(1)).get_data(as_text=True)
    assert _kids_on(second) == list(range(50, 55))  # continues, no duplicates, none left out
    assert not re.search(r"href=\"[^\"]*changes_after=\d+", second)  # the last page has no next link
    assert 'href="/members/pending">Oldest class changes' in second


def test_the_class_changes_count_is_capped(client, world, monkeypatch):
    from app import paging

    school, hazel, juniper, gina, family, staff = world
    monkeypatch.setattr(paging, "COUNT_CAP", 3)
    _many_changes(school, family, hazel, juniper, 5)
    sign_in(client, staff.user.email)
    assert "3+ changes waiting" in client.get("/members/pending").get_data(as_text=True)


@pytest.mark.parametrize("cursor", ["junk", "²", "-1", "0", "99999999999", "2147483648", "", "1.5"])
def test_a_bad_class_changes_cursor_starts_from_the_oldest(client, world, cursor):
    school, hazel, juniper, gina, family, staff = world
    _many_changes(school, family, hazel, juniper, 3)
    sign_in(client, staff.user.email)
    response = client.get("/members/pending", query_string={"changes_after": cursor})
    assert response.status_code == 200
    assert _kids_on(response.get_data(as_text=True)) == [0, 1, 2]


def test_a_decided_change_as_cursor_starts_from_the_oldest(client, world):
    school, hazel, juniper, gina, family, staff = world
    _many_changes(school, family, hazel, juniper, 3)
    with tenancy.bound(school.id):
        decided = db.session.scalar(select(EnrollmentChange).order_by(EnrollmentChange.id.desc()))
        decided.status = ChangeStatus.REJECTED
        db.session.commit()
        decided_id = decided.id
    sign_in(client, staff.user.email)
    page = client.get(f"/members/pending?changes_after={decided_id}").get_data(as_text=True)
    assert _kids_on(page) == [0, 1]
