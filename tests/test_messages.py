"""Announcements and newsletters: who may send to whom, safe Markdown, preview, schedule, counts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import select

from app import jobs, tenancy
from app.extensions import db
from app.mail.jobs import send_message, sweep
from app.messages.services import render_markdown
from app.models import (
    Category,
    ClassRole,
    DeliveryStatus,
    MailDelivery,
    MailMessage,
    MembershipStatus,
    Role,
)
from app.models.base import utcnow
from tests.conftest import count_queries, sign_in

BODY = "Hello families,\n\n**Bring** a *coat* on Friday.\n\n- boots\n- hat\n"


def _kid_in(name, classes):
    """One child of family ``name``, enrolled in ``classes`` (for make_family)."""
    return [("Kid", name, [c.id for c in classes])]


def _messages():
    """Every message of every school (the test reads as an inspector, across schools)."""
    db.session.expire_all()
    with tenancy.unscoped():
        return db.session.scalars(select(MailMessage).order_by(MailMessage.id)).all()


def _deliveries(message_id):
    db.session.expire_all()
    query = select(MailDelivery).where(MailDelivery.message_id == message_id).order_by(MailDelivery.id)
    return db.session.scalars(query).all()


def _send(client, kind, class_id=None, subject="Coats on Friday", body=BODY, **extra):
    url = f"/messages/new?kind={kind}" + (f"&class_id={class_id}" if class_id else "")
    return client.form(url, {"subject": subject, "body": body, "action": "send", **extra})


def _count(html, name):
    return int(re.search(rf'data-count="{name}">(\d+)<', html).group(1))


@pytest.fixture
def community(make_school, make_member, make_class, make_family):
    """School A with two classes and their families; school B next door with its own people."""
    a = make_school(name="Maple School")
    p = {
        "admin": make_member(a, role=Role.ADMIN, email="admin@maple.org"),
        "staff": make_member(a, role=Role.STAFF, email="staff@maple.org"),
        "teacher": make_member(a, role=Role.STAFF, email="teacher@maple.org"),
        "room": make_member(a, role=Role.ROOM_PARENT, email="room@maple.org"),
        "parent": make_member(a, email="parent@maple.org"),
        "oak2": make_member(a, email="oak2@maple.org"),
        "both": make_member(a, email="both@maple.org"),
        "elmer": make_member(a, email="elm@maple.org"),
        "pending": make_member(a, status=MembershipStatus.PENDING, email="pending@maple.org"),
        "rejected": make_member(a, status=MembershipStatus.REJECTED, email="rejected@maple.org"),
    }
    oak = make_class(
        a, "Oak Class", helpers=[(p["teacher"], ClassRole.TEACHER), (p["room"], ClassRole.ROOM_PARENT)]
    )
    elm = make_class(a, "Elm Class")
    # The room parent has a child in Oak too; "both" has children in Oak and Elm (in two families).
    make_family(a, [p["parent"], p["room"], p["pending"]], "Oakley", _kid_in("Oakley", [oak]))
    make_family(a, [p["oak2"]], "Acorn", _kid_in("Acorn", [oak]))
    make_family(a, [p["both"]], "Twin", _kid_in("Twin", [oak, elm]))
    make_family(a, [p["elmer"], p["both"]], "Elmwood", _kid_in("Elmwood", [elm]))
    b = make_school(name="Birch School")
    b_parent = make_member(b, email="b-parent@birch.org")
    b_admin = make_member(b, role=Role.ADMIN, email="b-admin@birch.org")
    make_member(b, email="b-other@birch.org")
    b_class = make_class(b, "Birch Class", helpers=[(b_admin, ClassRole.TEACHER)])
    make_family(b, [b_parent], "Birchley", _kid_in("Birchley", [b_class]))
    return {"a": a, "b": b, "oak": oak, "elm": elm, "b_class": b_class, "b_admin": b_admin, **p}


# --- who may send what ------------------------------------------------------------------------


def test_parents_are_refused_everything(client, community, sent_mail):
    sign_in(client, "parent@maple.org")
    oak = community["oak"].id
    for path in (
        "/messages",
        "/messages/new",
        "/messages/new?kind=school",
        "/messages/new?kind=newsletter",
        f"/messages/new?kind=class&class_id={oak}",
    ):
        assert client.get(path).status_code == 403, path
    assert _send(client, "class", oak).status_code == 403
    assert _send(client, "school").status_code == 403
    assert 'href="/messages"' not in client.get("/").get_data(as_text=True)
    assert _messages() == [] and sent_mail == []


def test_room_parent_emails_their_own_class_but_not_another_nor_the_school(client, community, sent_mail):
    sign_in(client, "room@maple.org")
    oak, elm = community["oak"].id, community["elm"].id
    assert 'href="/messages"' in client.get("/").get_data(as_text=True)
    assert client.get(f"/messages/new?kind=class&class_id={oak}").status_code == 200
    assert client.get(f"/messages/new?kind=class&class_id={elm}").status_code == 403
    assert _send(client, "class", elm).status_code == 403
    assert client.get("/messages/new?kind=school").status_code == 403
    assert _send(client, "school").status_code == 403
    assert _send(client, "newsletter").status_code == 403
    assert _messages() == [] and sent_mail == []

    choose = client.get("/messages/new?kind=class").get_data(as_text=True)
    assert "Oak Class" in choose and "Elm Class" not in choose

    response = _send(client, "class", oak)
    assert response.status_code == 303
    (message,) = _messages()
    assert response.headers["Location"] == f"/messages/{message.id}"
    assert message.category is Category.CLASS_ANNOUNCEMENTS and message.class_id == oak
    assert {m.to for m in sent_mail} == {
        "parent@maple.org",
        "room@maple.org",
        "oak2@maple.org",
        "both@maple.org",
        "teacher@maple.org",
    }
    assert "Sending to 5 people." in client.get(response.headers["Location"]).get_data(as_text=True)


def test_a_class_of_another_school_is_not_found(client, community):
    sign_in(client, "room@maple.org")
    b_class = community["b_class"].id
    assert client.get(f"/messages/new?kind=class&class_id={b_class}").status_code == 404
    assert _send(client, "class", b_class).status_code == 404
    assert _messages() == []


def test_admin_emails_every_approved_member_of_the_school_once(client, community, sent_mail):
    sign_in(client, "admin@maple.org")
    assert _send(client, "school", subject="Coats & hats on Friday").status_code == 303
    expected = {
        f"{name}@maple.org" for name in ("admin", "staff", "teacher", "room", "parent", "oak2", "both", "elm")
    }
    recipients = [m.to for m in sent_mail]
    assert sorted(recipients) == sorted(expected)  # each person once: no pending, rejected or Birch
    (message,) = _messages()
    assert message.category is Category.SCHOOL_ANNOUNCEMENTS and message.school_id == community["a"].id
    assert message.audience_label == "Everyone at Maple School"
    assert {d.status for d in _deliveries(message.id)} == {DeliveryStatus.SENT}
    envelope = sent_mail[0]
    assert envelope.subject == "Coats & hats on Friday"  # a subject is plain text, not HTML
    assert BODY.strip() in envelope.text and "Unsubscribe: http" in envelope.text
    assert envelope.html.startswith("<!doctype html>") and "<strong>Bring</strong>" in envelope.html
    assert envelope.headers["X-Category"] == "school_announcements"


def test_staff_need_messages_school_for_the_school_and_then_reach_any_class(
    client, community, sent_mail, grant_permissions
):
    sign_in(client, "staff@maple.org")  # staff may email classes they help with, by default none
    assert client.get("/messages/new?kind=school").status_code == 403
    assert client.get(f"/messages/new?kind=class&class_id={community['elm'].id}").status_code == 403
    grant_permissions(community["staff"], "messages.school")
    assert client.get("/messages/new?kind=school").status_code == 200
    assert _send(client, "class", community["elm"].id).status_code == 303
    assert {m.to for m in sent_mail} == {"both@maple.org", "elm@maple.org"}


def test_the_newsletter_permission_sends_newsletters_only(client, community, sent_mail, grant_permissions):
    grant_permissions(community["parent"], "messages.newsletter")
    sign_in(client, "parent@maple.org")
    assert client.get("/messages/new?kind=school").status_code == 403
    assert client.get("/messages/new").status_code == 200  # the one kind they may write
    assert _send(client, "newsletter").status_code == 303
    (message,) = _messages()
    assert message.category is Category.NEWSLETTERS
    assert len(sent_mail) == 8 and {m.headers["X-Category"] for m in sent_mail} == {"newsletters"}


def test_class_audience_is_guardians_of_enrolled_children_and_helpers_each_once(
    client, community, sent_mail, grant_permissions
):
    deactivated = community["elmer"]
    with tenancy.bound(community["a"].id):
        deactivated.status = MembershipStatus.DEACTIVATED
        db.session.commit()
    grant_permissions(community["teacher"], "messages.school")
    sign_in(client, "teacher@maple.org")
    assert _send(client, "class", community["elm"].id).status_code == 303
    assert [m.to for m in sent_mail] == ["both@maple.org"]  # deactivated, Oak and Birch people excluded


# --- Markdown ---------------------------------------------------------------------------------


def test_markdown_keeps_simple_formatting_and_safe_links():
    html = render_markdown(
        "# Trip\n\n**bold** *em*\n\n- one\n\nThen:\n\n1. first\n\n### Small\n\n> quoted\n\n"
        "[site](https://example.org) [mail](mailto:office@example.org) line  \nbreak"
    )
    for fragment in (
        "<h2>Trip</h2>",
        "<strong>bold</strong>",
        "<em>em</em>",
        "<ul>",
        "<ol>",
        "<h3>Small</h3>",
        "<blockquote>",
        '<a href="https://example.org" rel="noopener noreferrer">site</a>',
        '<a href="mailto:office@example.org" rel="noopener noreferrer">mail</a>',
        "<br>",
    ):
        assert fragment in html, fragment


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("<script>alert('x')</script>Hello", ["<script", "alert("]),
        ("[click](javascript:alert(1))", ["javascript:", "alert("]),
        ('<a href="JaVaScRiPt:alert(1)">x</a>', ["javascript", "alert("]),
        ('<img src="x" onerror="alert(1)">', ["<img", "onerror", "alert("]),
        ('<p onclick="steal()">hi</p>', ["onclick", "steal"]),
        ('<a href="https://ok.example" onmouseover="steal()">ok</a>', ["onmouseover", "steal"]),
        ("[data](data:text/html;base64,PHNjcmlwdD4=)", ["data:"]),
        ("[here](/relative/path)", ["/relative"]),
        ("![pic](https://example.org/a.png)", ["<img"]),
        (
            '<style>body{display:none}</style><iframe src="https://x"></iframe>',
            ["<style", "display", "<iframe"],
        ),
    ],
)
def test_markdown_drops_scripts_handlers_and_unsafe_links(source, forbidden):
    html = render_markdown(source).lower()
    for bad in forbidden:
        assert bad.lower() not in html, (source, html)


def test_sent_html_is_sanitised_and_the_text_part_is_the_source(client, community, sent_mail):
    sign_in(client, "admin@maple.org")
    body = 'Hi <script>alert(1)</script> [x](javascript:alert(2)) <img src=x onerror="alert(3)">'
    assert _send(client, "school", body=body).status_code == 303
    envelope = sent_mail[0]
    assert "<script" not in envelope.html and "javascript:" not in envelope.html
    assert "onerror" not in envelope.html
    assert body in envelope.text  # the plain part is what was typed


# --- preview and bad input --------------------------------------------------------------------


def test_preview_with_htmx_returns_only_the_fragment_and_sends_nothing(client, community, sent_mail):
    sign_in(client, "room@maple.org")
    url = f"/messages/new?kind=class&class_id={community['oak'].id}"
    response = client.htmx(
        url,
        {"subject": "Trip", "body": "**Bring** lunch <script>x()</script>", "action": "preview"},
        target="preview",
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith("<section") and "<html" not in html and "<form" not in html
    assert '<strong id="preview-count">5</strong>' in html
    assert "<strong>Bring</strong> lunch" in html and "<script" not in html
    assert _messages() == [] and sent_mail == []


def test_preview_without_javascript_shows_it_above_the_form_with_everything_kept(client, community):
    sign_in(client, "admin@maple.org")
    response = client.form(
        "/messages/new?kind=school",
        {"subject": "Sports day", "body": "Run *fast* & <b>smile</b>", "action": "preview"},
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<html" in html
    assert html.index('id="preview-heading"') < html.index('<form method="post" action="/messages/new')
    assert "Run <em>fast</em> &amp; <b>smile</b>" not in html  # <b> is not an allowed tag
    assert "Run <em>fast</em> &amp; smile" in html
    assert 'value="Sports day"' in html
    assert "Run *fast* &amp; &lt;b&gt;smile&lt;/b&gt;</textarea>" in html  # the source, kept as typed
    assert _messages() == []


def test_bad_input_shows_errors_next_to_the_fields_and_keeps_the_text(client, community, sent_mail):
    sign_in(client, "admin@maple.org")
    typed = "Half a message *in progress*"
    response = _send(client, "school", subject="  ", body=typed)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert '<p class="error" id="subject-error">Write a subject.</p>' in html
    assert 'aria-describedby="subject-error"' in html and 'aria-invalid="true"' in html
    assert f"{typed}</textarea>" in html

    too_long = _send(client, "school", subject="x" * 201, body="y" * 20_001)
    text = too_long.get_data(as_text=True)
    assert too_long.status_code == 400
    assert "Use at most 200 characters." in text and "Use at most 20,000 characters." in text

    htmx = client.htmx(
        "/messages/new?kind=school", {"subject": "", "body": typed, "action": "preview"}, target="preview"
    )
    assert htmx.status_code == 400
    assert htmx.headers["HX-Retarget"] == "#compose"
    fragment = htmx.get_data(as_text=True)
    assert "<html" not in fragment and "<form" in fragment and "Write a subject." in fragment
    assert f"{typed}</textarea>" in fragment
    assert _messages() == [] and sent_mail == []


@pytest.mark.parametrize(
    ("send_at", "error"),
    [
        ("2020-01-01T09:00", "Choose a time in the future"),
        ("next tuesday", "Enter a date and a time"),
        ("far", "at most 90 days ahead"),
    ],
)
def test_send_at_must_be_a_time_in_the_next_90_days(client, community, send_at, error):
    if send_at == "far":
        send_at = (utcnow() + timedelta(days=91)).strftime("%Y-%m-%dT%H:%M")
    sign_in(client, "admin@maple.org")
    response = _send(client, "school", send_at=send_at)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert error in html and 'id="send_at-error"' in html
    assert f'value="{send_at}"' in html  # what was typed stays
    assert _messages() == []


# --- scheduled sending ------------------------------------------------------------------------


def _schedule(client, community, hours=24):
    """Schedule a school announcement ``hours`` ahead, typed in the school's (New York) time."""
    school = community["a"]
    school.timezone = "America/New_York"
    db.session.commit()
    due = (utcnow() + timedelta(hours=hours)).replace(second=0, microsecond=0)
    local = due.astimezone(ZoneInfo("America/New_York")).strftime("%Y-%m-%dT%H:%M")
    sign_in(client, "admin@maple.org")
    response = _send(client, "school", send_at=local)
    assert response.status_code == 303
    (message,) = _messages()
    return message, due


