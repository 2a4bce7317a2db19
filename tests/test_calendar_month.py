"""The calendar's month view, "add to my calendar" links, and times written as each language does."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import text

from app import tenancy
from app.calendar import month as grid
from app.extensions import db
from app.models import Role
from app.models.calendar import Event
from tests.conftest import assert_constant_queries, sign_in

pytestmark = pytest.mark.usefixtures("clock")


@pytest.fixture
def world(make_school, make_member, make_class, make_family):
    school = make_school(name="Oak School")
    school.timezone = "America/New_York"
    db.session.commit()
    hazel, juniper = (make_class(school, n, grade="3") for n in ("Hazel", "Juniper"))
    parent = make_member(school, name="Hana Hazel", email="hana@example.org")
    make_family(school, [parent], "Hazel family", children=[("Kid", "Hazel", [hazel.id])])
    staff = make_member(school, role=Role.STAFF, name="Sam Staff", email="sam@example.org")
    return school, hazel, juniper, parent, staff


class Grid(HTMLParser):
    """The month table as data: the weekday headers, and each week's days with their events."""

    def __init__(self, html: str):
        super().__init__()
        self.headers: list[str] = []
        self.weeks: list[list[dict]] = []
        self.caption = ""
        self._in: list[str] = []
        self._cell: dict | None = None
        self._event: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table" and "month-grid" in (attributes.get("class") or ""):
            self._in.append("table")
        if not self._in:
            return
        if tag in ("caption", "th"):
            self._in.append(tag)
            if tag == "th":
                self.headers.append("")
        elif tag == "tr" and self._in[-1] == "table" and not self._in_head():
            self.weeks.append([])
        elif tag == "thead":
            self._in.append("thead")
        elif tag == "td":
            self._cell = {
                "day": attributes["data-day"],
                "current": attributes.get("aria-current"),
                "events": [],
            }
            self._cell["classes"] = (attributes.get("class") or "").split()
        elif tag == "li" and self._cell is not None:
            self._event = ""

    def _in_head(self):
        return "thead" in self._in

    def handle_endtag(self, tag):
        if not self._in:
            return
        if tag in ("caption", "th", "thead", "table") and self._in and self._in[-1] == tag:
            self._in.pop()
        elif tag == "td" and self._cell is not None:
            self.weeks[-1].append(self._cell)
            self._cell = None
        elif tag == "li" and self._event is not None and self._cell is not None:
            self._cell["events"].append(" ".join(self._event.split()))
            self._event = None

    def handle_data(self, data):
        if not self._in:
            return
        if self._in[-1] == "caption":
            self.caption += data
        elif self._in[-1] == "th":
            self.headers[-1] += data.strip()
        elif self._event is not None:
            self._event += data

    def day(self, iso: str) -> dict:
        return next(cell for week in self.weeks for cell in week if cell["day"] == iso)


def _month(client, month: str | None = None, lang: str = "en", **headers):
    query = {"lang": lang} | ({"month": month} if month is not None else {})
    response = client.get("/calendar/month", query_string=query, headers=headers)
    assert response.status_code == 200, response.status_code
    return response, Grid(response.get_data(as_text=True))


# -- the grid ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "first_header", "first_day", "last_day", "week_count"),
    [
        # March 2015 begins on a Sunday and ends on a Tuesday.
        ("en", "Sun", "2015-03-01", "2015-04-04", 5),  # en_US: the week starts on Sunday
        ("es", "lun", "2015-02-23", "2015-04-05", 6),  # es_ES: on Monday
        ("ar", "السبت", "2015-02-28", "2015-04-03", 5),  # ar_EG: on Saturday
    ],
)
def test_the_month_starts_on_the_languages_first_weekday(
    client, world, lang, first_header, first_day, last_day, week_count
):
    school, hazel, juniper, parent, staff = world
    sign_in(client, parent.user.email)
    response, page = _month(client, "2015-03", lang)
    assert page.headers[0] == first_header and len(page.headers) == 7
    assert len(page.weeks) == week_count and all(len(week) == 7 for week in page.weeks)
    assert page.weeks[0][0]["day"] == first_day and page.weeks[-1][-1]["day"] == last_day
    assert page.caption.strip() == {"en": "March 2015", "es": "marzo de 2015", "ar": "مارس 2015"}[lang]


