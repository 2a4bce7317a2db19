"""Schools on the web: a platform admin creates a school and invites its first admin by email,
through the same service as ``flask create-school``; the admin chooses a password from the link."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app import tenancy
from app.extensions import db
from app.models import Membership, PlatformRole, Role, School, User
from app.models.audit import AuditEntry
from app.platform import schools
from tests.conftest import _HASH, PASSWORD, sign_in

NEW_PASSWORD = "a first password for the head"


def _platform_user(email: str, role: PlatformRole) -> User:
    user = User(email=email, name=f"Pat {role.value}", password_hash=_HASH, platform_role=role)
    db.session.add(user)
    db.session.commit()
    return user


@pytest.fixture
def operator(client):
    """A platform admin, signed in."""
    user = _platform_user("operator@platform.example", PlatformRole.ADMIN)
    sign_in(client, user.email)
    return user


FILLED = {
    "name": "Hawthorn Academy",
    "code": "haw-2026",
    "timezone": "Europe/London",
    "default_language": "es",
    "admin_name": "Hana Head",
    "admin_email": "Head@Example.org",
}


def _school(code: str) -> School | None:
    db.session.expire_all()
    return db.session.scalar(select(School).where(School.invite_code == code))


def _link(envelope) -> str:
    return re.search(r"http://localhost(/\S+)", envelope.text).group(1)


def test_the_form_suggests_a_free_code(client, operator, make_school):
    page = client.get("/platform/schools/new").get_data(as_text=True)
    field = re.search(r'<input[^>]*name="code"[^>]*>', page).group(0)
    suggested = re.search(r'value="([^"]+)"', field).group(1)
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", suggested)
    assert schools.code_problem(suggested) is None


def test_a_platform_admin_creates_a_school_and_its_first_admin_is_invited(client, operator, sent_mail):
    response = client.form("/platform/schools/new", FILLED)
    assert response.status_code == 303
    school = _school("HAW-2026")
    assert (school.name, school.slug, school.timezone, school.default_language) == (
        "Hawthorn Academy",
        "hawthorn-academy",
        "Europe/London",
        "es",
    )
    head = db.session.scalar(select(User).where(User.email == "head@example.org"))
    with tenancy.bound(school.id):
        membership = db.session.scalar(select(Membership).where(Membership.user_id == head.id))
        log = list(db.session.execute(select(AuditEntry.action, AuditEntry.actor_id).order_by(AuditEntry.id)))
    assert membership.role is Role.SUPERADMIN and membership.is_approved
    assert log == [("school.created", operator.id), ("member.invited", operator.id)]
    # Nobody knows the account's password: it is chosen from the emailed link.
    assert sign_in(client.application.test_client(), "head@example.org").status_code != 303
    [invitation] = [m for m in sent_mail if m.to == "head@example.org"]
    assert "Hawthorn Academy" in invitation.subject
    head_client = client.application.test_client()
    landing = head_client.get(_link(invitation))
    form = {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD, "accept_policy": "y"}
    assert head_client.form(landing.headers["Location"], form).status_code == 303
    assert sign_in(head_client, "head@example.org", NEW_PASSWORD).status_code == 303
    assert head_client.get("/settings/").status_code == 200  # a SuperAdmin of the new school


def test_an_existing_account_is_made_admin_and_told_to_sign_in(
    client, operator, sent_mail, make_member, make_school
):
    elsewhere = make_member(make_school(), role=Role.PARENT, email="head@example.org")
    assert client.form("/platform/schools/new", FILLED).status_code == 303
    school = _school("HAW-2026")
    with tenancy.bound(school.id):
        membership = db.session.scalar(select(Membership).where(Membership.user_id == elsewhere.user_id))
    assert membership.role is Role.SUPERADMIN
    [note] = [m for m in sent_mail if m.to == "head@example.org"]
    assert "/sign-in" in note.text and "/password/reset" not in note.text
    assert sign_in(client.application.test_client(), "head@example.org", PASSWORD).status_code == 303


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"code": "maple-2026"}, "code", "Another school already uses this code."),
        ({"code": "no spaces!"}, "code", "Use 4 to 40 letters, digits and hyphens"),
        ({"timezone": "Mars/Olympus"}, "timezone", "We don&#39;t know this time zone."),
        ({"admin_email": "not-an-address"}, "admin_email", "Enter an email address like"),
        ({"name": ""}, "name", "Enter the school&#39;s name."),
    ],
)
def test_a_refused_form_keeps_what_was_typed(
    client, operator, make_school, sent_mail, changes, field, message
):
    make_school(code="MAPLE-2026")
    typed = FILLED | changes
    response = client.form("/platform/schools/new", typed)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    error = re.search(rf'id="{field}-error"[^>]*>(.*?)</', page, re.DOTALL)
    assert error and message in error.group(1), page
    assert 'value="Hana Head"' in page  # every typed value is kept
    assert f'value="{typed["timezone"]}"' in page and f'value="{typed["admin_email"]}"' in page
    assert _school("HAW-2026") is None and not sent_mail


def test_only_platform_admins_create_schools(client, make_school, make_member):
    support = _platform_user("support@platform.example", PlatformRole.SUPPORT)
    superadmin = make_member(make_school(), role=Role.SUPERADMIN)
    for email in (support.email, superadmin.user.email):
        visitor = client.application.test_client()
        sign_in(visitor, email)
        assert visitor.get("/platform/schools/new").status_code == 403
        assert visitor.form("/platform/schools/new", FILLED).status_code == 403
    assert _school("HAW-2026") is None


def test_the_command_line_calls_the_same_service(app):
    runner = app.test_cli_runner()
    args = ["create-school", "--name", "Oak", "--code", "oak-1", "--admin-name", "Olu"]
    args += ["--admin-email", "olu@example.org", "--admin-password", NEW_PASSWORD, "--timezone", "Asia/Tokyo"]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    school = _school("OAK-1")
    assert school.timezone == "Asia/Tokyo"
    with tenancy.bound(school.id):
        actions = list(db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions == ["school.created", "member.invited"]  # audited as the console's are
    again = runner.invoke(args=[*args[:4], "OAK-2", *args[5:]])
    assert again.exit_code != 0 and "An account with this email exists already." in again.output
    zone = runner.invoke(args=[*args[:4], "OAK-3", *args[5:-1], "Mars/Olympus"])
    assert zone.exit_code != 0 and "time zone" in zone.output