def test_the_scheduled_note_gives_the_time_on_the_readers_clock(app, client, community):
    """'Scheduled for ...' in the reader's language, on the school's clock (12 h in English)."""
    from app.i18n.formatting import moment

    message, due = _schedule(client, community)
    page = client.get(f"/messages/{message.id}").get_data(as_text=True)
    with app.test_request_context("/"):
        expected = moment(due, "America/New_York")
    assert f"Scheduled for {expected} to 8 people." in page
    assert ("AM" in expected or "PM" in expected) and "UTC" not in expected


def test_a_scheduled_message_is_not_sent_early_and_the_sweeper_sends_it_when_due(
    client, community, sent_mail
):
    message, due = _schedule(client, community)
    assert message.scheduled_for == due  # typed in New York time, stored in UTC
    assert "Scheduled for" in client.get(f"/messages/{message.id}").get_data(as_text=True)
    assert sent_mail == []  # the send job ran after the commit and left it alone
    assert len(_deliveries(message.id)) == 8
    assert send_message(message.id) == {"sent": 0}
    with time_machine.travel(utcnow() + timedelta(hours=2)):
        assert sweep()["messages"] == 0  # pending for hours, but not lost: it waits for its time
        jobs.run_ready_jobs()
    assert sent_mail == []
    with time_machine.travel(due + timedelta(minutes=1)):
        assert sweep()["messages"] == 1
        jobs.run_ready_jobs()
        assert sweep()["messages"] == 0
    assert len(sent_mail) == 8
    assert {d.status for d in _deliveries(message.id)} == {DeliveryStatus.SENT}


