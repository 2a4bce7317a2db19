"""The calendar: school and class events, who may change them, and the personal iCalendar feed."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from app import tenancy
from app.calendar import ical
from app.extensions import db
from app.models import Role
from app.models.audit import AuditEntry
from app.models.base import utcnow
from app.models.calendar import CalendarFeed, Event
from tests.conftest import CLOCK_START, assert_constant_queries, sign_in

# Every test here runs on the clock fixture (CLOCK_START, a winter morning in 2026): the dates
# typed below are after it, so they are upcoming whatever day the suite runs.
pytestmark = pytest.mark.usefixtures("clock")


@pytest.fixture
def world(make_school, make_member, make_class, make_family):
    school = make_school(name="Oak School")
    school.timezone = "America/New_York"
    db.session.commit()
    hazel, juniper = (make_class(school, n, grade="3") for n in ("Hazel", "Juniper"))
    hazel_parent = make_member(school, name="Hana Hazel", email="hana@example.org")
    _parent_in(make_family, school, hazel_parent, hazel, "Hazel family")
    juniper_parent = make_member(school, name="Jon Juniper", email="jon@example.org")
    _parent_in(make_family, school, juniper_parent, juniper, "Juniper family")
    staff = make_member(school, role=Role.STAFF, name="Sam Staff", email="sam@example.org")
    return school, hazel, juniper, hazel_parent, juniper_parent, staff


def _parent_in(make_family, school, member, school_class, name):
    """Make ``member`` the guardian of one child in ``school_class``."""
    make_family(school, [member], name, children=[("Kid", name.split()[0], [school_class.id])])


# An evening after CLOCK_START (in New York, on standard time): upcoming under the clock fixture.
EVENT_DAY = (CLOCK_START + timedelta(days=330)).date().isoformat()


def _form(title="Bake sale", start=f"{EVENT_DAY}T18:30", end=f"{EVENT_DAY}T20:00", class_id="", **extra):
    return {"title": title, "starts_at": start, "ends_at": end, "class_id": str(class_id), **extra}


def test_times_are_typed_and_shown_on_the_school_clock_and_stored_in_utc(client, world):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    sign_in(client, staff.user.email)
    response = client.form("/calendar/new", _form(location="Hall", description="Cakes"))
    assert response.status_code == 303 and response.headers["Location"] == "/calendar/"
    with tenancy.bound(school.id):
        event = db.session.scalar(select(Event))
        assert event.starts_at == datetime.fromisoformat(f"{EVENT_DAY}T23:30+00:00")  # 18:30 in New York, EST
        assert event.created_by_id == staff.id
        assert [e.action for e in db.session.scalars(select(AuditEntry))].count("event.created") == 1
    edit = client.get(f"/calendar/{event.id}/edit").get_data(as_text=True)
    assert f'value="{EVENT_DAY}T18:30"' in edit and "America/New_York" in edit


def test_end_before_start_and_nonsense_are_errors_by_the_field(client, world):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    sign_in(client, staff.user.email)
    response = client.htmx("/calendar/new", _form(end=f"{EVENT_DAY}T17:00"), target="event-form")
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<form id="event-form"')
    assert 'id="ends_at-error"' in body and "The end cannot be before the start." in body
    assert 'value="Bake sale"' in body and f'value="{EVENT_DAY}T17:00"' in body
    nonsense = client.form("/calendar/new", _form(start="tomorrow-ish", title=""))
    assert nonsense.status_code == 400
    page = nonsense.get_data(as_text=True)
    assert 'id="starts_at-error"' in page and "Give the event a title." in page
    with tenancy.bound(school.id):
        assert db.session.scalars(select(Event)).all() == []


def test_class_events_reach_only_that_class_and_staff(app, world, make_event):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    make_event(school, "Hazel picnic", school_class=hazel)
    secret = make_event(school, "Juniper trip", school_class=juniper)
    make_event(school, "Sports day")
    views = {}
    for who in (hazel_parent, juniper_parent, staff):
        viewer = app.test_client()
        sign_in(viewer, who.user.email)
        page = viewer.get("/calendar/").get_data(as_text=True)
        views[who.user.name] = {t for t in ("Hazel picnic", "Juniper trip", "Sports day") if t in page}
        views[who.user.name + " edit"] = viewer.get(f"/calendar/{secret.id}/edit").status_code
    assert views["Hana Hazel"] == {"Hazel picnic", "Sports day"}
    assert views["Jon Juniper"] == {"Juniper trip", "Sports day"}
    assert views["Sam Staff"] == {"Hazel picnic", "Juniper trip", "Sports day"}
    assert views["Hana Hazel edit"] == 404  # not even its existence
    assert views["Sam Staff edit"] == 200


def test_a_parent_granted_events_create_makes_and_edits_only_their_own(
    client, world, make_event, grant_permissions
):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    sign_in(client, hazel_parent.user.email)
    assert client.get("/calendar/new").status_code == 403
    assert "Add an event" not in client.get("/calendar/").get_data(as_text=True)

    grant_permissions(hazel_parent, "events.create", "events.edit_own")
    staffs = make_event(school, "Staff meeting", creator=staff)
    new_page = client.get("/calendar/new").get_data(as_text=True)
    assert "Hazel" in new_page and "Juniper" not in new_page  # only their own class to choose
    assert client.form("/calendar/new", _form(class_id=juniper.id)).status_code == 400
    assert client.form("/calendar/new", _form(title="Hazel coffee", class_id=hazel.id)).status_code == 303
    with tenancy.bound(school.id):
        mine = db.session.scalar(select(Event).where(Event.title == "Hazel coffee"))
    assert (
        client.form(f"/calendar/{mine.id}/edit", _form(title="Hazel tea", class_id=hazel.id)).status_code
        == 303
    )
    db.session.expire_all()
    with tenancy.bound(school.id):
        assert db.session.get(Event, mine.id).title == "Hazel tea"
    # Not someone else's, and no deleting without events.delete_own.
    assert client.get(f"/calendar/{staffs.id}/edit").status_code == 403
    assert client.form(f"/calendar/{staffs.id}/edit", _form(title="Hijacked")).status_code == 403
    assert client.form(f"/calendar/{mine.id}/delete").status_code == 403
    page = client.get("/calendar/").get_data(as_text=True)
    assert f'href="/calendar/{mine.id}/edit"' in page and f'href="/calendar/{staffs.id}/edit"' not in page


def test_room_parents_delete_their_own_staff_delete_any(app, world, make_member, make_event, make_family):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    room_parent = make_member(school, role=Role.ROOM_PARENT)
    _parent_in(make_family, school, room_parent, hazel, "Room family")
    own = make_event(school, "Room parent's", creator=room_parent, school_class=hazel)
    other = make_event(school, "Someone else's", creator=hazel_parent, school_class=hazel)
    client = app.test_client()
    sign_in(client, room_parent.user.email)
    assert client.form(f"/calendar/{other.id}/delete").status_code == 403
    assert client.form(f"/calendar/{own.id}/delete").status_code == 303
    admin = app.test_client()
    sign_in(admin, staff.user.email)
    assert admin.form(f"/calendar/{other.id}/delete").status_code == 303
    with tenancy.bound(school.id):
        assert db.session.scalars(select(Event)).all() == []
        actions = db.session.scalars(select(AuditEntry.action)).all()
    assert actions.count("event.deleted") == 2


def test_another_schools_event_is_not_found(client, world, make_school, make_event):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    foreign = make_event(make_school(), "Elsewhere")
    sign_in(client, staff.user.email)
    assert client.get(f"/calendar/{foreign.id}/edit").status_code == 404
    assert client.form(f"/calendar/{foreign.id}/edit", _form()).status_code == 404
    assert client.form(f"/calendar/{foreign.id}/delete").status_code == 404
    assert "Elsewhere" not in client.get("/calendar/").get_data(as_text=True)


def _make_feed(client) -> str:
    response = client.form("/calendar/feed")
    assert response.status_code == 200
    return re.search(r'id="feed-url" readonly value="([^"]+)"', response.get_data(as_text=True)).group(1)


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_the_feed_holds_only_what_its_owner_may_see(app, world, make_event):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    make_event(
        school,
        "Hazel picnic",
        school_class=hazel,
        location="Park; by the pond, north",
        description="Bring:\nhats",
    )
    make_event(school, "Juniper trip", school_class=juniper)
    make_event(school, "Long " + "é" * 80)
    client = app.test_client()
    sign_in(client, hazel_parent.user.email)
    url = _make_feed(client)
    token = url.rsplit("/", 1)[1].removesuffix(".ics")
    anonymous = app.test_client()  # calendar apps carry no cookie
    response = anonymous.get(_path(url))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/calendar; charset=utf-8"
    body = response.get_data()
    assert body.startswith(b"BEGIN:VCALENDAR\r\n") and body.endswith(b"END:VCALENDAR\r\n")
    assert b"\n" not in body.replace(b"\r\n", b"")
    assert all(len(line) <= 75 for line in body.split(b"\r\n"))
    text = body.decode().replace("\r\n ", "")  # unfold
    assert (
        "SUMMARY:Hazel picnic" in text and "Juniper trip" not in text and "SUMMARY:Long " + "é" * 80 in text
    )
    assert "LOCATION:Park\\; by the pond\\, north" in text and "DESCRIPTION:Bring:\\nhats" in text
    for personal in ("Hana", "hana@example.org", "Sam Staff", "Jon"):
        assert personal not in text
    with tenancy.bound(school.id):
        stored = db.session.scalar(select(CalendarFeed.token_hash))
    assert token not in stored  # only a hash is kept

    # A new address replaces the old; switching off ends it.
    new_url = _make_feed(client)
    assert anonymous.get(_path(url)).status_code == 404
    assert anonymous.get(_path(new_url)).status_code == 200
    assert client.form("/calendar/feed/revoke").status_code == 303
    assert anonymous.get(_path(new_url)).status_code == 404
    assert anonymous.get("/calendar/feed/not-a-token.ics").status_code == 404


def test_a_feed_stops_when_its_owner_leaves(app, world):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    client = app.test_client()
    sign_in(client, hazel_parent.user.email)
    url = _make_feed(client)
    hazel_parent.user.active = False
    db.session.commit()
    assert app.test_client().get(_path(url)).status_code == 404


def test_staff_feed_has_every_class(app, world, make_event):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    make_event(school, "Juniper trip", school_class=juniper)
    client = app.test_client()
    sign_in(client, staff.user.email)
    assert b"Juniper trip" in app.test_client().get(_path(_make_feed(client))).get_data()


def test_ical_escapes_and_folds_by_octets():
    assert ical.escape_text("a\\b;c,d\r\ne\rf\x07") == "a\\\\b\\;c\\,d\\ne\\nf"
    line = "DESCRIPTION:" + "ü" * 60
    folded = ical.fold(line)
    physical = folded.encode().split(b"\r\n")
    assert all(len(p) <= 75 for p in physical) and all(p.startswith(b" ") for p in physical[1:])
    assert folded.replace("\r\n ", "") == line  # never split inside a character
    assert ical.fold("SHORT:x") == "SHORT:x"


def test_calendar_and_feed_run_the_same_queries_for_10_or_200_events(app, world, make_event):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    client = app.test_client()
    sign_in(client, hazel_parent.user.email)
    feed = _path(_make_feed(client))
    anonymous = app.test_client()

    def add(n, offset):
        for i in range(offset, offset + n):
            make_event(
                school,
                f"Event {i}",
                school_class=(hazel, juniper, None)[i % 3],
                start=utcnow() + timedelta(days=3, hours=i),
            )

    assert_constant_queries([(client, "/calendar/"), (anonymous, feed)], add)


def test_feed_fetches_are_limited_per_address(app, world):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    client = app.test_client()
    sign_in(client, hazel_parent.user.email)
    feed = _path(_make_feed(client))
    anonymous = app.test_client()
    statuses = [anonymous.get(feed).status_code for _ in range(61)]
    assert statuses[:60] == [200] * 60 and statuses[60] == 429
    # Another person's feed, fetched from the same address, is not held back.
    other = app.test_client()
    sign_in(other, staff.user.email)
    assert anonymous.get(_path(_make_feed(other))).status_code == 200


def test_deleting_a_class_deletes_its_events(client, world, make_event, grant_permissions):
    school, hazel, juniper, hazel_parent, juniper_parent, staff = world
    make_event(school, "Hazel picnic", school_class=hazel)
    make_event(school, "Sports day")
    grant_permissions(staff, "classes.manage")
    sign_in(client, staff.user.email)
    assert client.form(f"/classes/{hazel.id}/delete").status_code == 303
    with tenancy.bound(school.id):
        assert [e.title for e in db.session.scalars(select(Event))] == ["Sports day"]
