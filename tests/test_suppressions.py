"""The suppression list: school admins see their members' addresses, platform admins every one,
with the provider's reason and the date; lifting one starts email again at once and removes the
address from Mailgun's lists through its API, retried until Mailgun has it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app import tenancy
from app.extensions import db
from app.i18n.formatting import short_moment
from app.mail import provider_events
from app.mail.suppressions import remove_from_provider, sweep_suppressions
from app.models import (
    Category,
    DeliveryStatus,
    MailDelivery,
    PlatformRole,
    Role,
    Suppression,
    SuppressionLift,
    User,
    WebSession,
)
from app.models.audit import AuditEntry
from tests.conftest import _HASH, CLOCK_START, sign_in
from tests.fakes.mailgun import FakeMailgun
from tests.mailgun_hooks import API_KEY, DOMAIN, post_event, send_through

pytestmark = pytest.mark.usefixtures("loopback_only")
PAGE, PLATFORM_PAGE = "/settings/suppressions", "/platform/suppressions/"


@pytest.fixture
def fake(app):
    with FakeMailgun(api_key=API_KEY, domain=DOMAIN) as server:
        send_through(app, server)
        yield server


@pytest.fixture
def schools(make_school, make_member):
    """Two schools; each has a superadmin and a parent whose address is suppressed."""
    maple, birch = make_school(name="Maple"), make_school(name="Birch")
    people = {
        "admin": make_member(maple, role=Role.SUPERADMIN, email="admin@maple.example"),
        "pia": make_member(maple, name="Pia Parent", email="pia@maple.example"),
        "other": make_member(birch, name="Otto Other", email="otto@birch.example"),
        "birch_admin": make_member(birch, role=Role.SUPERADMIN, email="admin@birch.example"),
    }
    return maple, birch, people


def _suppress(email: str, reason: str = "bounce", lists: str | None = None, **fields) -> int:
    provider_list, blocks = provider_events.SUPPRESSING[reason]
    row = Suppression(
        email=email,
        reason=reason,
        blocks_administrative=blocks,
        provider_lists=provider_list if lists is None else lists,
        **fields,
    )
    db.session.add(row)
    db.session.commit()
    return row.id


def _emails() -> set[str]:
    db.session.expire_all()
    return set(db.session.scalars(select(Suppression.email)))


def _lifted_audit(school_id: int) -> list[tuple[str | None, dict]]:
    db.session.expire_all()
    with tenancy.bound(school_id):
        query = select(AuditEntry.target, AuditEntry.detail).where(AuditEntry.action == "suppression.lifted")
        return [tuple(row) for row in db.session.execute(query)]


def _platform_admin(client, role=PlatformRole.ADMIN) -> User:
    user = User(email=f"{role.value}@operator.example", name="Opal Operator", password_hash=_HASH)
    user.platform_role = role
    db.session.add(user)
    db.session.commit()
    sign_in(client, user.email)
    return user


# -- the school's list -------------------------------------------------------------------------------


def test_a_school_admin_sees_their_members_suppressions_only_with_reason_and_date(clock, client, schools):
    maple, _, people = schools
    _suppress("pia@maple.example", "complaint", detail=None)
    _suppress("otto@birch.example")  # another school's member
    _suppress("stranger@example.org")  # nobody's account (the contact form's, say)
    sign_in(client, people["admin"].user.email)
    page = client.get(PAGE).get_data(as_text=True)
    assert "pia@maple.example" in page and "Pia Parent" in page
    assert "Marked one of our emails as spam" in page
    assert "Optional email (account notices still go)" in page
    with client.application.test_request_context():
        since = short_moment(CLOCK_START, "UTC")  # the school's clock is UTC here
    assert since in page
    assert "otto@birch.example" not in page and "stranger@example.org" not in page
    assert 'href="/settings/suppressions"' in client.get("/settings/").get_data(as_text=True)


def test_the_empty_list_says_so(client, schools):
    sign_in(client, schools[2]["admin"].user.email)
    assert "No address is suppressed." in client.get(PAGE).get_data(as_text=True)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.PARENT, False), (Role.ROOM_PARENT, False), (Role.STAFF, False), (Role.ADMIN, True)],
)
def test_only_people_managers_see_and_lift(client, schools, make_member, role, allowed):
    maple, _, _ = schools
    suppression_id = _suppress("pia@maple.example")
    actor = make_member(maple, role=role)
    sign_in(client, actor.user.email)
    assert client.get(PAGE).status_code == (200 if allowed else 403)
    response = client.form(f"{PAGE}/{suppression_id}/lift")
    assert response.status_code == (303 if allowed else 403)
    assert _emails() == (set() if allowed else {"pia@maple.example"})


def test_a_member_given_members_manage_reaches_the_list(client, schools, make_member, grant_permissions):
    maple, _, _ = schools
    staff = make_member(maple, role=Role.STAFF)
    grant_permissions(staff, "members.manage")
    sign_in(client, staff.user.email)
    assert client.get(PAGE).status_code == 200


def test_lifting_starts_email_at_once_and_removes_the_address_from_mailguns_list(
    app, client, fake, schools, send_email
):
    maple, _, people = schools
    suppression_id = _suppress("pia@maple.example", lists="bounces,complaints")
    fake.suppress("bounces", "pia@maple.example")
    fake.suppress("complaints", "pia@maple.example")
    sign_in(client, people["admin"].user.email)
    response = client.form(f"{PAGE}/{suppression_id}/lift")
    assert (response.status_code, response.headers["Location"]) == (303, PAGE)
    # The flash waits in the session until the next page: neither the cookie nor the stored
    # session may hold the address (P8).
    assert "pia@maple" not in " ".join(response.headers.getlist("Set-Cookie"))
    assert not any("pia@maple" in row for row in db.session.scalars(select(WebSession.data)))
    page = client.get(PAGE).get_data(as_text=True)
    assert "Suppression lifted: email goes to that address again" in page
    assert _emails() == set()
    assert fake.removals == [("bounces", "pia@maple.example"), ("complaints", "pia@maple.example")]
    assert fake.suppressed("bounces") == set()
    lifted = db.session.scalar(select(SuppressionLift))
    assert lifted.done_at is not None and lifted.attempts == 0
    assert _lifted_audit(maple.id) == [("Pia Parent", {"reason": "bounce"})]
    send_email([people["pia"].user], school=maple, category=Category.NEWSLETTERS)
    assert fake.recipients() == ["pia@maple.example"]


def test_lifting_with_htmx_answers_the_row_in_place(client, fake, schools):
    suppression_id = _suppress("pia@maple.example")
    sign_in(client, schools[2]["admin"].user.email)
    response = client.htmx(f"{PAGE}/{suppression_id}/lift", target=f"suppression-{suppression_id}")
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "HX-Target" in response.headers["Vary"]
    assert body.startswith(
        f'<li class="card queue-row decided" id="suppression-{suppression_id}" role="status">'
    )
    assert "<html" not in body and "pia@maple.example" in body
    assert _emails() == set()


def test_a_repeated_lift_changes_nothing_twice(client, fake, schools):
    maple, _, people = schools
    suppression_id = _suppress("pia@maple.example")
    sign_in(client, people["admin"].user.email)
    assert client.form(f"{PAGE}/{suppression_id}/lift").status_code == 303
    again = client.form(f"{PAGE}/{suppression_id}/lift")
    assert again.status_code == 404
    assert "not on the list (any more): nothing was lifted" in again.get_data(as_text=True)
    assert db.session.scalar(select(func.count(SuppressionLift.id))) == 1
    assert len(_lifted_audit(maple.id)) == 1
    assert len(fake.removals) == 0  # the fake had it on no list: nothing to remove, nothing failed


def test_another_schools_suppression_is_not_found_and_stays(client, fake, schools):
    _, birch, people = schools
    other_id = _suppress("otto@birch.example")
    sign_in(client, people["admin"].user.email)
    response = client.form(f"{PAGE}/{other_id}/lift")
    assert response.status_code == 404
    assert "otto@birch.example" not in response.get_data(as_text=True)
    assert _emails() == {"otto@birch.example"}
    assert _lifted_audit(birch.id) == []


# -- outages delay the removal, never lose it --------------------------------------------------------


def test_mailgun_down_lifts_here_at_once_and_the_removal_follows_when_it_is_back(
    app, clock, client, fake, schools
):
    maple, _, people = schools
    suppression_id = _suppress("pia@maple.example")
    fake.suppress("bounces", "pia@maple.example")
    fake.queue_responses([(503, {"message": "busy"}), (401, {"message": "Forbidden"})])
    sign_in(client, people["admin"].user.email)
    assert client.form(f"{PAGE}/{suppression_id}/lift").status_code == 303
    assert _emails() == set()  # lifted here whatever Mailgun says
    lifted = db.session.scalar(select(SuppressionLift))
    assert (lifted.done_at, lifted.attempts) == (None, 1)
    assert lifted.last_error == "Mailgun server error (503)"
    page = client.get(PAGE).get_data(as_text=True)
    assert "being removed from Mailgun's list" in page and "tried 1 time" in page

    assert sweep_suppressions()["lifts"] == 0  # not due yet: the backoff holds
    clock.shift(seconds=1)
    assert sweep_suppressions()["lifts"] == 1
    _run_pending_jobs(app)
    db.session.expire_all()
    lifted = db.session.get(SuppressionLift, lifted.id)
    assert lifted.attempts == 2 and "check MAILGUN_API_KEY" in lifted.last_error  # even a 401 is retried
    clock.shift(seconds=2)
    sweep_suppressions()
    _run_pending_jobs(app)
    db.session.expire_all()
    assert db.session.get(SuppressionLift, lifted.id).done_at is not None
    assert fake.removals == [("bounces", "pia@maple.example")]
    assert "being removed" not in client.get(PAGE).get_data(as_text=True)


def _run_pending_jobs(app) -> None:
    """In-process mode: the jobs the sweeper's commit released (a worker would run them)."""
    from app.jobs import run_ready_jobs

    run_ready_jobs()