def test_counts_partial_polls_while_waiting_and_stops_once_settled(client, community, sent_mail):
    message, due = _schedule(client, community)
    url = f"/messages/{message.id}"
    before = client.htmx(url, method="GET", target="delivery-counts").get_data(as_text=True)
    assert before.lstrip().startswith('<div id="delivery-counts"') and "<html" not in before
    assert "data-hx-trigger" not in before  # nothing to watch until its time
    assert _count(before, "waiting") == 8

    with time_machine.travel(due + timedelta(minutes=1)):
        due_now = client.htmx(url, method="GET", target="delivery-counts").get_data(as_text=True)
        assert 'data-hx-trigger="every 2s"' in due_now and f'data-hx-get="{url}"' in due_now
        assert (_count(due_now, "waiting"), _count(due_now, "sent")) == (8, 0)
        sweep()
        jobs.run_ready_jobs()
        done = client.htmx(url, method="GET", target="delivery-counts").get_data(as_text=True)
    assert "data-hx-trigger" not in done and "data-hx-get" not in done
    assert (_count(done, "sent"), _count(done, "waiting")) == (8, 0)
    assert (_count(done, "skipped"), _count(done, "failed")) == (0, 0)
    page = client.get(url).get_data(as_text=True)
    assert "<html" in page and 'id="delivery-counts"' in page


