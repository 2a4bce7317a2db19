"""The home page of each role: the feed of announcements sent to the member, read in the app,
searchable and paged with unread marks; next events; things to do; the staff's queues; and a
cost in SQL statements that does not grow with the school."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from app import tenancy
from app.extensions import db
from app.models import (
    Category,
    ClassRole,
    Enrollment,
    Family,
    Guardian,
    MailMessage,
    Membership,
    MembershipStatus,
    Role,
    Student,
    User,
    listings,
)
from app.models.base import utcnow
from app.models.directory import EnrollmentChange
from app.models.reading import MessageRead
from tests.conftest import count_queries, sign_in

FEED = {"HX-Request": "true", "HX-Target": "feed"}


def _announce(school, subject, *, school_class=None, by=None, body="Plain words.", at=None, **extra):
    """An announcement as app/messages writes one (its deliveries play no part in the feed)."""
    with tenancy.bound(school.id):
        message = MailMessage(
            school_id=school.id,
            category=Category.CLASS_ANNOUNCEMENTS if school_class else Category.SCHOOL_ANNOUNCEMENTS,
            template="announcement",
            subject=subject,
            text_body=body,
            source_markdown=body,
            class_id=school_class.id if school_class else None,
            audience_label=(
                f"Families, teachers and room parents of {school_class.name}"
                if school_class
                else f"Everyone at {school.name}"
            ),
            created_by_id=by.user_id if by else None,
            created_at=at or utcnow(),
            **extra,
        )
        db.session.add(message)
        db.session.commit()
        return message.id


def _subjects(page: str) -> list[str]:
    """The feed's subjects in the order shown."""
    return re.findall(r'<li class="feed-item[^"]*" id="news-\d+">.*?<strong>(.*?)</strong>', page, re.S)


def _unread(page: str) -> list[str]:
    return re.findall(r'<li class="feed-item unread" id="news-\d+">.*?<strong>(.*?)</strong>', page, re.S)


@pytest.fixture
def community(clock, make_school, make_member, make_class, make_family):
    """Maple School with classes Oak and Elm and their families; Birch School next door."""
    a = make_school(name="Maple School")
    p = {
        "admin": make_member(a, role=Role.ADMIN, email="admin@maple.org"),
        "staff": make_member(a, role=Role.STAFF, email="staff@maple.org"),
        "room": make_member(a, role=Role.ROOM_PARENT, email="room@maple.org"),
        "parent": make_member(a, email="parent@maple.org", name="Pat Parent"),
        "elmer": make_member(a, email="elm@maple.org"),
        "loner": make_member(a, email="loner@maple.org"),
    }
    oak = make_class(a, "Oak Class", helpers=[(p["room"], ClassRole.ROOM_PARENT)])
    elm = make_class(a, "Elm Class")
    oakley = make_family(a, [p["parent"]], "Oakley", [("Ola", "Oakley", [oak.id])])
    make_family(a, [p["elmer"]], "Elmwood", [("Eli", "Elmwood", [elm.id])])
    b = make_school(name="Birch School")
    b_parent = make_member(b, email="parent@birch.org")
    b_class = make_class(b, "Birch Class")
    make_family(b, [b_parent], "Birchley", [("Bo", "Birchley", [b_class.id])])
    return {"a": a, "b": b, "oak": oak, "elm": elm, "b_class": b_class, "oakley": oakley, **p}


# --- what the feed holds ---------------------------------------------------------------------


def test_feed_shows_what_compose_sent_to_the_member_newest_first(client, community, clock):
    """Sent through the compose form: the school's message and the member's class, not the other class."""
    sign_in(client, "admin@maple.org")
    for subject, kind, school_class in (
        ("Sports day", "school", None),
        ("Oak trip", "class", community["oak"]),
        ("Elm trip", "class", community["elm"]),
    ):
        url = f"/messages/new?kind={kind}" + (f"&class_id={school_class.id}" if school_class else "")
        sent = client.form(url, {"subject": subject, "body": f"About the {subject}.", "action": "send"})
        assert sent.status_code == 303
        clock.shift(minutes=5)
    _announce(community["b"], "Birch news")
    client.post("/sign-out", data={"csrf_token": client.csrf_token()})

    sign_in(client, "parent@maple.org")
    assert _subjects(client.get("/").get_data(as_text=True)) == ["Oak trip", "Sports day"]
    other = client.application.test_client()
    sign_in(other, "elm@maple.org")
    assert _subjects(other.get("/").get_data(as_text=True)) == ["Elm trip", "Sports day"]
    birch = client.application.test_client()
    sign_in(birch, "parent@birch.org")
    assert _subjects(birch.get("/").get_data(as_text=True)) == ["Birch news"]