def test_a_month_that_fills_whole_weeks_has_no_spare_rows():
    # February 2015: Sunday the 1st to Saturday the 28th.
    assert len(grid.weeks(date(2015, 2, 1), grid.first_weekday("en"))) == 4
    assert len(grid.weeks(date(2015, 2, 1), grid.first_weekday("es"))) == 5
    assert [grid.first_weekday(code) for code in ("en", "es", "ar")] == [6, 0, 5]


def test_today_is_marked_on_the_schools_clock(app, client, world, clock):
    school, hazel, juniper, parent, staff = world
    sign_in(client, parent.user.email)
    response, page = _month(client)  # this month by default: January 2026 under the clock
    assert page.caption.strip() == "January 2026"
    assert [c["day"] for week in page.weeks for c in week if c["current"] == "date"] == ["2026-01-05"]
    # 03:00 UTC on 1 February is still the evening of 31 January in New York.
    clock.move_to(datetime(2026, 2, 1, 3, 0, tzinfo=UTC))
    sign_in(client, parent.user.email)  # the first session has expired by then
    response, page = _month(client)
    assert page.caption.strip() == "January 2026"
    assert [c["day"] for week in page.weeks for c in week if c["current"] == "date"] == ["2026-01-31"]
    # Another month shows no today at all.
    response, page = _month(client, "2026-03")
    assert all(c["current"] is None for week in page.weeks for c in week)


def test_events_fall_on_their_day_of_the_school_clock_across_the_dst_change(client, world, make_event):
    school, hazel, juniper, parent, staff = world
    # New York moves its clocks forward on 8 March 2026: 23:30 local is 04:30 UTC the next
    # day before the change and 03:30 UTC after it. A fixed offset would misplace one of them.
    make_event(
        school, "Before the change", start=datetime(2026, 3, 8, 4, 30, tzinfo=UTC), hours=0.25
    )  # 7 Mar 23:30 EST
    make_event(
        school, "After the change", start=datetime(2026, 3, 9, 3, 30, tzinfo=UTC), hours=0.25
    )  # 8 Mar 23:30 EDT
    make_event(school, "Weekend camp", start=datetime(2026, 3, 13, 22, 0, tzinfo=UTC), hours=48)
    make_event(school, "Hazel picnic", school_class=hazel, start=datetime(2026, 3, 20, 15, tzinfo=UTC))
    make_event(school, "Juniper trip", school_class=juniper, start=datetime(2026, 3, 20, 15, tzinfo=UTC))
    make_event(school, "April fair", start=datetime(2026, 4, 20, 15, tzinfo=UTC))
    sign_in(client, parent.user.email)
    response, page = _month(client, "2026-03")
    assert page.day("2026-03-07")["events"] == ["11:30 PM Before the change"]
    assert page.day("2026-03-08")["events"] == ["11:30 PM After the change"]
    assert page.day("2026-03-09")["events"] == []
    # 13 Mar 18:00 to 15 Mar 18:00 in New York: three days, the later two marked as continuing.
    assert page.day("2026-03-13")["events"] == ["6:00 PM Weekend camp"]
    assert page.day("2026-03-14")["events"] == page.day("2026-03-15")["events"] == ["continues Weekend camp"]
    assert page.day("2026-03-16")["events"] == []
    # Only what the member may see: their class, not another's.
    assert page.day("2026-03-20")["events"] == ["11:00 AM Hazel picnic"]
    body = response.get_data(as_text=True)
    assert "Juniper trip" not in body and "April fair" not in body
    assert (
        "has-events" in page.day("2026-03-20")["classes"] and "no-events" in page.day("2026-03-21")["classes"]
    )


def test_staff_see_every_class_and_an_all_day_event_is_all_day(client, world, make_event):
    school, hazel, juniper, parent, staff = world
    make_event(school, "Juniper trip", school_class=juniper, start=datetime(2026, 3, 20, 15, tzinfo=UTC))
    # Midnight to midnight in New York (EDT, UTC-4): a whole day.
    make_event(school, "Teacher day", start=datetime(2026, 3, 23, 4, 0, tzinfo=UTC), hours=24)
    sign_in(client, staff.user.email)
    response, page = _month(client, "2026-03")
    assert page.day("2026-03-20")["events"] == ["11:00 AM Juniper trip"]
    assert page.day("2026-03-23")["events"] == ["All day Teacher day"]
    assert page.day("2026-03-24")["events"] == []  # ending at midnight does not touch the next day