# --- the list, query counts and tenancy -------------------------------------------------------


def test_list_shows_each_message_with_counts_from_one_grouped_query(client, community, sent_mail):
    sign_in(client, "admin@maple.org")
    assert _send(client, "school", subject="First").status_code == 303
    with count_queries() as one:
        page = client.get("/messages").get_data(as_text=True)
    assert "First" in page and "Everyone at Maple School" in page and "School announcement" in page
    for subject in ("Second", "Third", "Fourth"):
        assert _send(client, "school", subject=subject).status_code == 303
    with count_queries() as four:
        page = client.get("/messages").get_data(as_text=True)
    assert len(four) == len(one)  # not one query per message
    rows = re.findall(r'<tr id="message-\d+">.*?</tr>', page, re.S)
    assert len(rows) == 4 and "Fourth" in rows[0]  # newest first
    for row in rows:
        assert (_count(row, "sent"), _count(row, "waiting"), _count(row, "failed")) == (8, 0, 0)


def test_a_message_whose_deliveries_are_all_final_is_never_recounted(client, community, sent_mail):
    """A school-wide message's deliveries are counted once it is done, then its counts are kept."""
    from app.models.counts import SettledCounts

    sign_in(client, "admin@maple.org")
    assert _send(client, "school", subject="Done").status_code == 303
    later = (utcnow() + timedelta(days=2)).astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M")
    assert _send(client, "school", subject="Later", send_at=later).status_code == 303
    first = client.get("/messages").get_data(as_text=True)
    done, waiting = (m.id for m in sorted(_messages(), key=lambda m: m.subject))
    kept = db.session.scalars(select(SettledCounts)).all()
    assert [(k.message_id, k.sent, k.failed) for k in kept] == [(done, 8, 0)]  # not the scheduled one
    with count_queries() as statements:
        again = client.get("/messages").get_data(as_text=True)
    counted = [s for s in statements if "FROM mail_delivery" in s and "count(" in s]
    # One grouped count, of one message: the scheduled one (the one that is done is kept).
    assert len(counted) == 1 and re.search(r"message_id IN \((\?|%\(\w+\)s(::INTEGER)?)\)", counted[0])
    assert re.findall(r'data-count="sent">(\d+)', again) == re.findall(r'data-count="sent">(\d+)', first)
    assert waiting != done