def test_room_parent_reads_their_class_and_the_school(client, community, clock):
    _announce(community["a"], "To everyone")
    clock.shift(minutes=1)
    _announce(community["a"], "To Oak", school_class=community["oak"])
    _announce(community["a"], "To Elm", school_class=community["elm"])
    sign_in(client, "room@maple.org")
    assert _subjects(client.get("/").get_data(as_text=True)) == ["To Oak", "To everyone"]


def test_scheduled_messages_appear_once_due_and_cancelled_ones_never(client, community, clock):
    a = community["a"]
    _announce(a, "Later news", scheduled_for=utcnow() + timedelta(days=2))
    _announce(a, "Called off", scheduled_for=utcnow() + timedelta(days=1), cancelled_at=utcnow())
    sign_in(client, "parent@maple.org")
    assert _subjects(client.get("/").get_data(as_text=True)) == []
    clock.shift(days=3)
    sign_in(client, "parent@maple.org")
    assert _subjects(client.get("/").get_data(as_text=True)) == ["Later news"]


def test_a_deleted_classes_message_does_not_become_school_wide(client, community):
    """Its class_id is set NULL with the class: it is still a class announcement, for nobody now."""
    message_id = _announce(community["a"], "Hazel only", school_class=community["elm"])
    with tenancy.bound(community["a"].id):
        db.session.get(MailMessage, message_id).class_id = None
        db.session.commit()
    sign_in(client, "parent@maple.org")
    assert _subjects(client.get("/").get_data(as_text=True)) == []
    assert client.get(f"/news/{message_id}").status_code == 404


def test_empty_feed_says_so_in_plain_words(client, community):
    sign_in(client, "loner@maple.org")
    page = client.get("/").get_data(as_text=True)
    assert "Nothing has been announced to you yet." in page
    assert "No events coming up." in page
    assert "Nothing waits for you." in page
    assert "Mark all read" not in page


# --- paging and search --------------------------------------------------------------------------