def test_a_lost_removal_job_is_picked_up_by_the_sweeper(app, clock, fake, schools):
    """Redis down at enqueue time: the lift row remains, and the sweeper enqueues it later."""
    lifted = SuppressionLift(email="pia@maple.example", reason="bounce", provider_lists="bounces")
    db.session.add(lifted)
    db.session.commit()
    fake.suppress("bounces", "pia@maple.example")
    assert sweep_suppressions()["lifts"] == 0
    clock.shift(minutes=2, seconds=1)
    assert sweep_suppressions()["lifts"] == 1
    _run_pending_jobs(app)
    assert fake.removals == [("bounces", "pia@maple.example")]
    clock.shift(hours=9, minutes=6)
    assert sweep_suppressions()["lifts_forgotten"] == 1  # the address is not kept longer than needed
    assert db.session.scalar(select(func.count(SuppressionLift.id))) == 0


def test_a_new_bounce_before_the_removal_keeps_mailguns_list(app, clock, fake, schools, send_email):
    """Suppressed again by new evidence meanwhile: the removal leaves that list alone."""
    maple, _, people = schools
    fake.suppress("bounces", "pia@maple.example")
    fake.suppress("complaints", "pia@maple.example")
    lifted = SuppressionLift(
        email="pia@maple.example", reason="complaint", provider_lists="bounces,complaints"
    )
    db.session.add(lifted)
    db.session.commit()
    clock.shift(minutes=1)
    _suppress("pia@maple.example", "bounce")
    assert remove_from_provider(lifted.id) == {"removed": True, "lists": ["complaints"]}
    assert fake.suppressed("bounces") == {"pia@maple.example"}
    assert remove_from_provider(lifted.id) == {"removed": False}  # done: a second run does nothing