def test_the_list_shows_skipped_and_failed_deliveries(client, community, sent_mail):
    from app.models import Suppression

    sign_in(client, "admin@maple.org")
    # A bounced address is written as a delivery and skipped at send time (a closed account
    # is not written at all: see the next test).
    db.session.add(Suppression(email="oak2@maple.org", reason="bounce", blocks_administrative=True))
    db.session.commit()
    assert _send(client, "school").status_code == 303
    (message,) = _messages()
    failed = next(d for d in _deliveries(message.id) if d.to_email == "elm@maple.org")
    failed.status = DeliveryStatus.FAILED
    db.session.commit()
    page = client.get("/messages").get_data(as_text=True)
    assert (_count(page, "sent"), _count(page, "skipped"), _count(page, "failed")) == (6, 1, 1)


def test_closed_accounts_are_neither_counted_nor_written(client, community, sent_mail):
    """The count the sender sees leaves closed accounts out, as the send does."""
    community["oak2"].user.active = False
    db.session.commit()
    sign_in(client, "room@maple.org")
    url = f"/messages/new?kind=class&class_id={community['oak'].id}"
    preview = client.htmx(url, {"subject": "Trip", "body": "Lunch", "action": "preview"}, target="preview")
    assert '<strong id="preview-count">4</strong>' in preview.get_data(as_text=True)
    assert _send(client, "class", community["oak"].id).status_code == 303
    (message,) = _messages()
    emails = sorted(d.to_email for d in _deliveries(message.id))
    assert emails == ["both@maple.org", "parent@maple.org", "room@maple.org", "teacher@maple.org"]
    assert {d.status for d in _deliveries(message.id)} == {DeliveryStatus.SENT}