def test_feed_is_paged_newest_first_with_keyset_links(client, community, clock):
    a = community["a"]
    start = utcnow()
    for n in range(45):
        # Two at each moment: the id breaks the tie, so no message is shown twice or skipped.
        _announce(a, f"News {n:02d}", at=start + timedelta(minutes=n // 2))
    sign_in(client, "parent@maple.org")
    seen: list[str] = []
    url = "/"
    pages = 0
    while url:
        page = client.get(url).get_data(as_text=True)
        seen += _subjects(page)
        pages += 1
        found = re.search(r'href="(/\?before=\d+)" rel="next"', page)
        url = found.group(1) if found else None
    assert pages == 3
    assert seen == [f"News {n:02d}" for n in range(44, -1, -1)]
    assert client.get("/?before=999999999").status_code == 200  # an unknown anchor: an empty page


def test_another_schools_anchor_pages_nothing(client, community):
    _announce(community["a"], "Ours")
    theirs = _announce(community["b"], "Theirs")
    sign_in(client, "parent@maple.org")
    page = client.get(f"/?before={theirs}").get_data(as_text=True)
    assert _subjects(page) == [] and "No older announcements." in page


def test_search_finds_subject_and_text_without_js_and_in_place(client, community, clock):
    a = community["a"]
    _announce(a, "Coats on Friday", body="Bring a warm coat.")
    _announce(a, "Library books", body="Return them by *Monday*.")
    _announce(a, "Elm only: monday", school_class=community["elm"])
    _announce(community["b"], "Birch monday")
    sign_in(client, "parent@maple.org")
    page = client.get("/?q=MONDAY").get_data(as_text=True)
    assert _subjects(page) == ["Library books"]
    assert 'value="MONDAY"' in page  # the words typed stay in the box
    fragment = client.get("/?q=coat", headers=FEED).get_data(as_text=True)
    assert _subjects(fragment) == ["Coats on Friday"] and "<html" not in fragment
    nothing = client.get("/?q=100%25_").get_data(as_text=True)  # LIKE's wildcards are plain text
    assert _subjects(nothing) == [] and "No announcements match" in nothing


def test_search_pages_keep_the_words(client, community):
    a = community["a"]
    for n in range(25):
        _announce(a, f"Trip note {n:02d}", at=utcnow() + timedelta(minutes=n))
    _announce(a, "Something else", at=utcnow() + timedelta(hours=2))
    sign_in(client, "parent@maple.org")
    page = client.get("/?q=trip").get_data(as_text=True)
    link = re.search(r'href="(/\?q=trip&amp;before=\d+)" rel="next"', page)
    assert link is not None
    rest = client.get(link.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert _subjects(rest) == ["Trip note 04", "Trip note 03", "Trip note 02", "Trip note 01", "Trip note 00"]


# --- reading, unread marks --------------------------------------------------------------------


def test_opening_a_message_clears_its_unread_mark(client, community, clock):
    a = community["a"]
    first = _announce(a, "First", body="**Bold** words", by=community["admin"])
    clock.shift(minutes=1)
    _announce(a, "Second")
    sign_in(client, "parent@maple.org")
    page = client.get("/").get_data(as_text=True)
    assert _unread(page) == ["Second", "First"]
    assert "2 unread announcements" in page
    shown = client.get(f"/news/{first}").get_data(as_text=True)
    assert "<strong>Bold</strong>" in shown and "Everyone at Maple School" in shown
    page = client.get("/").get_data(as_text=True)
    assert _unread(page) == ["Second"] and "1 unread announcement" in page
    client.get(f"/news/{first}")  # a second opening writes nothing more
    with tenancy.bound(a.id):
        assert db.session.scalars(select(MessageRead.message_id)).all() == [first]


def test_mark_all_read_marks_only_the_members_feed(client, community):
    a = community["a"]
    _announce(a, "One")
    _announce(a, "Two", school_class=community["oak"])
    elm_only = _announce(a, "Elm only", school_class=community["elm"])
    sign_in(client, "parent@maple.org")
    answer = client.form("/news/read-all", {})
    assert answer.status_code == 303
    page = client.get("/").get_data(as_text=True)
    assert _unread(page) == [] and "2 announcements marked read." in page
    assert "Mark all read" not in page
    assert client.form("/news/read-all", {}).status_code == 303  # again: nothing more to mark
    with tenancy.bound(a.id):
        marked = db.session.scalars(select(MessageRead.message_id)).all()
    assert len(marked) == 2 and elm_only not in marked
    other = client.application.test_client()
    sign_in(other, "elm@maple.org")
    assert _unread(other.get("/").get_data(as_text=True)) == ["Elm only", "One"]


def test_mark_all_read_needs_the_forms_token(client, community):
    _announce(community["a"], "One")
    sign_in(client, "parent@maple.org")
    assert client.post("/news/read-all", data={}).status_code in (400, 403)


def test_reader_view_is_only_for_recipients(client, community):
    oak = _announce(community["a"], "Oak only", school_class=community["oak"])
    birch = _announce(community["b"], "Birch news")
    everyone = _announce(community["a"], "Everyone")
    sign_in(client, "elm@maple.org")
    assert client.get(f"/news/{oak}").status_code == 404  # another class
    assert client.get(f"/news/{birch}").status_code == 404  # another school
    assert client.get(f"/news/{everyone}").status_code == 200
    with tenancy.bound(community["a"].id):
        assert db.session.scalars(select(MessageRead)).all()[0].message_id == everyone


def test_reader_view_needs_an_approved_member(client, community, make_member):
    message_id = _announce(community["a"], "Everyone")
    assert client.get(f"/news/{message_id}").status_code == 302  # to sign in
    make_member(community["a"], status=MembershipStatus.PENDING, email="waiting@maple.org")
    sign_in(client, "waiting@maple.org")
    assert client.get(f"/news/{message_id}").headers["Location"] == "/pending"


def test_support_staff_under_a_grant_see_no_announcements(client, community, make_support_grant):
    """A grant opens the directory, classes and settings, not messages (app/platform/access.py)."""
    from app.models import PlatformRole
    from tests.conftest import PASSWORD

    message_id = _announce(community["a"], "Sports day news")
    staff = User(email="helper@operator.example", name="Sam Support")
    staff.password_hash = db.session.scalar(select(User.password_hash).limit(1))
    staff.platform_role = PlatformRole.SUPPORT
    db.session.add(staff)
    db.session.commit()
    make_support_grant(community["a"])
    sign_in(client, staff.email, PASSWORD)
    assert client.form(f"/platform/schools/{community['a'].id}/enter").status_code == 303
    home = client.get("/")
    assert home.status_code == 200 and "Sports day news" not in home.get_data(as_text=True)
    assert "announcements, events and queues are not part of it" in home.get_data(as_text=True)
    assert client.get(f"/news/{message_id}").status_code == 403
    with tenancy.bound(community["a"].id):
        assert db.session.scalars(select(MessageRead)).all() == []


# --- events and things to do ------------------------------------------------------------------


def test_next_events_of_the_school_and_the_members_classes(client, community, make_event, clock):
    a = community["a"]
    make_event(a, "Fair", start=utcnow() + timedelta(days=2))
    make_event(a, "Oak picnic", school_class=community["oak"], start=utcnow() + timedelta(days=1))
    make_event(a, "Elm picnic", school_class=community["elm"])
    make_event(a, "Last year", start=utcnow() - timedelta(days=30))
    make_event(community["b"], "Birch fair")
    sign_in(client, "parent@maple.org")
    page = client.get("/").get_data(as_text=True)
    section = page.split('id="events-heading"')[1].split("</section>")[0]
    assert re.findall(r'event-\d+">(.*?)</a>', section) == ["Oak picnic", "Fair"]


def test_things_to_do_show_waiting_class_changes_and_co_guardians(client, community, make_member):
    a = community["a"]
    oakley = community["oakley"]
    with tenancy.bound(a.id):
        db.session.add(
            EnrollmentChange(
                student_id=oakley.student_ids[0],
                from_class_id=community["oak"].id,
                to_class_id=community["elm"].id,
                requested_by_id=community["parent"].id,
            )
        )
        db.session.commit()
    waiting = make_member(a, status=MembershipStatus.PENDING, email="co@maple.org")
    with tenancy.bound(a.id):
        db.session.add(Guardian(family_id=oakley.id, membership_id=waiting.id))
        db.session.commit()
    sign_in(client, "parent@maple.org")
    page = client.get("/").get_data(as_text=True)
    assert "Your request for <bdi>Ola</bdi> to join <bdi>Elm Class</bdi> is waiting for approval." in page
    assert "1 person asks to join your family" in page
    other = client.application.test_client()
    sign_in(other, "elm@maple.org")
    assert "Nothing waits for you." in other.get("/").get_data(as_text=True)


# --- staff queues -----------------------------------------------------------------------------


def test_queues_show_only_with_permission(client, community, make_member, grant_permissions):
    a = community["a"]
    for n in range(3):
        make_member(a, status=MembershipStatus.PENDING, email=f"new{n}@maple.org")
    make_member(community["b"], status=MembershipStatus.PENDING, email="new@birch.org")
    sign_in(client, "staff@maple.org")
    page = client.get("/").get_data(as_text=True)
    assert "3 people waiting to join" in page and "No class changes are waiting." in page
    parent = client.application.test_client()
    sign_in(parent, "parent@maple.org")
    page = parent.get("/").get_data(as_text=True)
    assert "Your queues" not in page and "waiting to join" not in page
    room = client.application.test_client()
    sign_in(room, "room@maple.org")
    page = room.get("/").get_data(as_text=True)
    assert "No messages are waiting to be sent." in page and "waiting to join" not in page
    grant_permissions(community["staff"], "members.approve", granted=False)
    page = client.get("/").get_data(as_text=True)
    assert "waiting to join" not in page


def test_queue_counts_stop_at_twenty(client, community, make_member):
    a = community["a"]
    for n in range(22):
        make_member(a, status=MembershipStatus.PENDING, email=f"new{n}@maple.org")
    _announce(a, "Soon", by=community["admin"], scheduled_for=utcnow() + timedelta(days=1))
    sign_in(client, "admin@maple.org")
    page = client.get("/").get_data(as_text=True)
    assert "20+ people waiting to join" in page
    assert "1 message scheduled" in page


# --- district cost ----------------------------------------------------------------------------


def _grow(school, classes, staff, families: int, offset: int) -> None:
    """``families`` more families (a guardian and a child each), a newcomer and a class change per
    ten, an announcement per five (school-wide or to a class), and events, by core inserts."""
    n = range(offset, offset + families)
    user_ids = list(
        db.session.scalars(
            insert(User).returning(User.id),
            [
                {"email": f"grow{i}@example.org", "name": f"Grow {i}", "password_hash": "x"}
                | {"mail_key": f"{i:032d}"}
                for i in n
            ],
        )
    )
    statuses = [MembershipStatus.PENDING if i % 10 == 0 else MembershipStatus.APPROVED for i in n]
    member_ids = list(
        db.session.scalars(
            insert(Membership).returning(Membership.id),
            [
                {"school_id": school.id, "user_id": u, "role": Role.PARENT, "status": s}
                for u, s in zip(user_ids, statuses, strict=True)
            ],
        )
    )
    family_ids = list(
        db.session.scalars(
            insert(Family).returning(Family.id), [{"school_id": school.id, "name": f"Grow {i}"} for i in n]
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
                {"school_id": school.id, "family_id": f, "first_name": "Kid", "last_name": "Grow"}
                for f in family_ids
            ],
        )
    )
    db.session.execute(
        insert(Enrollment),
        [
            {"school_id": school.id, "student_id": s, "class_id": classes[i % len(classes)].id}
            for i, s in enumerate(student_ids)
        ],
    )
    db.session.execute(
        insert(EnrollmentChange),
        [
            {
                "school_id": school.id,
                "student_id": s,
                "to_class_id": classes[(i + 1) % len(classes)].id,
                "created_at": utcnow(),
            }
            for i, s in enumerate(student_ids)
            if i % 10 == 0
        ],
    )
    listings.refresh_listings(family_ids)  # bulk inserts, which no flush sees
    listings.refresh_members(member_ids)
    db.session.commit()
    for i in n:
        if i % 5 == 0:
            to_class = classes[i % len(classes)] if i % 15 else None
            _announce(school, f"Grown {i}", school_class=to_class, by=staff)


def test_home_costs_the_same_statements_for_a_small_and_a_large_school(
    client, community, make_event, make_member
):
    """50 families, then 600 (with 12 times the newcomers, class changes and announcements): the
    home page of a parent and of an admin, a search, an older page and the reader view run
    exactly as many statements. Counts are bounded queries; the feed is one statement."""
    a = community["a"]
    classes = [community["oak"], community["elm"]]
    for n in range(3):
        make_event(a, f"Event {n}", school_class=classes[n % 2] if n else None)
    admin = client.application.test_client()
    sign_in(client, "parent@maple.org")
    sign_in(admin, "admin@maple.org")
    first = _announce(a, "The first", by=community["admin"])

    def counts() -> dict[str, int]:
        oldest = _announce(a, "Anchor", by=community["admin"], at=utcnow() - timedelta(days=1))
        result = {}
        for who, url in (
            (client, "/"),
            (client, "/?q=grown"),
            (client, f"/?before={oldest}"),
            (client, f"/news/{first}"),
            (admin, "/"),
        ):
            with count_queries() as statements:
                assert who.get(url).status_code == 200, url
            result[f"{'parent' if who is client else 'admin'} {url.split('=')[0]}"] = len(statements)
        with count_queries() as statements:
            assert client.get("/?q=grown", headers=FEED).status_code == 200
        result["feed fragment"] = len(statements)
        return result

    _grow(a, classes, community["staff"], 50, 0)
    counts()  # warm-up: the first requests after signing in may still write the session
    small = counts()
    _grow(a, classes, community["staff"], 550, 50)
    large = counts()
    assert small == large
    page = admin.get("/").get_data(as_text=True)
    assert "20+ people waiting to join" in page and "20+ class changes waiting" in page