def test_previous_and_next_months_are_plain_links(client, world):
    school, hazel, juniper, parent, staff = world
    sign_in(client, parent.user.email)
    body = client.get("/calendar/month?month=2026-01").get_data(as_text=True)
    assert 'href="/calendar/month?month=2025-12"' in body and 'href="/calendar/month?month=2026-02"' in body
    assert 'data-hx-target="#calendar-month"' in body
    # The list and month views link to each other; the current one is marked.
    assert re.search(r'<a href="/calendar/month" aria-current="page">', body)
    assert 'href="/calendar/month"' in client.get("/calendar/").get_data(as_text=True)
    # The far ends of the range have no link past them.
    first = client.get("/calendar/month?month=1900-01").get_data(as_text=True)
    assert "month=1899-12" not in first and 'href="/calendar/month?month=1900-02"' in first
    last = client.get("/calendar/month?month=2200-12").get_data(as_text=True)
    assert "month=2201-01" not in last and 'href="/calendar/month?month=2200-11"' in last


def test_htmx_gets_only_the_month(client, world, make_event):
    school, hazel, juniper, parent, staff = world
    event = make_event(school, "Book fair", start=datetime(2026, 2, 10, 15, tzinfo=UTC))
    sign_in(client, parent.user.email)
    response = client.get(
        "/calendar/month?month=2026-02", headers={"HX-Request": "true", "HX-Target": "calendar-month"}
    )
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and body.lstrip().startswith('<section id="calendar-month"')
    assert "<h1>" not in body and Grid(body).caption.strip() == "February 2026"
    assert Grid(body).day("2026-02-10")["events"] == ["10:00 AM Book fair"]
    assert f'id="event-{event.id}"' in body and "Add to my calendar" in body


@pytest.mark.parametrize(
    "value",
    [
        "2026-13",
        "2026-00",
        "1899-12",
        "2201-01",
        "99999-01",
        "2026",
        "2026-1x",
        "x",
        "2026-03-01",
        "٢٠٢٦-٠٣",
        "9" * 500,
    ],
)
def test_a_month_that_is_not_one_is_refused_not_an_error(client, world, value):
    school, hazel, juniper, parent, staff = world
    sign_in(client, parent.user.email)
    assert client.get("/calendar/month", query_string={"month": value}).status_code == 400


def test_the_month_needs_a_member(client, world):
    response = client.get("/calendar/month")
    assert response.status_code == 302 and response.headers["Location"].startswith("/sign-in")


def test_the_month_costs_the_same_queries_for_few_or_many_events(app, world, make_event):
    school, hazel, juniper, parent, staff = world
    client = app.test_client()
    sign_in(client, parent.user.email)

    def add(n, offset):
        for i in range(offset, offset + n):
            make_event(
                school,
                f"Event {i}",
                school_class=(hazel, juniper, None)[i % 3],
                start=datetime(2026, 3, 1, 15, tzinfo=UTC) + timedelta(hours=7 * i),
            )

    assert_constant_queries([(client, "/calendar/month?month=2026-03")], add)


# -- add to my calendar -----------------------------------------------------------------------


def _links(body: str, event_id: int) -> dict[str, str]:
    card = body[body.index(f'id="event-{event_id}"') :]
    card = card[: card.index("</article>")]
    return {
        kind: re.search(rf'<a href="([^"]+)"[^>]*class="add-{kind}"', card).group(1).replace("&amp;", "&")
        for kind in ("google", "outlook", "ics")
    }