def test_sending_runs_the_same_number_of_queries_for_5_and_for_50_families(
    client, community, make_member, make_class, make_family, sent_mail
):
    a, room = community["a"], community["room"]
    statements = []
    for families in (5, 50):
        school_class = make_class(a, f"Class of {families}", helpers=[(room, ClassRole.ROOM_PARENT)])
        for n in range(families):
            guardian = make_member(a, email=f"c{families}-{n}@maple.org")
            make_family(a, [guardian], f"F{families}-{n}", _kid_in(f"F{families}-{n}", [school_class]))
        if not statements:
            sign_in(client, "room@maple.org")
        # Read the previous send's flash first, so both counts start from the same session state.
        client.get("/messages")
        with count_queries() as seen:
            assert _send(client, "class", school_class.id).status_code == 303
        statements.append(len(seen))
    assert statements[0] == statements[1]
    assert len(sent_mail) == (5 + 1) + (50 + 1)  # the families and the room parent, both times


def test_another_schools_message_pages_are_not_found(client, community, sent_mail):
    sign_in(client, "b-admin@birch.org")
    assert _send(client, "school", subject="Birch secret plans").status_code == 303
    (birch,) = _messages()
    assert birch.school_id == community["b"].id

    other = client.application.test_client()
    sign_in(other, "admin@maple.org")
    assert other.get(f"/messages/{birch.id}").status_code == 404
    partial = other.htmx(f"/messages/{birch.id}", method="GET", target="delivery-counts")
    assert partial.status_code == 404 and "Birch secret" not in partial.get_data(as_text=True)
    assert "Birch secret plans" not in other.get("/messages").get_data(as_text=True)
    assert client.get(f"/messages/{birch.id}").status_code == 200  # its own school sees it


def test_class_senders_follow_their_own_classes_messages_only(
    client, community, sent_mail, grant_permissions
):
    grant_permissions(community["staff"], "messages.school")
    sign_in(client, "staff@maple.org")
    assert _send(client, "class", community["elm"].id, subject="Elm only").status_code == 303
    assert _send(client, "class", community["oak"].id, subject="Oak news").status_code == 303
    elm_message, oak_message = _messages()

    room = client.application.test_client()
    sign_in(room, "room@maple.org")
    listing = room.get("/messages").get_data(as_text=True)
    assert "Oak news" in listing and "Elm only" not in listing
    assert room.get(f"/messages/{oak_message.id}").status_code == 200
    assert room.get(f"/messages/{elm_message.id}").status_code == 404


def test_a_naive_reading_of_send_at_would_be_wrong_by_the_offset(community):
    """The conversion itself: 09:30 in New York in summer is 13:30 UTC."""
    from app.messages.services import schedule_time

    zone = ZoneInfo("America/New_York")
    # Years long past, under travel: the result depends on no real date.
    with time_machine.travel(datetime(2020, 6, 1, 12, 0, tzinfo=UTC)):
        moment, problem = schedule_time(datetime(2020, 6, 2, 9, 30), zone)
        assert problem is None and moment == datetime(2020, 6, 2, 13, 30, tzinfo=UTC)
        gap, problem = schedule_time(datetime(2021, 3, 14, 2, 30), zone)  # clocks jump 02:00 -> 03:00
        assert gap is None and "does not exist" in problem


# --- calling off a scheduled message ----------------------------------------------------------


