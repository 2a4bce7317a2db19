"""``flask reference-data``: build the reference school for benchmarks and manual testing."""

from __future__ import annotations

import os
import time

import click
from flask import current_app


@click.command("reference-data")
@click.option("--families", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--classes", default=60, show_default=True, type=click.IntRange(min=1))
@click.option("--students", default=3000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=2026, show_default=True, help="Same seed, same names and choices.")
@click.option(
    "--database",
    default=None,
    help="Database URL to fill (its missing tables are created). Default: the app's own database.",
)
def reference_data_command(families, classes, students, seed, database):
    """Create one school with classes, families, students, guardians, staff and room parents."""
    if students < families:
        raise click.BadParameter("every family needs a student: use --students >= --families")
    if database:
        _generate_elsewhere(database, families=families, classes=classes, students=students, seed=seed)
    else:
        _generate_here(families=families, classes=classes, students=students, seed=seed)


def _generate_here(**sizes) -> None:
    from app.extensions import db
    from app.reference_data import generate

    started = time.perf_counter()
    built = generate(**sizes)
    db.session.commit()
    took = time.perf_counter() - started
    click.echo(f"Built school #{built.school_id} ({built.school_slug}) in {took:.1f} s:")
    for table, count in built.counts.items():
        click.echo(f"  {table:<13} {count:>6}")
    click.echo(f"Sign in (password: {built.password!r}):")
    click.echo(f"  admin   {built.admin_email}")
    click.echo(f"  staff   {built.staff_email}")
    click.echo(f"  parent  {built.parent_email}")


def _generate_elsewhere(database: str, **sizes) -> None:
    """Build an app on the other database (creating its missing tables) and fill that one."""
    from app import create_app
    from app.extensions import db
    from config import config_from_env

    os.environ["DATABASE_URL"] = database
    other = create_app(config_from_env())
    with other.app_context():
        db.create_all()
        _generate_here(**sizes)
        db.engine.dispose()
    current_app.logger.debug("reference data written to another database")