def test_refusals_by_mailguns_stale_list_do_not_suppress_again(app, client, fake, schools, send_email):
    """Mail sent before Mailgun forgot the address is refused on its old list: not news. A real
    bounce afterwards is, and so is a refusal of mail sent after the removal."""
    maple, _, people = schools
    hook = app.test_client(use_cookies=False)
    suppression_id = _suppress("pia@maple.example")
    fake.suppress("bounces", "pia@maple.example")
    fake.queue_responses([(503, {"message": "busy"})])  # the removal waits
    sign_in(client, people["admin"].user.email)
    client.form(f"{PAGE}/{suppression_id}/lift")
    send_email([people["pia"].user], school=maple)  # goes out while Mailgun still lists the address
    assert post_event(hook, fake.event_for("pia@maple.example", "suppress-bounce")).status_code == 200
    assert _emails() == set()
    remove_from_provider(db.session.scalar(select(SuppressionLift.id)))
    assert post_event(hook, fake.event_for("pia@maple.example", "suppress-bounce")).status_code == 200
    assert _emails() == set()  # still about the mail sent before the removal
    send_email([people["pia"].user], school=maple)
    assert post_event(hook, fake.event_for("pia@maple.example", "suppress-bounce")).status_code == 200
    assert _emails() == {"pia@maple.example"}


# -- the platform's list -----------------------------------------------------------------------------


