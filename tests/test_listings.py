"""The kept listed-ness and search text (app/models/listings.py) follow every change of the
people, children and families they are made of; the search pages read only them."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, update

from app import tenancy
from app.classes import families
from app.extensions import db
from app.models import Family, Guardian, Membership, MembershipStatus, Role, Student, User, listings
from app.settings.people import people
from tests.conftest import sign_in


def _kept(family_id: int) -> tuple[bool, str]:
    """The family's kept columns as the database has them now."""
    db.session.expire_all()
    with tenancy.unscoped():
        row = db.session.execute(
            select(Family.listed, Family.search_text).where(Family.id == family_id)
        ).one()
    return bool(row.listed), row.search_text


def _found(client, q: str) -> str:
    """The directory's live-search partial for ``q``."""
    return client.get(f"/directory/?q={q}", headers={"HX-Request": "true", "HX-Target": "results"}).get_data(
        as_text=True
    )


def test_approval_lists_the_family_and_makes_its_guardian_findable(
    client, make_school, make_member, make_family
):
    school = make_school()
    staff = make_member(school, role=Role.STAFF)
    applicant = make_member(school, status=MembershipStatus.PENDING, name="Quentin Waiting")
    family = make_family(school, [applicant], "Quill family", [("Pia", "Quill", [])])
    assert _kept(family.id) == (False, "quill family\n\npia\nquill")
    sign_in(client, staff.user.email)
    assert "Quill family" not in _found(client, "quentin")

    assert (
        client.htmx(f"/members/{applicant.id}/approve", target=f"pending-{applicant.id}").status_code == 200
    )

    assert _kept(family.id) == (True, "quill family\nquentin waiting\npia\nquill")
    assert "Quill family" in _found(client, "quentin")


def test_a_pending_co_guardian_is_not_in_the_text_until_approved(make_school, make_member, make_family):
    school = make_school()
    head = make_member(school, name="Hana Head")
    second = make_member(school, status=MembershipStatus.PENDING, name="Zed Second")
    family = make_family(school, [head, second], "Oak family")
    assert "zed" not in _kept(family.id)[1]
    with tenancy.bound(school.id):
        db.session.get(Membership, second.id).status = MembershipStatus.APPROVED
        db.session.commit()
    assert _kept(family.id) == (True, "oak family\nhana head\nzed second\n")


def test_deactivation_and_closing_an_account_unlist_in_every_school(make_school, make_member, make_family):
    north, south = make_school(), make_school()
    here = make_member(north, name="Dora Twice")
    there = make_member(south, user=here.user)
    in_north = make_family(north, [here], "North family")
    in_south = make_family(south, [there], "South family")
    with tenancy.bound(south.id):
        db.session.get(Membership, there.id).status = MembershipStatus.DEACTIVATED
        db.session.commit()
    assert _kept(in_south.id) == (False, "south family\n\n")
    assert _kept(in_north.id)[0] is True

    db.session.get(User, here.user_id).active = False  # what closing an account does
    db.session.commit()
    assert _kept(in_north.id) == (False, "north family\n\n")


def test_a_renamed_account_is_found_by_its_new_name_in_each_of_its_schools(
    make_school, make_member, make_family
):
    north, south = make_school(), make_school()
    here = make_member(north, name="Old Name", email="same@example.org")
    there = make_member(south, user=here.user)
    families_made = [make_family(north, [here], "A family"), make_family(south, [there], "B family")]
    user = db.session.get(User, here.user_id)
    user.name, user.email = "Newly Named", "moved@example.org"
    db.session.commit()
    assert [_kept(f.id)[1].split("\n")[1] for f in families_made] == ["newly named", "newly named"]
    with tenancy.bound(south.id):
        assert [m.id for m in people("moved@")] == [there.id]
        assert people("same@") == []


def test_children_added_renamed_moved_and_removed_follow(make_school, make_member, make_family):
    school = make_school()
    parent = make_member(school, name="Pat Parent")
    first = make_family(school, [parent], "First family")
    other = make_family(school, [make_member(school, name="Ola Other")], "Other family")
    with tenancy.bound(school.id):
        child = Student(family_id=first.id, first_name="Mila", last_name="First")
        db.session.add(child)
        db.session.commit()
        assert _kept(first.id)[1].endswith("\nmila\nfirst")
        child = db.session.get(Student, child.id)
        child.first_name = "Milena"
        db.session.commit()
        assert _kept(first.id)[1].endswith("\nmilena\nfirst")
        db.session.get(Student, child.id).family_id = other.id
        db.session.commit()
        assert _kept(first.id)[1] == "first family\npat parent\n"
        assert _kept(other.id)[1] == "other family\nola other\nmilena\nfirst"
        families.remove_student(db.session.get(Family, other.id), db.session.get(Student, child.id))
        db.session.commit()
    assert _kept(other.id)[1] == "other family\nola other\n"


def test_a_family_renamed_or_a_guardian_removed_follows(make_school, make_member, make_family):
    school = make_school()
    parent = make_member(school, name="Gil Guardian")
    family = make_family(school, [parent], "Before family")
    with tenancy.bound(school.id):
        db.session.get(Family, family.id).name = "After Family"
        db.session.commit()
        assert _kept(family.id) == (True, "after family\ngil guardian\n")
        guardian = db.session.scalar(select(Guardian).where(Guardian.family_id == family.id))
        db.session.delete(guardian)
        db.session.commit()
    assert _kept(family.id) == (False, "after family\n\n")


