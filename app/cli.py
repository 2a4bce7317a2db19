"""flask commands: create a school and its first admin, seed the demo, run the sweeper."""

from __future__ import annotations

import click
from flask import Flask

from app import jobs, tenancy
from app.auth import passwords
from app.auth.services import count_users, find_user
from app.extensions import db
from app.i18n import LANGUAGES
from app.imports.cli import reference_data_command
from app.models import PlatformRole
from app.platform import schools


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
@click.option("--timezone", default="UTC", show_default=True, help="e.g. Europe/London.")
@click.option("--language", default="en", type=click.Choice(list(LANGUAGES)), show_default=True)
@click.password_option("--admin-password", help="Asked for if not given.")
def create_school(name, code, admin_email, admin_name, timezone, language, admin_password):
    """Create a school and its first SuperAdmin (the platform console does the same, by email)."""
    problems = passwords.problems(admin_password, email=admin_email, name=admin_name)
    if problems:
        raise click.BadParameter(problems[0], param_hint="--admin-password")
    new = schools.NewSchool(
        name=name,
        code=code,
        admin_email=admin_email,
        admin_name=admin_name,
        timezone=timezone,
        default_language=language,
    )
    try:
        school = schools.create_school(new, admin_password=admin_password)
    except schools.SchoolRefused as refusal:
        raise click.BadParameter(refusal.message, param_hint=f"--{refusal.field.replace('_', '-')}") from None
    db.session.commit()
    click.echo(f"Created {school.name} (school #{school.id}); its first admin can sign in now.")


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