def test_a_platform_admin_sees_every_suppression_and_lifts_one_audited_in_its_schools(
    client, fake, schools, make_member
):
    maple, birch, people = schools
    make_member(birch, user=people["pia"].user)  # Pia belongs to both schools
    pia_id = _suppress("pia@maple.example", "suppress-complaint")
    _suppress("stranger@example.org")
    _platform_admin(client)
    assert 'href="/platform/suppressions/"' in client.get("/platform/").get_data(as_text=True)
    page = client.get(PLATFORM_PAGE).get_data(as_text=True)
    assert "pia@maple.example" in page and "stranger@example.org" in page
    assert "Mailgun refused to send: the address is on its spam complaint list" in page
    assert "Pia Parent" not in page and "Maple" not in page  # addresses only, no school data
    fake.suppress("complaints", "pia@maple.example")
    assert client.form(f"{PLATFORM_PAGE}{pia_id}/lift").status_code == 303
    assert _emails() == {"stranger@example.org"}
    assert fake.removals == [("complaints", "pia@maple.example")]
    expected = [("Pia Parent", {"reason": "suppress-complaint"})]
    assert _lifted_audit(maple.id) == expected and _lifted_audit(birch.id) == expected


def test_support_staff_and_school_admins_do_not_reach_the_platform_list(client, schools):
    suppression_id = _suppress("pia@maple.example")
    _platform_admin(client, PlatformRole.SUPPORT)
    assert client.get(PLATFORM_PAGE).status_code == 403
    assert client.form(f"{PLATFORM_PAGE}{suppression_id}/lift").status_code == 403
    assert 'href="/platform/suppressions/"' not in client.get("/platform/").get_data(as_text=True)
    client.form("/sign-out")
    sign_in(client, schools[2]["admin"].user.email)
    assert client.get(PLATFORM_PAGE).status_code == 403
    assert _emails() == {"pia@maple.example"}


def test_the_list_is_paged_newest_first(client, schools, make_member):
    maple, _, people = schools
    for n in range(55):
        make_member(maple, email=f"p{n:02d}@maple.example")
        _suppress(f"p{n:02d}@maple.example")
    sign_in(client, people["admin"].user.email)
    first = client.get(PAGE).get_data(as_text=True)
    assert "p54@maple.example" in first and "p05@maple.example" in first and "p04@maple.example" not in first
    older = first.split('<nav class="pager" aria-label="Pages"><a href="')[1].split('"')[0]
    second = client.get(older.replace("&amp;", "&")).get_data(as_text=True)
    assert (
        "p04@maple.example" in second and "p00@maple.example" in second and "p05@maple.example" not in second
    )
    assert 'class="pager"' not in second
    assert client.get(f"{PAGE}?before=%C2%B2").status_code == 200  # a nonsense cursor is the first page


def test_message_page_shows_bounced_and_complained_counts(client, fake, schools, send_email):
    maple, _, people = schools
    hook_client = client.application.test_client(use_cookies=False)
    sign_in(client, people["admin"].user.email)
    response = client.form(
        "/messages/new?kind=school", {"subject": "Fair", "body": "Come along", "action": "send"}
    )
    message_path = response.headers["Location"]
    for email, outcome in (("pia@maple.example", "bounce"), ("admin@maple.example", "complaint")):
        assert post_event(hook_client, fake.event_for(email, outcome)).status_code == 200
    page = client.get(message_path).get_data(as_text=True)
    assert '<td data-count="bounced">1</td>' in page and '<td data-count="complained">1</td>' in page
    statuses = db.session.scalars(select(MailDelivery.status)).all()
    assert set(statuses) == {DeliveryStatus.SENT}


def test_the_worker_schedules_the_suppression_sweeper_and_the_command_runs_it(app, monkeypatch, clock):
    import worker

    assert (worker.SUPPRESSION_SWEEP_JOB_ID, sweep_suppressions, 7) in worker.repeating_jobs(sweep_every=7)
    db.session.add(SuppressionLift(email="gone@example.org", reason="bounce", provider_lists="bounces"))
    db.session.commit()
    clock.shift(minutes=3)
    result = app.test_cli_runner().invoke(args=["jobs", "sweep-suppressions"])
    assert result.exit_code == 0 and "'lifts': 1" in result.output
    assert app.extensions["mail_backend"].removed == [("gone@example.org", ("bounces",))]
    assert db.session.scalar(select(SuppressionLift.done_at)) is not None
