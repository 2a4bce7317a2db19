"""flask commands: create a school and its first admin, seed the demo, run the sweeper."""

from __future__ import annotations

import re

import click
from flask import Flask
from sqlalchemy import select

from app import jobs, tenancy
from app.auth import passwords
from app.auth.services import count_users, find_user, normalise_code, normalise_email
from app.codes import code_key
from app.extensions import db
from app.imports.cli import reference_data_command
from app.models import Membership, MembershipStatus, PlatformRole, Role, School, User


def register(app: Flask) -> None:
    """Attach the project's commands to ``flask``."""
    app.cli.add_command(create_school)
    app.cli.add_command(seed_demo)
    app.cli.add_command(jobs_group)
    app.cli.add_command(platform_role)
    app.cli.add_command(reference_data_command)


@click.command("create-school")
@click.option("--name", required=True, help="The school's name.")
@click.option("--code", required=True, help="The invitation code parents will type.")
@click.option("--admin-email", required=True)
@click.option("--admin-name", required=True)
@click.password_option("--admin-password", help="Asked for if not given.")
def create_school(name, code, admin_email, admin_name, admin_password):
    """Create a school and its first SuperAdmin."""
    problems = passwords.problems(admin_password, email=admin_email, name=admin_name)
    if problems:
        raise click.BadParameter(problems[0], param_hint="--admin-password")
    if db.session.scalar(select(School).where(School.invite_code_key == code_key(code))):
        raise click.BadParameter("another school already uses this code", param_hint="--code")
    if find_user(admin_email):
        raise click.BadParameter("an account with this email exists", param_hint="--admin-email")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80] or "school"
    school = School(name=name, slug=_unique_slug(slug), invite_code=normalise_code(code))
    user = User(
        email=normalise_email(admin_email),
        name=admin_name,
        password_hash=passwords.hash_password(admin_password),
    )
    db.session.add_all([school, user])
    db.session.flush()
    with tenancy.bound(school.id):
        db.session.add(Membership(user_id=user.id, role=Role.SUPERADMIN, status=MembershipStatus.APPROVED))
        db.session.commit()
    click.echo(f"Created {name} (school #{school.id}); its first admin can sign in now.")


def _unique_slug(slug: str) -> str:
    candidate, n = slug, 1
    while db.session.scalar(select(School.id).where(School.slug == candidate)):
        n += 1
        candidate = f"{slug}-{n}"
    return candidate


@click.command("platform-role")
@click.argument("email")
@click.argument("role", type=click.Choice([*(r.value for r in PlatformRole), "none"]))
def platform_role(email, role):
    """Make an existing account platform support or platform admin (or neither)."""
    user = find_user(email)
    if user is None:
        raise click.BadParameter("no account has this email", param_hint="EMAIL")
    user.platform_role = None if role == "none" else PlatformRole(role)
    db.session.commit()
    click.echo(f"Platform role set to {role}.")


@click.command("seed-demo")
@click.option("--if-empty", is_flag=True, help="Only when the database has no accounts yet.")
def seed_demo(if_empty):
    """Create the demo school and print its sign-ins."""
    from app.demo import DEMO_ACCOUNTS, DEMO_CODE, DEMO_PASSWORD
    from app.demo import seed_demo as build

    if if_empty and count_users():
        click.echo("Database already has accounts; demo not seeded.")
        return
    build()
    db.session.commit()
    click.echo(f"Demo school seeded. Invitation code: {DEMO_CODE}")
    click.echo(f"Sign in with any of these (password: {DEMO_PASSWORD}):")
    for email, _name, role in DEMO_ACCOUNTS:
        click.echo(f"  {role.label:<12} {email}")


@click.group("jobs")
def jobs_group():
    """Background work."""


@jobs_group.command("sweep")
def sweep_command():
    """Re-enqueue email left pending (after a Redis outage or a lost job) and prune sessions."""
    from app.mail.jobs import sweep

    with tenancy.unscoped():
        result = sweep()
    jobs.run_ready_jobs()
    click.echo(f"Swept: {result}")


@jobs_group.command("sweep-support")
def sweep_support_command():
    """Forward support requests waiting for Zendesk (after an outage, a lost job or configuring it)."""
    from app.support.jobs import sweep_support

    with tenancy.unscoped():
        result = sweep_support()
    jobs.run_ready_jobs()
    click.echo(f"Swept support requests: {result}")


@jobs_group.command("sweep-resets")
def sweep_resets_command():
    """Handle password reset requests left waiting (after a Redis outage or a lost job)."""
    from app.auth.jobs import sweep_reset_requests

    result = sweep_reset_requests()
    jobs.run_ready_jobs()
    click.echo(f"Swept reset requests: {result}")


@jobs_group.command("sweep-suppressions")
def sweep_suppressions_command():
    """Retry removals of lifted suppressions from Mailgun's lists; forget old webhook tokens."""
    from app.mail.suppressions import sweep_suppressions

    result = sweep_suppressions()
    jobs.run_ready_jobs()
    click.echo(f"Swept suppressions: {result}")


@jobs_group.command("digest")
def digest_command():
    """Send the daily digests now (the worker does this once a day)."""
    from app.mail.digest import send_digests

    result = send_digests()
    jobs.run_ready_jobs()
    click.echo(f"Digests: {result}")
