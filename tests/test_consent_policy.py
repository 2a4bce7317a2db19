"""Policy versions (P13): writing and publishing them, the public page, diffs, effective dates."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import event, select

from app.consent import policy
from app.extensions import db
from app.models import Category, DeliveryStatus, MailDelivery, MailMessage, PlatformRole, Role, User
from app.models.consent import NOTICE_PERIOD, ConsentEvent, ConsentKind, PolicyVersion
from tests.conftest import CLOCK_START, sign_in

# Everyone joins at CLOCK_START (the module runs on the clock fixture), before T0 on any day.
pytestmark = pytest.mark.usefixtures("clock")
T0 = CLOCK_START + timedelta(days=421)  # 2 March of the next year: after everyone in the tests joined


@pytest.fixture
def people(make_school, make_member):
    """A school with a parent, a staff member, a deactivated parent and a platform administrator."""
    school = make_school(name="Hazel School")
    parent = make_member(school, email="pia.parent@example.org", name="Pia Parent")
    staff = make_member(school, role=Role.STAFF, email="sam.staff@example.org", name="Sam Staff")
    gone = make_member(school, email="gone@example.org", name="Gus Gone")
    gone.user.active = False
    admin = make_member(school, email="operator@example.org", name="Olga Operator")
    admin.user.platform_role = PlatformRole.ADMIN
    db.session.commit()
    return {"school": school, "parent": parent, "staff": staff, "gone": gone, "admin": admin}


def write_and_publish(client, *, body="## Text\n\nNew words.", summary="We changed things.", **flags):
    """As a signed-in platform administrator: save a draft, then publish it. Returns its number."""
    data = {"body": body, "summary": summary}
    data |= {name: "y" for name, on in flags.items() if on}
    response = client.form("/platform/policy/new", data)
    assert response.status_code == 303, response.get_data(as_text=True)
    number = db.session.scalar(select(PolicyVersion.number).order_by(PolicyVersion.number.desc()).limit(1))
    assert client.form(f"/platform/policy/{number}/publish").status_code == 303
    return number


def version(number: int) -> PolicyVersion:
    db.session.expire_all()
    return db.session.scalar(select(PolicyVersion).where(PolicyVersion.number == number))


def seed_version_one():
    """Our placeholder as version 1 (the people in these tests joined before it: they are existing users)."""
    v1 = policy.ensure_placeholder()
    db.session.commit()
    return v1


# --- who may write ------------------------------------------------------------------------------


def test_only_platform_administrators_write_and_publish(client, people):
    for who in ("parent", "staff"):
        sign_in(client, people[who].user.email)
        assert client.get("/platform/policy/").status_code == 403
        assert client.form("/platform/policy/new", {"body": "x", "summary": "y"}).status_code == 403
        client.form("/sign-out")
    people["staff"].user.platform_role = PlatformRole.SUPPORT
    db.session.commit()
    sign_in(client, people["staff"].user.email)
    assert client.get("/platform/policy/").status_code == 403
    assert db.session.scalar(select(PolicyVersion)) is None


def test_a_material_change_needs_a_channel_and_nothing_typed_is_lost(client, people):
    sign_in(client, people["admin"].user.email)
    response = client.form(
        "/platform/policy/new", {"body": "Kept words", "summary": "Kept summary", "material": "y"}
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Choose email, a site notice, or both" in page
    assert "Kept words" in page and "Kept summary" in page
    assert db.session.scalar(select(PolicyVersion)) is None


def test_drafts_are_invisible_until_published_and_posted_versions_never_change(client, people):
    seed_version_one()
    sign_in(client, people["admin"].user.email)
    client.form("/platform/policy/new", {"body": "Draft words nobody sees", "summary": "Soon"})
    assert "Draft words nobody sees" not in client.get("/privacy").get_data(as_text=True)
    assert client.get("/privacy/versions/2").status_code == 404
    assert client.form("/platform/policy/2/publish").status_code == 303
    assert "Draft words nobody sees" in client.get("/privacy").get_data(as_text=True)
    edit = client.form("/platform/policy/2/edit", {"body": "Rewritten", "summary": "Sneaky"})
    assert edit.status_code == 303
    assert version(2).body_markdown == "Draft words nobody sees"


# --- the public page -----------------------------------------------------------------------------


def test_the_page_shows_our_placeholder_until_the_operator_publishes(client, people):
    page = client.get("/privacy").get_data(as_text=True)
    assert "may publish its own policy in place of this one" in page
    assert db.session.scalar(select(PolicyVersion)) is None  # reading writes nothing


def test_the_body_is_sanitised_like_announcements(client, people):
    seed_version_one()
    sign_in(client, people["admin"].user.email)
    body = "## Heading\n\n<script>alert(1)</script> [bad](javascript:alert(2)) **kept**"
    write_and_publish(client, body=body)
    page = client.get("/privacy").get_data(as_text=True)
    assert "<strong>kept</strong>" in page
    assert "<script>alert" not in page and "javascript:" not in page


def test_history_and_diff_between_any_two_versions_are_escaped(client, people):
    seed_version_one()
    sign_in(client, people["admin"].user.email)
    write_and_publish(client, body="Line one\nLine <b>two</b>\n")
    write_and_publish(client, body="Line one\nLine three\n")
    page = client.get("/privacy").get_data(as_text=True)
    for number in (1, 2, 3):
        assert f"Version {number}</a>" in page
    diff = client.get("/privacy/changes?from=2&to=3").get_data(as_text=True)
    assert '<span class="diff-remove">− Line &lt;b&gt;two&lt;/b&gt;</span>' in diff
    assert '<span class="diff-add">+ Line three</span>' in diff
    assert "<b>two</b>" not in diff
    assert client.get("/privacy/changes?from=abc&to=99").status_code == 200  # nonsense: defaults


# --- effective dates ----------------------------------------------------------------------------


def test_non_material_takes_effect_when_posted(client, people):
    with time_machine.travel(T0, tick=False):
        seed_version_one()
        sign_in(client, people["admin"].user.email)
        number = write_and_publish(client)
    posted = version(number)
    assert posted.effective_at == posted.posted_at == T0
    assert posted.email_message_id is None and posted.notice_posted_at is None
    assert policy.state(T0).in_force.number == number


def test_email_only_takes_effect_30_days_after_dispatch_finished(client, people, sent_mail):
    with time_machine.travel(T0, tick=False):
        seed_version_one()
        sign_in(client, people["admin"].user.email)
        number = write_and_publish(client, material=True, notify_by_email=True)
    posted = version(number)
    assert posted.notice_posted_at is None
    assert posted.email_dispatch_finished_at == T0
    # Every active account, at its current address; the deactivated one is not written to.
    active = {u.email for u in db.session.scalars(select(User).where(User.active.is_(True)))}
    assert posted.email_recipient_count == len(active) == 3
    assert sorted(e.to for e in sent_mail if "privacy policy" in e.subject) == sorted(active)
    message = db.session.get(MailMessage, posted.email_message_id)
    assert message.category is Category.ADMINISTRATIVE and message.school_id is None
    assert posted.effective_at == T0 + NOTICE_PERIOD
    assert policy.state(T0 + NOTICE_PERIOD - timedelta(seconds=1)).in_force.number == 1
    assert policy.state(T0 + NOTICE_PERIOD).in_force.number == number


def test_the_send_job_records_the_dispatch_end_without_anyone_opening_a_page(app, people, sent_mail):
    from app import jobs
    from app.consent.jobs import refresh_policy_dispatches
    from app.mail.jobs import send_message

    seed_version_one()
    with time_machine.travel(T0, tick=False):
        draft = policy.create_draft(body="b", summary="s", material=True, email=True, notice=False, by=None)
        policy.publish(draft)
        db.session.commit()
        db.session.info.pop("ready_jobs")  # the worker runs the send job itself, below
        assert version(draft.number).email_dispatch_finished_at is None  # not sent yet
        send_message(version(draft.number).email_message_id)
        assert version(draft.number).email_dispatch_finished_at is None  # its follow-up not yet run
        jobs.run_ready_jobs()  # the follow-up the send job queued, as the worker would run it
    posted = version(draft.number)
    assert posted.email_dispatch_finished_at == T0 and posted.email_recipient_count == 3
    assert posted.effective_at == T0 + NOTICE_PERIOD
    assert refresh_policy_dispatches() == {"recorded": False}  # once only


def test_reading_the_policy_pages_writes_nothing(client, people):
    seed_version_one()
    with time_machine.travel(T0, tick=False):
        sign_in(client, people["admin"].user.email)
        draft = policy.create_draft(body="b", summary="s", material=True, email=True, notice=False, by=None)
        policy.publish(draft)
        db.session.commit()
        db.session.info.pop("ready_jobs")  # sent but not yet noted: as if the follow-up were lost
        from app.mail.jobs import send_message

        send_message(version(draft.number).email_message_id)
        db.session.info.pop("pending_jobs", None)
        db.session.info.pop("ready_jobs", None)
        assert client.get("/privacy").status_code == 200
        assert client.get("/platform/policy/").status_code == 200
    assert version(draft.number).email_dispatch_finished_at is None  # the repeating job notes it


def test_email_dispatch_is_not_finished_while_a_delivery_is_pending(client, people):
    seed_version_one()
    sign_in(client, people["admin"].user.email)
    with time_machine.travel(T0, tick=False):
        draft = policy.create_draft(body="b", summary="s", material=True, email=True, notice=False, by=None)
        policy.publish(draft)
        db.session.commit()  # the send job runs only after a request here: the deliveries wait
    posted = version(draft.number)
    pending = db.session.scalars(
        select(MailDelivery).where(MailDelivery.message_id == posted.email_message_id)
    )
    assert {d.status for d in pending} == {DeliveryStatus.PENDING}
    assert policy.refresh_dispatch(posted) is False
    assert posted.effective_at is None  # unknown until the email has gone out
    assert "not yet known" in client.get("/privacy").get_data(as_text=True)


def test_notice_only_takes_effect_30_days_after_the_notice(client, people, sent_mail):
    with time_machine.travel(T0, tick=False):
        seed_version_one()
        sign_in(client, people["admin"].user.email)
        sent_before = len(sent_mail)
        number = write_and_publish(client, material=True, notify_by_notice=True)
    posted = version(number)
    assert posted.email_message_id is None and len(sent_mail) == sent_before
    assert posted.notice_posted_at == T0
    assert posted.effective_at == T0 + NOTICE_PERIOD


def test_both_channels_take_the_earlier_date(client, people):
    with time_machine.travel(T0, tick=False):
        seed_version_one()
        sign_in(client, people["admin"].user.email)
        number = write_and_publish(client, material=True, notify_by_email=True, notify_by_notice=True)
    with time_machine.travel(T0 + timedelta(hours=3), tick=False):
        client.get("/privacy")
    posted = version(number)
    assert posted.notice_posted_at == T0 and posted.email_dispatch_finished_at == T0
    assert posted.effective_at == T0 + NOTICE_PERIOD
    # The rule itself, both ways round: the earlier of the two channels wins.
    rule = PolicyVersion(material=True, notify_by_email=True, notify_by_notice=True, posted_at=T0)
    rule.notice_posted_at, rule.email_dispatch_finished_at = T0, T0 + timedelta(days=2)
    assert rule.effective_at == T0 + NOTICE_PERIOD
    rule.notice_posted_at, rule.email_dispatch_finished_at = T0 + timedelta(days=5), T0 + timedelta(days=1)
    assert rule.effective_at == T0 + timedelta(days=1) + NOTICE_PERIOD
    # A channel not used does not count, even if its date were set.
    rule.notify_by_email = False
    assert rule.effective_at == T0 + timedelta(days=5) + NOTICE_PERIOD


def test_versions_page_shows_posted_dispatch_count_and_effective_date(client, people):
    with time_machine.travel(T0, tick=False):
        seed_version_one()
        sign_in(client, people["admin"].user.email)
        number = write_and_publish(client, material=True, notify_by_email=True)
        page = client.get("/platform/policy/").get_data(as_text=True)
    section = re.search(rf'<section class="card" id="version-{number}">.*?</section>', page, re.S).group(0)
    assert "Finished" in section and "3 sent" in section
    assert "Apr 1, 2027, 9:00\u202fAM UTC" in section  # 2 March + 30 days; Babel: narrow space


def test_the_email_is_noted_in_each_recipients_ledger(client, people):
    seed_version_one()
    sign_in(client, people["admin"].user.email)
    number = write_and_publish(client, material=True, notify_by_email=True)
    client.get("/privacy")  # notes that the dispatch finished, and whom it reached
    noted = db.session.scalars(
        select(ConsentEvent.user_id).where(
            ConsentEvent.kind == ConsentKind.NOTIFIED_EMAIL, ConsentEvent.version_id == version(number).id
        )
    ).all()
    assert people["gone"].user_id not in noted
    assert {people["parent"].user_id, people["staff"].user_id, people["admin"].user_id} == set(noted)


def test_seed_command_publishes_the_placeholder_once(app, people):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["consent", "seed-policy"])
    second = runner.invoke(args=["consent", "seed-policy"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output
    assert len(db.session.scalars(select(PolicyVersion)).all()) == 1


def test_a_skipped_delivery_is_not_noted_as_told(client, people):
    from app.models import Suppression

    db.session.add(Suppression(email="pia.parent@example.org", reason="bounced", blocks_administrative=True))
    db.session.commit()
    seed_version_one()
    sign_in(client, people["admin"].user.email)
    number = write_and_publish(client, material=True, notify_by_email=True)
    client.get("/privacy")
    posted = version(number)
    assert posted.email_recipient_count == 2  # sent: staff and admin; the bounced address was skipped
    noted = db.session.scalars(
        select(ConsentEvent.user_id).where(ConsentEvent.kind == ConsentKind.NOTIFIED_EMAIL)
    ).all()
    assert people["parent"].user_id not in noted and len(noted) == 2


def test_a_version_posted_during_a_notice_period_waits_for_the_previous_one(client, people):
    with time_machine.travel(T0, tick=False):
        seed_version_one()
        sign_in(client, people["admin"].user.email)
        material = write_and_publish(client, material=True, notify_by_notice=True)
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        typo_fix = write_and_publish(client, summary="A typo")
        state = policy.state(T0 + timedelta(days=2))
    assert version(typo_fix).effective_at == version(material).effective_at == T0 + NOTICE_PERIOD
    assert state.in_force.number == 1
    assert [v.number for v in state.upcoming] == [material, typo_fix]
    assert policy.state(T0 + NOTICE_PERIOD).in_force.number == typo_fix


def test_publishing_waits_while_the_previous_email_is_still_going_out(client, people):
    seed_version_one()
    draft = policy.create_draft(body="b", summary="s", material=True, email=True, notice=False, by=None)
    policy.publish(draft)
    db.session.commit()  # no request ran the send job: its deliveries are pending
    sign_in(client, people["admin"].user.email)
    client.form("/platform/policy/new", {"body": "Next", "summary": "Next"})
    response = client.form(f"/platform/policy/{draft.number + 1}/publish", follow_redirects=True)
    assert "email is still going out" in response.get_data(as_text=True)
    assert version(draft.number + 1).posted_at is None


def test_the_worker_schedules_the_dispatch_check(monkeypatch):
    import worker
    from app.consent.jobs import refresh_policy_dispatches

    expected = (worker.POLICY_DISPATCH_JOB_ID, refresh_policy_dispatches, 7)
    assert expected in worker.repeating_jobs(sweep_every=7)


def test_publishing_an_email_does_not_load_every_account(app, people, make_member):
    """The deliveries are copied in the database: no account is loaded into the request."""
    for _ in range(50):
        make_member(people["school"])
    seed_version_one()
    draft = policy.create_draft(body="b", summary="s", material=True, email=True, notice=False, by=None)
    db.session.commit()
    db.session.expire_all()
    loaded: list[User] = []

    def record(target, context):
        loaded.append(target)

    event.listen(User, "load", record)
    try:
        policy.publish(draft)
        db.session.commit()
    finally:
        event.remove(User, "load", record)
    assert loaded == []
    deliveries = db.session.scalars(
        select(MailDelivery).where(MailDelivery.message_id == draft.email_message_id)
    )
    active = {u.email for u in db.session.scalars(select(User).where(User.active.is_(True)))}
    assert len(active) == 53
    assert {d.to_email for d in deliveries} == active
    assert all(d.status is DeliveryStatus.PENDING and d.created_at is not None for d in deliveries)


def test_publishing_twice_at_once_emails_everyone_once(client, people, monkeypatch):
    """A double-click: the second request read the draft, and the version before it, before the
    first request posted it."""
    v1 = seed_version_one()
    draft = policy.create_draft(body="b", summary="s", material=True, email=True, notice=False, by=None)
    db.session.commit()
    stale = version(draft.number)  # as the second request loaded it
    monkeypatch.setattr(policy, "newest_posted", lambda: v1)  # ... and what it found posted then
    sign_in(client, people["admin"].user.email)
    assert client.form(f"/platform/policy/{draft.number}/publish").status_code == 303
    assert not stale.is_posted  # this session has not seen the first request's commit
    with pytest.raises(policy.PublishRefused, match="already posted"):
        policy.publish(stale)
    db.session.rollback()
    emails = db.session.scalars(select(MailMessage).where(MailMessage.template == "policy_change")).all()
    assert len(emails) == 1


def test_an_edit_that_arrives_after_publishing_changes_nothing_and_keeps_the_text(client, people):
    """Admin A opened the draft; admin B published it; A's save must not rewrite the posted words."""
    seed_version_one()
    draft = policy.create_draft(
        body="Posted words", summary="s", material=False, email=False, notice=False, by=None
    )
    db.session.commit()
    stale = version(draft.number)  # as A's request loaded it, before B published
    sign_in(client, people["admin"].user.email)
    assert client.form(f"/platform/policy/{draft.number}/publish").status_code == 303
    with pytest.raises(policy.PublishRefused):
        policy.update_draft(stale, body="Rewritten", summary="s", material=False, email=False, notice=False)
    db.session.rollback()
    assert version(draft.number).body_markdown == "Posted words"
    late = client.form(f"/platform/policy/{draft.number}/edit", {"body": "Rewritten", "summary": "s"})
    assert late.status_code in (303, 409)
    assert version(draft.number).body_markdown == "Posted words"