def test_a_cancelled_message_never_goes_out_and_the_cancel_is_audited(client, community, sent_mail):
    from app.models.audit import AuditEntry

    message, due = _schedule(client, community)
    page = client.get(f"/messages/{message.id}").get_data(as_text=True)
    assert "Cancel this message" in page
    response = client.form(f"/messages/{message.id}/cancel")
    assert response.status_code == 303
    page = client.get(f"/messages/{message.id}").get_data(as_text=True)
    assert "nobody received it" in page and "Cancel this message" not in page
    assert _count(page, "skipped") == 8 and _count(page, "waiting") == 0
    assert "Cancelled" in client.get("/messages").get_data(as_text=True)
    with time_machine.travel(due + timedelta(minutes=1)):
        sweep()
        jobs.run_ready_jobs()
        assert send_message(message.id) == {"sent": 0}
    assert sent_mail == []
    assert {d.status for d in _deliveries(message.id)} == {DeliveryStatus.SKIPPED}
    with tenancy.bound(community["a"].id):
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "message.cancelled"))
    assert entry.target == "Coats on Friday" and entry.detail["deliveries"] == 8


def test_a_message_that_has_gone_out_cannot_be_cancelled(client, community, sent_mail):
    message, due = _schedule(client, community)
    with time_machine.travel(due + timedelta(minutes=1)):
        sweep()
        jobs.run_ready_jobs()
        refused = client.form(f"/messages/{message.id}/cancel", follow_redirects=True)
        assert "already gone out" in refused.get_data(as_text=True)
    assert len(sent_mail) == 8
    assert _messages()[0].cancelled_at is None


def test_only_those_who_may_send_it_can_cancel_it(client, community, sent_mail, app):
    message, _ = _schedule(client, community)
    for email in ("parent@maple.org", "room@maple.org", "teacher@maple.org"):
        other = app.test_client()
        sign_in(other, email)
        assert other.form(f"/messages/{message.id}/cancel").status_code in (403, 404), email
    birch = app.test_client()
    sign_in(birch, "b-admin@birch.org")
    assert birch.form(f"/messages/{message.id}/cancel").status_code == 404
    assert {d.status for d in _deliveries(message.id)} == {DeliveryStatus.PENDING}


def test_a_room_parent_cancels_their_own_class_message(client, community, sent_mail):
    sign_in(client, "room@maple.org")
    later = (utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    assert _send(client, "class", class_id=community["oak"].id, send_at=later).status_code == 303
    (message,) = _messages()
    assert client.form(f"/messages/{message.id}/cancel").status_code == 303
    assert _messages()[0].cancelled_at is not None


def test_a_new_message_can_start_from_an_earlier_one(client, community, sent_mail, app):
    message, _ = _schedule(client, community)
    copied = client.get(f"/messages/new?kind=school&copy={message.id}").get_data(as_text=True)
    assert 'value="Coats on Friday"' in copied and "**Bring** a *coat* on Friday." in copied
    birch = app.test_client()
    sign_in(birch, "b-admin@birch.org")
    foreign = birch.get(f"/messages/new?kind=school&copy={message.id}").get_data(as_text=True)
    assert "Coats on Friday" not in foreign  # another school's message is not copied


def test_a_second_cancel_is_refused_and_audited_once(client, community, sent_mail):
    from app.models.audit import AuditEntry

    message, _ = _schedule(client, community)
    assert client.form(f"/messages/{message.id}/cancel").status_code == 303
    again = client.form(f"/messages/{message.id}/cancel", follow_redirects=True)
    assert "can no longer be cancelled" in again.get_data(as_text=True)
    with tenancy.bound(community["a"].id):
        entries = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "message.cancelled")).all()
    assert len(entries) == 1


def test_a_send_job_that_got_there_first_wins_over_a_cancel(client, community, sent_mail):
    """A worker whose clock runs ahead claimed a batch: the cancel is refused, nothing half done."""
    message, _ = _schedule(client, community)
    first = _deliveries(message.id)[0]
    first.status = DeliveryStatus.SENDING
    db.session.commit()
    refused = client.form(f"/messages/{message.id}/cancel", follow_redirects=True)
    assert "already gone out" in refused.get_data(as_text=True)
    assert _messages()[0].cancelled_at is None
    statuses = [d.status for d in _deliveries(message.id)]
    assert statuses.count(DeliveryStatus.PENDING) == len(statuses) - 1  # the rollback kept them


def test_odd_ids_in_the_compose_address_get_pages_not_errors(client, community):
    sign_in(client, "admin@maple.org")
    for junk in ("99999999999999999999", "²", "-1", "abc"):
        assert client.get(f"/messages/new?kind=school&copy={junk}").status_code == 200, junk
        assert client.get(f"/messages/new?kind=class&class_id={junk}").status_code == 200, junk
