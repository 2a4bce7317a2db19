"""Composing to a large audience: the worker writes the deliveries, each exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import select

from app import jobs, tenancy
from app.extensions import db
from app.mail import jobs as mail_jobs
from app.mail.preferences import unsubscribe
from app.messages import fanout
from app.models import Category, DeliveryStatus, MailDelivery, MailMessage
from app.models.base import utcnow
from tests import test_messages
from tests.conftest import sign_in
from tests.test_messages import _deliveries, _messages, _send

community = test_messages.community  # the fixture of the messages tests: Maple School and Birch next door

SCHOOL = 8  # approved members of Maple School (the community fixture)
SEND = mail_jobs.send_message  # the real job; the fixture holds the enqueued one


@pytest.fixture
def large(app, monkeypatch):
    """Maple's 8 people are a large audience; the send job is held, as RQ holds it, until called."""
    monkeypatch.setitem(app.config, "MESSAGE_INLINE_RECIPIENTS", SCHOOL - 1)
    held: list[int] = []
    monkeypatch.setattr(mail_jobs, "send_message", lambda message_id: held.append(message_id))
    return held


def _compose(client, large):
    sign_in(client, "admin@maple.org")
    response = _send(client, "school")
    assert response.status_code == 303
    (message,) = _messages()
    assert large == [message.id]
    return message, response.headers["Location"]


def _people(message_id):
    return sorted(d.user_id for d in _deliveries(message_id))


def _fan_out(message, chunk=3):
    with tenancy.acting_for(message.school_id):
        return fanout.fan_out(message.id, chunk=chunk)


def test_a_large_audience_is_written_by_the_worker_and_the_page_shows_it_preparing(
    client, community, sent_mail, large
):
    message, page = _compose(client, large)
    assert _deliveries(message.id) == [] and message.fanout_after == 0 and message.audience_size == SCHOOL
    html = client.get(page).get_data(as_text=True)
    assert f"Preparing {SCHOOL} recipients…" in html
    assert 'data-hx-trigger="every 2s"' in html and f'href="{page}">Refresh</a>' in html
    partial = client.get(page, headers={"HX-Request": "true", "HX-Target": "delivery-counts"})
    assert "Preparing 8 recipients…" in partial.get_data(as_text=True)

    SEND(message.id)  # the real send job, as the worker runs it
    assert len(_people(message.id)) == SCHOOL and len(sent_mail) == SCHOOL
    html = client.get(page).get_data(as_text=True)
    assert "Preparing" not in html and 'data-count="sent">8<' in html


def test_the_fan_out_writes_each_delivery_once_even_run_twice(client, community, large):
    message, _ = _compose(client, large)
    assert _fan_out(message) >= 2  # chunks of 3 people
    assert _fan_out(message) == 0
    people = _people(message.id)
    assert len(people) == SCHOOL and len(set(people)) == SCHOOL
    assert _messages()[0].fanout_after is None


def test_a_fan_out_interrupted_between_and_inside_chunks_resumes_without_duplicates(
    client, community, large, monkeypatch
):
    message, _ = _compose(client, large)
    with tenancy.acting_for(message.school_id):
        assert fanout.next_chunk(message.id, 3) == 1  # then the worker dies: the next is not begun
    first = len(_people(message.id))
    assert 0 < first < SCHOOL
    copy = fanout.copy_deliveries

    def crash_after_writing(message_id, people):
        copy(message_id, people)
        raise RuntimeError("worker killed mid-chunk")

    monkeypatch.setattr(fanout, "copy_deliveries", crash_after_writing)
    with pytest.raises(RuntimeError), tenancy.acting_for(message.school_id):
        fanout.next_chunk(message.id, 3)
    db.session.rollback()
    assert len(_people(message.id)) == first  # the broken chunk's rows went with its cursor
    monkeypatch.setattr(fanout, "copy_deliveries", copy)
    _fan_out(message)
    _fan_out(message)
    people = _people(message.id)
    assert len(people) == SCHOOL and len(set(people)) == SCHOOL


def test_someone_who_unsubscribed_after_compose_is_not_mailed(client, community, sent_mail, large):
    message, _ = _compose(client, large)
    unsubscribe(community["parent"].user, Category.SCHOOL_ANNOUNCEMENTS)
    db.session.commit()
    SEND(message.id)
    recipients = {m.to for m in sent_mail}
    assert "parent@maple.org" not in recipients and len(recipients) == SCHOOL - 1
    skipped = [d for d in _deliveries(message.id) if d.status is DeliveryStatus.SKIPPED]
    assert [d.user_id for d in skipped] == [community["parent"].user_id]


def test_the_sweeper_resumes_a_fan_out_whose_job_was_lost(client, community, sent_mail, large, monkeypatch):
    message, _ = _compose(client, large)
    monkeypatch.undo()  # the real send job again, as the sweeper enqueues it
    with time_machine.travel(utcnow() + timedelta(minutes=10), tick=False), tenancy.unscoped():
        mail_jobs.sweep()
        jobs.run_ready_jobs()
    assert len(_people(message.id)) == SCHOOL and len(sent_mail) == SCHOOL