def test_google_and_outlook_links_carry_utc_times_and_nothing_personal(client, world, make_event):
    school, hazel, juniper, parent, staff = world
    event = make_event(
        school,
        "Bake sale & raffle",
        school_class=hazel,
        creator=staff,
        start=datetime(2026, 3, 9, 22, 30, tzinfo=UTC),  # 18:30 EDT
        hours=1.5,
        location="Hall #2",
        description="Ask Hana Hazel for the float",
    )
    sign_in(client, parent.user.email)
    body = client.get("/calendar/month?month=2026-03").get_data(as_text=True)
    links = _links(body, event.id)
    google = urlsplit(links["google"])
    assert (google.scheme, google.netloc, google.path) == ("https", "calendar.google.com", "/calendar/render")
    assert "Bake+sale+%26+raffle" in google.query and "Hall+%232" in google.query  # encoded
    query = parse_qs(google.query)
    assert query["action"] == ["TEMPLATE"] and query["text"] == ["Bake sale & raffle"]
    assert query["dates"] == ["20260309T223000Z/20260310T000000Z"] and query["location"] == ["Hall #2"]
    assert query["details"] == ["http://localhost/calendar/month?month=2026-03"]
    outlook = urlsplit(links["outlook"])
    assert (outlook.netloc, outlook.path) == ("outlook.live.com", "/calendar/0/deeplink/compose")
    query = parse_qs(outlook.query)
    assert query["subject"] == ["Bake sale & raffle"] and query["location"] == ["Hall #2"]
    assert query["startdt"] == ["2026-03-09T22:30:00Z"] and query["enddt"] == ["2026-03-10T00:00:00Z"]
    for url in (links["google"], links["outlook"]):
        for personal in ("Hana", "Hazel", "Sam", "float", "hana%40", "Staff"):
            assert personal not in url, (personal, url)
    assert links["ics"] == f"/calendar/{event.id}.ics"
    # The list view offers the same links.
    assert _links(client.get("/calendar/").get_data(as_text=True), event.id) == links


def test_an_all_day_event_is_added_as_dates(client, world, make_event):
    school, hazel, juniper, parent, staff = world
    event = make_event(school, "Teacher day", start=datetime(2026, 3, 23, 4, 0, tzinfo=UTC), hours=48)
    sign_in(client, parent.user.email)
    links = _links(client.get("/calendar/month?month=2026-03").get_data(as_text=True), event.id)
    assert parse_qs(urlsplit(links["google"]).query)["dates"] == ["20260323/20260325"]  # end exclusive
    outlook = parse_qs(urlsplit(links["outlook"]).query)
    assert (outlook["startdt"], outlook["enddt"], outlook["allday"]) == (
        ["2026-03-23"],
        ["2026-03-25"],
        ["true"],
    )


def _unfolded(body: bytes) -> list[str]:
    assert b"\n" not in body.replace(b"\r\n", b"") and all(len(line) <= 75 for line in body.split(b"\r\n"))
    return body.decode().replace("\r\n ", "").split("\r\n")


def test_one_event_downloads_as_icalendar(client, world, make_event):
    school, hazel, juniper, parent, staff = world
    event = make_event(
        school,
        "Sports day, all classes",
        school_class=hazel,
        start=datetime(2026, 3, 9, 13, 0, tzinfo=UTC),
        location="Field; north end",
    )
    sign_in(client, parent.user.email)
    response = client.get(f"/calendar/{event.id}.ics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/calendar; charset=utf-8"
    assert response.headers["Content-Disposition"] == f'attachment; filename="event-{event.id}.ics"'
    lines = _unfolded(response.get_data())
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-2:] == ["END:VCALENDAR", ""]
    assert lines.count("BEGIN:VEVENT") == 1 and lines.count("END:VEVENT") == 1
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    assert fields["SUMMARY"] == "Sports day\\, all classes" and fields["LOCATION"] == "Field\\; north end"
    assert fields["DTSTART"] == "20260309T130000Z" and fields["DTEND"] == "20260309T140000Z"
    assert fields["UID"] == f"event-{event.id}@joinourclass" and fields["X-WR-CALNAME"] == "Oak School"


def test_only_an_event_the_member_may_see_downloads(client, world, make_event, make_school):
    school, hazel, juniper, parent, staff = world
    theirs = make_event(school, "Juniper trip", school_class=juniper)
    foreign = make_event(make_school(), "Elsewhere")
    sign_in(client, parent.user.email)
    assert client.get(f"/calendar/{theirs.id}.ics").status_code == 404
    assert client.get(f"/calendar/{foreign.id}.ics").status_code == 404
    assert client.get("/calendar/99999999.ics").status_code == 404
    stranger = client.application.test_client()
    assert stranger.get(f"/calendar/{theirs.id}.ics").status_code == 302  # to sign in


