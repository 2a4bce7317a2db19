"""Classes and the staff directory: classes.manage creates, edits and deletes; everyone else can't."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import ClassHelper, ClassRole, Membership, MembershipStatus, Role, SchoolClass
from app.models.audit import AuditEntry
from tests.conftest import assert_constant_queries, sign_in


def _helpers(school, class_id):
    db.session.expire_all()
    with tenancy.bound(school.id):
        rows = db.session.execute(
            select(ClassHelper.membership_id, ClassHelper.role).where(ClassHelper.class_id == class_id)
        ).all()
    return {(mid, role) for mid, role in rows}


def _actions(school):
    with tenancy.bound(school.id):
        entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [e.action for e in entries if e.action.startswith(("class.", "staff."))]


@pytest.fixture
def admin_client(client, make_school, make_member):
    school = make_school(name="Oak School")
    admin = make_member(school, role=Role.ADMIN)
    sign_in(client, admin.user.email)
    client.school = school
    return client


def test_create_a_class_with_teachers_and_room_parents(admin_client, make_member):
    school = admin_client.school
    teacher = make_member(school, role=Role.STAFF, name="Tess Teacher")
    parent = make_member(school, name="Rita Roomparent")
    response = admin_client.form(
        "/classes/new",
        {
            "name": "Hazel",
            "grade": "Grade 3",
            "school_year": "2026-27",
            "teachers": [str(teacher.id)],
            "room_parents": [str(parent.id)],
        },
    )
    assert response.status_code == 303
    with tenancy.bound(school.id):
        created = db.session.scalar(select(SchoolClass))
    assert response.headers["Location"] == f"/classes/{created.id}"
    assert (created.name, created.grade, created.school_year) == ("Hazel", "Grade 3", "2026-27")
    assert _helpers(school, created.id) == {
        (teacher.id, ClassRole.TEACHER),
        (parent.id, ClassRole.ROOM_PARENT),
    }
    page = admin_client.get(f"/classes/{created.id}").get_data(as_text=True)
    assert "Tess Teacher" in page and "Rita Roomparent" in page
    assert _actions(school) == ["class.created"]


def test_errors_show_by_the_field_and_keep_what_was_typed(admin_client, make_class):
    make_class(admin_client.school, "Hazel")
    response = admin_client.htmx(
        "/classes/new", {"name": "hazel", "grade": "", "school_year": "2026-27"}, target="class-form"
    )
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<form id="class-form"')  # only the form, for htmx to swap
    assert 'id="name-error"' in body and "There is already a class of this name in that year." in body
    assert 'id="grade-error"' in body and "Enter the grade." in body
    plain = admin_client.form("/classes/new", {"name": "Rowan", "grade": "3", "school_year": "next year"})
    assert plain.status_code == 400
    page = plain.get_data(as_text=True)
    assert "Write the year like 2026-27." in page and 'value="next year"' in page and 'value="Rowan"' in page


def test_someone_of_another_school_or_a_pending_member_cannot_be_made_teacher(
    admin_client, make_school, make_member, make_class
):
    from app.models import MembershipStatus

    school = admin_client.school
    stranger = make_member(make_school(), role=Role.STAFF)
    waiting = make_member(school, status=MembershipStatus.PENDING)
    school_class = make_class(school)
    response = admin_client.form(
        f"/classes/{school_class.id}/edit",
        {"name": "Hazel", "grade": "3", "school_year": "2026-27", "teachers": [str(stranger.id)]},
    )
    assert response.status_code == 400  # not one of the choices
    response = admin_client.form(
        f"/classes/{school_class.id}/edit",
        {"name": "Hazel", "grade": "3", "school_year": "2026-27", "teachers": [str(waiting.id)]},
    )
    assert response.status_code == 400
    assert _helpers(school, school_class.id) == set()


def test_edit_and_delete_are_audited(admin_client, make_member, make_class):
    school = admin_client.school
    school_class = make_class(school)
    teacher = make_member(school, role=Role.STAFF)
    edit_page = admin_client.get(f"/classes/{school_class.id}/edit").get_data(as_text=True)
    assert 'value="Hazel"' in edit_page
    response = admin_client.form(
        f"/classes/{school_class.id}/edit",
        {"name": "Hazel Room", "grade": "Grade 4", "school_year": "2027-28", "teachers": [str(teacher.id)]},
    )
    assert response.status_code == 303
    db.session.expire_all()
    with tenancy.bound(school.id):
        assert db.session.get(SchoolClass, school_class.id).name == "Hazel Room"
    assert admin_client.form(f"/classes/{school_class.id}/delete").status_code == 303
    with tenancy.bound(school.id):
        assert db.session.scalars(select(SchoolClass)).all() == []
        assert db.session.scalars(select(ClassHelper)).all() == []
    assert _actions(school) == ["class.changed", "class.deleted"]


def test_another_schools_class_is_not_found(admin_client, make_school, make_class):
    foreign = make_class(make_school(), "Secret")
    assert admin_client.get(f"/classes/{foreign.id}/edit").status_code == 404
    assert admin_client.form(f"/classes/{foreign.id}/edit", {"name": "x"}).status_code == 404
    assert admin_client.form(f"/classes/{foreign.id}/delete").status_code == 404
    assert admin_client.get(f"/classes/{foreign.id}").status_code == 404


@pytest.mark.parametrize("role", [Role.PARENT, Role.ROOM_PARENT, Role.STAFF])
def test_without_classes_manage_nothing_changes(client, make_school, make_member, role, make_class):
    school = make_school()
    school_class = make_class(school)
    member = make_member(school, role=role)
    sign_in(client, member.user.email)
    assert client.get("/classes/new").status_code == 403
    assert client.get("/classes/staff").status_code == 403
    assert client.form(f"/classes/{school_class.id}/delete").status_code == 403
    assert client.form("/classes/staff", {"member": str(member.id), "title": "Head"}).status_code == 403
    assert "New class" not in client.get("/classes/").get_data(as_text=True)


def test_classes_manage_is_a_permission_not_a_role(client, make_school, make_member, grant_permissions):
    school = make_school()
    parent = make_member(school, role=Role.PARENT)
    grant_permissions(parent, "classes.manage")
    sign_in(client, parent.user.email)
    assert client.get("/classes/new").status_code == 200
    response = client.form("/classes/new", {"name": "Birch", "grade": "1", "school_year": "2026-27"})
    assert response.status_code == 303


def test_staff_directory_entries_title_and_classes_taught(admin_client, make_member, make_class):
    school = admin_client.school
    hazel, juniper = make_class(school, "Hazel"), make_class(school, "Juniper")
    nurse = make_member(school, name="Nora Nurse")  # a parent role: listed once given a title
    response = admin_client.form(
        "/classes/staff", {"member": str(nurse.id), "title": "School nurse", "classes": [str(hazel.id)]}
    )
    assert response.status_code == 303
    directory = admin_client.get("/directory/staff").get_data(as_text=True)
    assert "<span>Nora Nurse</span></span></td><td>School nurse</td><td>Hazel</td>" in directory
    # The row form edits the same entry (prefixed fields); errors come back next to the field.
    too_long = admin_client.form(
        "/classes/staff",
        {
            "form_prefix": f"s{nurse.id}",
            f"s{nurse.id}-member": str(nurse.id),
            f"s{nurse.id}-title": "x" * 101,
        },
    )
    assert too_long.status_code == 400
    assert "Use at most 100 characters." in too_long.get_data(as_text=True)
    admin_client.form(
        "/classes/staff",
        {
            "form_prefix": f"s{nurse.id}",
            f"s{nurse.id}-member": str(nurse.id),
            f"s{nurse.id}-title": "Nurse",
            f"s{nurse.id}-classes": [str(juniper.id)],
        },
    )
    assert _helpers(school, juniper.id) == {(nurse.id, ClassRole.TEACHER)}
    assert _helpers(school, hazel.id) == set()
    assert admin_client.form("/classes/staff/remove", {"member": str(nurse.id)}).status_code == 303
    assert "<span>Nora Nurse</span>" not in admin_client.get("/directory/staff").get_data(as_text=True)
    db.session.expire_all()
    with tenancy.bound(school.id):
        assert db.session.get(Membership, nurse.id).title is None
    assert _actions(school).count("staff.changed") == 3


def test_staff_entry_for_another_schools_member_is_refused(admin_client, make_school, make_member):
    stranger = make_member(make_school(), name="Stan Stranger")
    response = admin_client.form("/classes/staff", {"member": str(stranger.id), "title": "Spy"})
    assert response.status_code == 400
    assert "Choose a person from the list." in response.get_data(as_text=True)
    db.session.expire_all()
    with tenancy.unscoped():
        assert db.session.get(Membership, stranger.id).title is None
    assert admin_client.form("/classes/staff/remove", {"member": str(stranger.id)}).status_code == 404


def test_admin_pages_run_the_same_queries_for_10_or_200_rows(admin_client, make_member, make_class):
    school = admin_client.school

    def add(n, offset):
        for i in range(offset, offset + n):
            member = make_member(school, role=Role.STAFF, name=f"Staff {i}")
            make_class(school, f"Class {i}", grade="1", helpers=[(member, ClassRole.TEACHER)])

    assert_constant_queries(
        [(admin_client, url) for url in ("/classes/", "/classes/staff", "/classes/new")], add
    )


def test_class_page_lists_only_approved_helpers(client, make_school, make_member, make_class):
    school = make_school()
    helpers = [
        (make_member(school, status=status, name=name), ClassRole.TEACHER)
        for status, name in (
            (MembershipStatus.PENDING, "Paula Pending"),
            (MembershipStatus.REJECTED, "Rita Rejected"),
        )
    ]
    birch = make_class(school, "Birch", grade="Grade 1", helpers=helpers)
    sign_in(client, make_member(school).user.email)
    page = client.get(f"/classes/{birch.id}").get_data(as_text=True)
    assert "Paula Pending" not in page and "Rita Rejected" not in page
