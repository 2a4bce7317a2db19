"""The consent ledger and the notice banner (P13, P14), clock-controlled."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import select

from app.consent import ledger, policy
from app.extensions import db
from app.models import PlatformRole, Role, User
from app.models.consent import NOTICE_PERIOD, ConsentEvent, ConsentKind, ConsentLedgerIsAppendOnly
from tests.conftest import CLOCK_START, count_queries, publish_material, sign_in

# Everyone joins at CLOCK_START (the module runs on the clock fixture), before T0 on any day.
pytestmark = pytest.mark.usefixtures("clock")
T0 = CLOCK_START + timedelta(days=483, hours=-1)  # a Monday morning after everyone joined
BANNER = 'id="consent-banner"'


@pytest.fixture
def school(make_school, make_member):
    school = make_school(name="Rowan School")
    parent = make_member(school, email="petra.parent@example.org", name="Petra Parent")
    admin = make_member(school, role=Role.ADMIN, email="ada.admin@example.org", name="Ada Admin")
    school.invite_code = "ROWAN-1"
    db.session.commit()
    return {"school": school, "parent": parent, "admin": admin}


def kinds_of(user_id: int, number: int | None = None) -> list[str]:
    query = select(ConsentEvent).where(ConsentEvent.user_id == user_id).order_by(ConsentEvent.id)
    events = db.session.scalars(query).all()
    if number is None:
        return [e.kind.value for e in events]
    version = policy.get_version(number)
    return [e.kind.value for e in events if e.version_id == version.id]


def act(client, school) -> None:
    """A state-changing request from a page, changing nothing else: switch to their own school."""
    response = client.form("/schools/switch", {"school_id": school["school"].id})
    assert response.status_code == 303


def test_existing_user_before_at_and_after_the_effective_date(client, school):
    parent = school["parent"]
    with time_machine.travel(T0, tick=False):
        v2 = publish_material(email=False, notice=True)
    effective = T0 + NOTICE_PERIOD

    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        sign_in(client, parent.user.email)
        page = client.get("/").get_data(as_text=True)
        assert BANNER in page and "We now keep sign-in records for 90 days." in page
        client.get("/classes/")
        assert kinds_of(parent.user_id, 2) == []  # reading pages writes nothing: the banner only reads
        act(client, school)
        act(client, school)
        # Recorded at the first change made from a page that carried the banner, and only once.
        assert kinds_of(parent.user_id, 2) == ["notice_shown"]
        assert policy.version_for_user(parent.user, T0 + timedelta(days=1)).number == 1

    with time_machine.travel(effective - timedelta(seconds=1), tick=False):
        sign_in(client, parent.user.email)  # the earlier session has expired by now
        client.get("/")
        act(client, school)
        assert "continued_use" not in kinds_of(parent.user_id, 2)

    with time_machine.travel(effective, tick=False):
        client.get("/")
        client.get("/classes/")
        assert kinds_of(parent.user_id, 2) == ["notice_shown"]  # reads record nothing, even now
        act(client, school)  # the first state-changing request after the effective date
        act(client, school)
        assert kinds_of(parent.user_id, 2) == ["notice_shown", "continued_use"]
        assert policy.version_for_user(parent.user, effective).number == v2.number

    with time_machine.travel(effective + timedelta(days=3), tick=False):
        page = client.get("/").get_data(as_text=True)
        assert BANNER in page  # newly in force: still shown until acknowledged
        assert "has changed" in page
        sign_in(client.application.test_client(), parent.user.email)  # signing in again: use again
        assert kinds_of(parent.user_id, 2).count("continued_use") == 1


def test_email_only_change_takes_effect_for_existing_users_30_days_after_dispatch(client, school, sent_mail):
    parent = school["parent"]
    with time_machine.travel(T0, tick=False):
        publish_material(email=True, notice=False)
        client.get("/privacy")  # notes that the dispatch finished
    assert [m.to for m in sent_mail].count(parent.user.email) == 1
    with time_machine.travel(T0 + NOTICE_PERIOD - timedelta(minutes=1), tick=False):
        sign_in(client, parent.user.email)
        client.get("/")
        assert kinds_of(parent.user_id, 2)[:1] == ["notified_email"]
        assert "continued_use" not in kinds_of(parent.user_id, 2)
    with time_machine.travel(T0 + NOTICE_PERIOD + timedelta(minutes=1), tick=False):
        client.get("/")
        assert "continued_use" not in kinds_of(parent.user_id, 2)  # a page read records nothing
        sign_in(client.application.test_client(), parent.user.email)  # signing in is use
        assert kinds_of(parent.user_id, 2)[-1] == "continued_use"


def test_new_user_accepts_the_newest_version_and_is_under_it_at_once(client, school):
    with time_machine.travel(T0, tick=False):
        v2 = publish_material()
    with time_machine.travel(T0 + timedelta(days=2), tick=False):
        data = {
            "invite_code": "ROWAN-1",
            "name": "Nina Newcomer",
            "email": "nina@example.org",
            "password": "plum orchard lantern",
            "accept_policy": "y",
        }
        assert client.form("/join", data).status_code == 303
        newcomer = db.session.scalar(select(User).where(User.email == "nina@example.org"))
        assert kinds_of(newcomer.id) == ["accepted"]
        assert kinds_of(newcomer.id, 2) == ["accepted"]
        assert policy.version_for_user(newcomer, T0 + timedelta(days=2)).number == v2.number
        page = client.get("/pending").get_data(as_text=True)
        assert BANNER not in page
    with time_machine.travel(T0 + NOTICE_PERIOD + timedelta(days=1), tick=False):
        sign_in(client, "nina@example.org")
        client.get("/pending")
        assert kinds_of(newcomer.id) == ["accepted"]  # nothing to continue: they agreed to it


def test_sign_up_without_any_version_accepts_our_placeholder(client, school):
    data = {
        "invite_code": "ROWAN-1",
        "name": "Nina Newcomer",
        "email": "nina@example.org",
        "password": "plum orchard lantern",
        "accept_policy": "y",
    }
    assert client.form("/join", data).status_code == 303
    newcomer = db.session.scalar(select(User).where(User.email == "nina@example.org"))
    assert kinds_of(newcomer.id, 1) == ["accepted"]


def test_the_banner_is_dismissed_with_htmx_or_a_plain_form_and_stays_reachable(client, school):
    with time_machine.travel(T0, tick=False):
        publish_material()
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        sign_in(client, school["parent"].user.email)
        assert BANNER in client.get("/").get_data(as_text=True)
        response = client.htmx("/privacy/notice/2/acknowledge", {"next": "/"}, target="consent-banner")
        assert response.status_code == 200 and "Thank you" in response.get_data(as_text=True)
        page = client.get("/").get_data(as_text=True)
        assert BANNER not in page
        assert 'href="/privacy/notice"' in page  # the footer keeps it reachable
        notice = client.get("/privacy/notice").get_data(as_text=True)
        assert "We now keep sign-in records for 90 days." in notice and "Close my account" in notice
        assert "acknowledged" in kinds_of(school["parent"].user_id, 2)

        client.form("/sign-out")
        sign_in(client, school["admin"].user.email)
        plain = client.form("/privacy/notice/2/acknowledge", {"next": "/classes/"})
        assert plain.status_code == 303 and plain.headers["Location"] == "/classes/"
        plain = client.form("/privacy/notice/2/acknowledge", {"next": "https://evil.example/"})
        assert plain.headers["Location"] == "/"
        assert client.form("/privacy/notice/99/acknowledge").status_code == 404


def test_non_material_changes_show_no_banner(client, school):
    policy.ensure_placeholder()
    draft = policy.create_draft(
        body="Typo fixed", summary="Typo", material=False, email=False, notice=False, by=None
    )
    policy.publish(draft)
    db.session.commit()
    sign_in(client, school["parent"].user.email)
    assert BANNER not in client.get("/").get_data(as_text=True)


def test_the_request_hook_costs_one_small_query(client, school):
    sign_in(client, school["parent"].user.email)
    client.get("/")

    def consent_queries() -> int:
        with count_queries() as statements:
            client.get("/classes/")
        return sum(1 for s in statements if "consent_event" in s or "policy_version" in s)

    assert consent_queries() == 1
    with time_machine.travel(T0, tick=False):
        publish_material(email=False)
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        sign_in(client, school["parent"].user.email)
        client.get("/")  # a page with the banner: still the one query, and it only reads
        assert consent_queries() == 1


def test_anonymous_pages_run_no_consent_query(client, school):
    with count_queries() as statements:
        client.get("/sign-in")
    assert not [s for s in statements if "consent_event" in s or "policy_version" in s]


def test_people_see_their_own_ledger_on_the_account_page(client, school):
    with time_machine.travel(T0, tick=False):
        publish_material()
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        sign_in(client, school["parent"].user.email)
        client.get("/")
        act(client, school)  # "shown" is recorded at the first change made from a page with the banner
        page = client.get("/account").get_data(as_text=True)
    assert "Told by email" in page and "Shown the notice on the site" in page
    assert "You are under" in page and "version 1</a>" in page


def test_admins_see_counts_per_version_never_anyones_ledger(client, school, make_school, make_member):
    other = make_school(name="Elsewhere")
    make_member(other, email="outsider@example.org", name="Otto Outsider")
    with time_machine.travel(T0, tick=False):
        publish_material()
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        sign_in(client, school["parent"].user.email)
        client.get("/")
        assert client.get("/school/consent").status_code == 403
        client.form("/sign-out")
        sign_in(client, school["admin"].user.email)
        page = client.get("/school/consent").get_data(as_text=True)
    assert "Petra" not in page and "petra.parent@example.org" not in page
    row = page.split('<th scope="row">Version 2')[1].split("</tr>")[0]
    # Told by email: the parent and the admin of this school (not the other school's member).
    assert "<td>2</td>" in row and "<td>3</td>" not in row


def test_a_platform_role_does_not_open_the_school_counts(client, school, make_member):
    school["parent"].user.platform_role = PlatformRole.ADMIN
    db.session.commit()
    sign_in(client, school["parent"].user.email)
    assert client.get("/school/consent").status_code == 403


def test_ledger_lines_are_never_changed_or_deleted(app, school):
    policy.ensure_placeholder()
    ledger.record(school["parent"].user_id, ConsentKind.ACKNOWLEDGED, policy.newest_posted().id)
    db.session.commit()
    line = db.session.scalar(select(ConsentEvent))
    line.kind = ConsentKind.OBJECTED
    with pytest.raises(ConsentLedgerIsAppendOnly):
        db.session.flush()
    db.session.rollback()
    db.session.delete(db.session.scalar(select(ConsentEvent)))
    with pytest.raises(ConsentLedgerIsAppendOnly):
        db.session.flush()
    db.session.rollback()


def test_the_same_line_is_recorded_once_even_when_asked_twice(app, school):
    version = policy.ensure_placeholder()
    for _ in range(2):
        ledger.record(school["parent"].user_id, ConsentKind.CONTINUED_USE, version.id)
    db.session.commit()
    assert kinds_of(school["parent"].user_id) == ["continued_use"]


def test_an_existing_accounts_address_typed_into_the_join_form_accepts_nothing(client, school, make_school):
    """The join form proves nobody's identity for an existing account (it only emails them), so it
    cannot record that account's acceptance: the notice stays until they acknowledge it."""
    make_school(name="Second School", code="SECOND-1")
    with time_machine.travel(T0, tick=False):
        publish_material()
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        parent = school["parent"].user
        data = {
            "invite_code": "SECOND-1",
            "name": "Petra Parent",
            "email": parent.email,
            "password": "correct horse battery",
            "accept_policy": "y",
        }
        assert client.form("/join", data).status_code == 303
        assert "accepted" not in kinds_of(parent.id, 2)
        sign_in(client, parent.email)
        assert BANNER in client.get("/").get_data(as_text=True)