def test_a_new_feed_address_is_offered_as_a_webcal_subscription(client, world):
    school, hazel, juniper, parent, staff = world
    sign_in(client, parent.user.email)
    body = client.form("/calendar/feed").get_data(as_text=True)
    url = re.search(r'id="feed-url" readonly value="([^"]+)"', body).group(1)
    assert url.startswith("http://localhost/calendar/feed/")
    webcal = re.search(r'<a href="(webcal://[^"]+)"', body).group(1)
    assert webcal == "webcal://" + url.removeprefix("http://")
    # Not shown again: the address is kept only as a hash.
    assert "webcal://" not in client.get("/calendar/").get_data(as_text=True)


# -- 12 or 24 hours, as each language writes the time ------------------------------------------


@pytest.mark.parametrize(
    ("lang", "time_text"),
    [
        ("en", "6:30\u202fPM"),  # en (en_US): 12 hours
        ("es", "18:30"),  # 24 hours
        ("ar", "6:30 م"),  # CLDR writes Arabic times on 12 hours too, with its own marker
    ],
)
def test_times_are_written_on_the_languages_clock(client, world, make_event, lang, time_text):
    school, hazel, juniper, parent, staff = world
    make_event(school, "Bake sale", start=datetime(2026, 3, 9, 22, 30, tzinfo=UTC))  # 18:30 in New York
    sign_in(client, parent.user.email)
    response, page = _month(client, "2026-03", lang)
    [entry] = page.day("2026-03-09")["events"]
    assert entry.startswith(" ".join(time_text.split()))
    assert time_text in response.get_data(as_text=True)
    listed = client.get("/calendar/", query_string={"lang": lang}).get_data(as_text=True)
    assert time_text in listed
    if lang == "es":
        assert (
            "PM" not in page.day("2026-03-09")["events"][0]
            and "p." not in page.day("2026-03-09")["events"][0]
        )


# -- district cost ----------------------------------------------------------------------------


def _plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.postgres
def test_the_month_reads_only_its_weeks_through_a_school_led_index(app, world, make_school):
    """Years of history in many schools: the month's query finds its events by school and time
    (Index Cond on school_id and ends_at), not by reading the school's, or the host's, history."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("EXPLAIN needs PostgreSQL: run with TEST_DATABASE_URL")
    school, hazel, juniper, parent, staff = world
    # Ten years of events, one every 29 hours, in six schools writing side by side (as a
    # district's do), so one school's rows are spread over the whole table.
    start = datetime(2020, 1, 1, 15, tzinfo=UTC)
    schools = [school.id, *(make_school().id for _ in range(5))]
    with tenancy.unscoped():
        db.session.add_all(
            Event(
                school_id=school_id,
                title=f"Event {i}",
                starts_at=start + timedelta(hours=29 * i),
                ends_at=start + timedelta(hours=29 * i + 2),
            )
            for i in range(3000)
            for school_id in schools
        )
        db.session.commit()
    client = app.test_client()
    sign_in(client, parent.user.email)
    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM event" in statement:
            statements.append((statement, parameters))

    sa_event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert client.get("/calendar/month?month=2026-03").status_code == 200
    finally:
        sa_event.remove(db.engine, "before_cursor_execute", record)
    [(statement, parameters)] = statements
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE event"))
        raw = conn.connection.driver_connection
        plan = raw.execute("EXPLAIN (FORMAT JSON) " + statement, parameters).fetchone()[0][0]["Plan"]
    # An Index Scan names its table; a Bitmap Index Scan only its index (its heap scan the table).
    scans = [node for node in _plan_nodes(plan) if (node.get("Index Name") or "").startswith("ix_event")]
    assert [node["Index Name"] for node in scans] == ["ix_event_school_ends_starts"], scans
    assert "school_id" in scans[0]["Index Cond"] and "ends_at" in scans[0]["Index Cond"]
    assert "LIMIT" in statement