def test_deleting_a_membership_refreshes_the_families_it_was_in(make_school, make_member, make_family):
    school = make_school()
    leaving = make_member(school, name="Lee Leaving")
    staying = make_member(school, name="Sam Staying")
    family = make_family(school, [leaving, staying], "Pair family")
    with tenancy.bound(school.id):  # the database cascades the membership's guardian rows away
        db.session.delete(db.session.get(Membership, leaving.id))
        db.session.commit()
    assert _kept(family.id) == (True, "pair family\nsam staying\n")


def test_the_check_sees_a_write_that_forgets(make_school, make_member, make_family):
    school = make_school()
    family = make_family(school, [make_member(school, name="Fay Forgotten")], "Stale family")
    with tenancy.bound(school.id):
        db.session.execute(
            update(Family).where(Family.id == family.id).values(name="Renamed behind its back")
        )
        db.session.commit()
    with db.engine.connect() as connection:
        assert listings.stale_rows(connection) == [("family", family.id)]
    listings.refresh_listings([family.id])  # what the write should have done
    db.session.commit()
    with db.engine.connect() as connection:
        assert listings.stale_rows(connection) == []


def test_people_walks_members_in_name_order_and_searches_name_or_email(make_school, make_member):
    school = make_school()
    make_member(school, name="Zoe Last", email="zoe@example.org")
    make_member(school, name="Abe First", email="abe@lookup.example.org")
    make_member(school, status=MembershipStatus.PENDING, name="Aaron Waiting")
    gone = make_member(school, status=MembershipStatus.DEACTIVATED, name="Mo Middle")
    with tenancy.bound(school.id):
        assert [m.user.name for m in people()] == ["Abe First", "Mo Middle", "Zoe Last"]
        assert [m.user.name for m in people("LOOKUP")] == ["Abe First"]
        assert [m.id for m in people("middle")] == [gone.id]
        assert people("waiting") == []


def test_a_child_moved_without_its_family_loaded_leaves_the_old_family(make_school, make_member, make_family):
    """Moving a child whose family_id had expired (after a commit) still refreshes the old family."""
    school = make_school()
    first = make_family(school, [make_member(school, name="Ann Alpha")], "A family", [("Secret", "Kid", [])])
    other = make_family(school, [make_member(school, name="Ben Beta")], "B family")
    with tenancy.bound(school.id):
        child = db.session.scalar(select(Student).where(Student.family_id == first.id))
        db.session.commit()  # expires the child: its old family_id is no longer in memory
        child.family_id = other.id
        db.session.commit()
    assert "secret" not in _kept(first.id)[1]
    assert _kept(other.id)[1].endswith("\nsecret\nkid")


def test_a_query_cannot_match_across_two_names(client, make_school, make_member, make_family):
    """The kept text separates names by line breaks; a query's line break is a space."""
    school = make_school()
    viewer = make_member(school, name="Vic Viewer")
    make_family(school, [viewer], "Viewer family")
    make_family(school, [make_member(school, name="Ann Alpha")], "Zed family")
    sign_in(client, viewer.user.email)
    assert "Zed family" in _found(client, "zed")
    assert "Zed family" not in _found(client, "family%0Aann")


def test_a_guardian_row_cannot_list_another_schools_member(make_school, make_member, make_family):
    """Only a member of the family's own school lists it or is found in it."""
    ours, theirs = make_school(), make_school()
    family = make_family(ours, [make_member(ours, status=MembershipStatus.PENDING)], "Lone family")
    outsider = make_member(theirs, name="Olga Outsider")
    with tenancy.unscoped():
        db.session.add(Guardian(school_id=ours.id, family_id=family.id, membership_id=outsider.id))
        db.session.commit()
    assert _kept(family.id) == (False, "lone family\n\n")


def test_a_concurrent_write_never_writes_back_a_name_just_removed(app, make_school, make_member, make_family):
    """PostgreSQL, two transactions on one family: one deactivates a guardian and has refreshed
    but not committed; the other renames a child and refreshes the same family. The second's
    refresh must wait and then read the first's outcome, not write the old names back."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("row locks are what is tested; SQLite has one writer at a time")
    school = make_school()
    ann, bob = make_member(school, name="Ann Alpha"), make_member(school, name="Bob Beta")
    family = make_family(school, [ann, bob], "Pair family", [("Kid", "Pair", [])])
    refreshed, go_on = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def deactivate_ann() -> None:
        try:
            with app.app_context(), tenancy.bound(school.id):
                db.session.get_one(Membership, ann.id).status = MembershipStatus.DEACTIVATED
                db.session.flush()  # the hook has rewritten the family without Ann, uncommitted
                refreshed.set()
                go_on.wait(timeout=10)
                time.sleep(0.5)  # the other transaction is now waiting on the family's row
                db.session.commit()
        except BaseException as error:  # reported by the test thread
            errors.append(error)
            refreshed.set()

    first = threading.Thread(target=deactivate_ann)
    first.start()
    assert refreshed.wait(timeout=10)
    with app.app_context(), tenancy.bound(school.id):
        db.session.scalar(select(Student).where(Student.family_id == family.id)).first_name = "Kit"
        go_on.set()
        db.session.commit()  # its refresh waits for the first transaction's commit
    first.join(timeout=15)
    assert not errors
    listed, text = _kept(family.id)
    assert listed and "ann" not in text and "\nkit\n" in text