def test_the_sweeper_leaves_a_fan_out_that_is_still_running(client, community, large):
    """A long fan-out holds a lease like a send run: no second run is enqueued at each sweep."""
    message, _ = _compose(client, large)
    before = len(large)
    with time_machine.travel(utcnow() + timedelta(minutes=6), tick=False):
        with tenancy.acting_for(message.school_id):
            assert fanout.next_chunk(message.id, 3) == 1  # a chunk just written: the lease is taken
        with tenancy.unscoped():
            mail_jobs.sweep()  # composed 6 minutes ago, but its run is alive
            jobs.run_ready_jobs()
        assert len(large) == before
    lease = db.session.get_one(MailMessage, message.id).sending_until
    with time_machine.travel(lease + timedelta(seconds=1), tick=False), tenancy.unscoped():
        mail_jobs.sweep()  # the lease lapsed: the run died, another one resumes
        jobs.run_ready_jobs()
    assert large[-1] == message.id and len(large) == before + 1


def test_a_small_audience_is_still_written_in_the_request(client, community, app, monkeypatch):
    monkeypatch.setitem(app.config, "MESSAGE_INLINE_RECIPIENTS", SCHOOL)
    held: list[int] = []
    monkeypatch.setattr(mail_jobs, "send_message", lambda message_id: held.append(message_id))
    sign_in(client, "admin@maple.org")
    assert _send(client, "school").status_code == 303
    (message,) = _messages()
    assert message.fanout_after is None and len(_people(message.id)) == SCHOOL
    assert db.session.scalar(select(MailDelivery.id).where(MailDelivery.message_id == message.id)) is not None


def test_a_scheduled_message_cancelled_while_preparing_writes_no_more_and_sends_nothing(
    client, community, sent_mail, large
):
    message, due = test_messages._schedule(client, community)
    with tenancy.acting_for(message.school_id):
        assert fanout.next_chunk(message.id, 3) == 1
    written = len(_people(message.id))
    assert client.form(f"/messages/{message.id}/cancel").status_code == 303
    with time_machine.travel(due + timedelta(minutes=1)):
        assert SEND(message.id) == {"sent": 0}
        _fan_out(message)
    assert len(_people(message.id)) == written and sent_mail == []
    assert {d.status for d in _deliveries(message.id)} == {DeliveryStatus.SKIPPED}
    page = client.get(f"/messages/{message.id}").get_data(as_text=True)
    assert "Preparing" not in page and "nobody received it" in page


def test_the_list_marks_a_message_still_preparing(client, community, large):
    message, _ = _compose(client, large)
    row = client.get("/messages").get_data(as_text=True).split(f'id="message-{message.id}"')[1]
    assert '<span class="tag">Preparing</span>' in row.split("</tr>")[0]
    _fan_out(message)
    assert "Preparing" not in client.get("/messages").get_data(as_text=True)


def _key_of(page):
    return page.split('name="submission" type="hidden" value="')[1].split('"')[0]


def test_a_double_submitted_compose_writes_one_message(client, community, sent_mail, large):
    sign_in(client, "admin@maple.org")
    key = _key_of(client.get("/messages/new?kind=school").get_data(as_text=True))
    first = _send(client, "school", submission=key)
    second = _send(client, "school", submission=key)
    (message,) = _messages()
    assert first.headers["Location"] == second.headers["Location"] == f"/messages/{message.id}"
    assert message.submission_key not in (None, key) and large == [message.id]  # a fingerprint
    other = _key_of(client.get("/messages/new?kind=school").get_data(as_text=True))
    assert other != key and _send(client, "school", submission=other).status_code == 303
    assert len(_messages()) == 2


def test_the_same_form_sent_again_after_an_edit_is_a_new_message(client, community, large):
    """Back to the sent form, edit, Send: the old key with new content is not the old message."""
    sign_in(client, "admin@maple.org")
    key = _key_of(client.get("/messages/new?kind=school").get_data(as_text=True))
    first = _send(client, "school", submission=key)
    edited = _send(client, "school", subject="Coats on Monday", submission=key)
    assert first.headers["Location"] != edited.headers["Location"]
    assert sorted(m.subject for m in _messages()) == ["Coats on Friday", "Coats on Monday"]


def test_two_submissions_racing_past_the_check_still_write_one_message(client, community, large, monkeypatch):
    from app.messages import services

    sign_in(client, "admin@maple.org")
    key = _key_of(client.get("/messages/new?kind=school").get_data(as_text=True))
    assert _send(client, "school", submission=key).status_code == 303
    real = services.submitted
    calls: list[str | None] = []

    def misses_once(submission):
        calls.append(submission)
        return None if len(calls) == 1 else real(submission)  # the other request had not committed yet

    monkeypatch.setattr(services, "submitted", misses_once)
    second = _send(client, "school", submission=key)
    (message,) = _messages()
    assert second.status_code == 303 and second.headers["Location"] == f"/messages/{message.id}"
    assert large == [message.id] and len(calls) == 2


def test_a_malformed_submission_key_is_ignored(client, community, large):
    sign_in(client, "admin@maple.org")
    assert _send(client, "school", submission="x" * 500).status_code == 303
    assert _send(client, "school", submission="<script>").status_code == 303
    assert [m.submission_key for m in _messages()] == [None, None]
