"""Configuration, migrations, CLI and logging: what a newcomer and an operator meet first."""

from __future__ import annotations

import logging

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade
from sqlalchemy import create_engine, select

import config as config_module
from app import create_app, tenancy
from app.extensions import db
from app.models import Membership, Role, School, User, listings
from config import ConfigError, config_from_env, database_url, redis_options
from tests.conftest import PASSWORD, make_config, sign_in


def test_heroku_database_urls_use_psycopg():
    assert database_url("postgres://u:p@h:5432/d") == "postgresql+psycopg://u:p@h:5432/d"
    assert database_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert database_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_tls_redis_accepts_heroku_self_signed_certificates():
    assert redis_options("rediss://:p@h:6380") == {"ssl_cert_reqs": "none"}
    assert redis_options("redis://h:6379") == {}


def test_development_keeps_one_generated_secret_key(monkeypatch, tmp_path):
    monkeypatch.setattr(config_module, "INSTANCE_DIR", tmp_path)
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.delenv("DYNO", raising=False)
    first, second = config_from_env(), config_from_env()
    assert first.ENV_NAME == "development"
    assert first.SECRET_KEY == second.SECRET_KEY and len(first.SECRET_KEY) >= 40
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_heroku_dynos_default_to_production(monkeypatch):
    monkeypatch.setenv("DYNO", "web.1")
    monkeypatch.setenv("PUBLIC_URL", "https://school.example.org")
    monkeypatch.setenv("MAIL_BACKEND", "devmailbox")  # tests/test_production_config.py: mailgun's
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.setenv("SECRET_KEY", "x" * 40)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")
    assert config_from_env().ENV_NAME == "production"
    monkeypatch.setenv("APP_ENV", "staging")
    with pytest.raises(ConfigError, match="APP_ENV"):
        config_from_env()


def test_migrations_build_exactly_the_models_schema(tmp_path):
    """`flask db upgrade` (the Procfile's release step) must create what the models declare."""
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    app = create_app(make_config(url))
    with app.app_context():
        upgrade()
        engine = create_engine(url)
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"render_as_batch": True}), db.metadata
            )
        engine.dispose()
        db.engine.dispose()
    assert diff == []


def test_create_school_command_makes_a_superadmin_who_can_sign_in(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "create-school",
            "--name",
            "Hawthorn Academy",
            "--code",
            "haw-2026",
            "--admin-email",
            "Head@Example.org",
            "--admin-name",
            "Hana Head",
            "--admin-password",
            PASSWORD,
        ]
    )
    assert result.exit_code == 0, result.output
    school = db.session.scalar(select(School).where(School.invite_code == "HAW-2026"))
    assert school.slug == "hawthorn-academy"
    with tenancy.bound(school.id):
        membership = db.session.scalar(select(Membership))
    assert membership.role is Role.SUPERADMIN and membership.is_approved
    assert sign_in(client, "head@example.org").status_code == 303

    again = runner.invoke(
        args=[
            "create-school",
            "--name",
            "X",
            "--code",
            "HAW-2026",
            "--admin-email",
            "x@example.org",
            "--admin-name",
            "X",
            "--admin-password",
            PASSWORD,
        ]
    )
    assert again.exit_code != 0 and "already uses this code" in again.output
    weak = runner.invoke(
        args=[
            "create-school",
            "--name",
            "Y",
            "--code",
            "Y-1",
            "--admin-email",
            "y@example.org",
            "--admin-name",
            "Y",
            "--admin-password",
            "short",
        ]
    )
    assert weak.exit_code != 0 and "at least 15" in weak.output


def test_seed_demo_builds_a_school_each_role_can_use(app, client):
    from app.demo import DEMO_ACCOUNTS, DEMO_PASSWORD

    result = app.test_cli_runner().invoke(args=["seed-demo", "--if-empty"])
    assert result.exit_code == 0 and "MAPLE-2026" in result.output
    assert (
        app.test_cli_runner().invoke(args=["seed-demo", "--if-empty"]).output.startswith("Database already")
    )
    for email, _name, role in DEMO_ACCOUNTS:
        visitor = client.application.test_client()
        assert sign_in(visitor, email, DEMO_PASSWORD).status_code == 303, role
        home = visitor.get("/").get_data(as_text=True)
        assert "Maple Grove Elementary" in home
        classes = visitor.get("/classes/")
        assert classes.status_code == 200
        assert classes.get_data(as_text=True).count("/classes/") >= 6
        if email == "parent@demo.example":  # Pat's child is in Grade 1 A: the feed has its news
            assert "Grade 1 A: library books on Tuesdays" in home
            assert "Picture day is coming" in home and "Parents&#39; evening" in home
    assert db.session.query(User).count() >= 40


def test_sign_in_page_lists_demo_accounts_only_in_development(build_app):
    test_app = build_app()
    assert "Demo accounts" not in test_app.test_client().get("/sign-in").get_data(as_text=True)
    dev_app = build_app(SHOW_DEMO_ACCOUNTS=True)
    assert "Demo accounts" in dev_app.test_client().get("/sign-in").get_data(as_text=True)


def test_logs_carry_request_ids_and_no_personal_data(client, make_school, make_member, caplog):
    member = make_member(make_school(), email="lorelei.logcheck@example.org", name="Lorelei Logcheck")
    caplog.set_level(logging.INFO)
    sign_in(client, "lorelei.logcheck@example.org")
    client.get("/")
    client.form("/password/forgot", {"email": "lorelei.logcheck@example.org"})
    client.get("/password/reset/some-secret-token-value")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "POST /sign-in 303" in text
    assert "GET /password/reset/<token> 303" in text  # the rule, not the path
    for secret in (
        "lorelei",
        "logcheck",
        "example.org",
        "some-secret-token-value",
        str(member.user_id) + " ",
    ):
        assert secret not in text.lower(), secret
    assert all(getattr(r, "request_id", "-") != "-" for r in caplog.records if r.name == "app.access")


def test_dev_mailbox_only_exists_in_development(build_app, make_school, make_member):
    admin = make_member(make_school(), role=Role.SUPERADMIN)
    for enabled, expected in ((False, 404), (True, 200)):
        app = build_app(DEV_MAILBOX=enabled)
        client = app.test_client()
        sign_in(client, admin.user.email)
        assert client.get("/dev/mailbox").status_code == expected


def test_upgrading_keeps_existing_data(build_app, tmp_path):
    """Every migration from the first keeps rows: SQLite rebuilds tables, which must not cascade."""
    from flask_migrate import upgrade as upgrade_to
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'upgrade.db'}"
    app = build_app(make_config(url))
    with app.app_context():
        upgrade_to(revision="bf3d28ee5c9b")  # the first revision
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO school (id, name, slug, invite_code, timezone, created_at) "
                    "VALUES (1, 'Old School', 'old', 'OLD-1', 'UTC', '2020-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO user (id, email, name, password_hash, active, created_at, "
                    "password_changed_at) VALUES (1, 'old@example.org', 'Old Member', 'x', 1, "
                    "'2020-01-01 00:00:00', '2020-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO membership (id, school_id, user_id, role, status, created_at) "
                    "VALUES (1, 1, 1, 'parent', 'approved', '2020-01-01 00:00:00')"
                )
            )
            conn.execute(text("INSERT INTO family (id, school_id, name) VALUES (1, 1, 'Old family')"))
            conn.execute(
                text("INSERT INTO guardian (id, school_id, family_id, membership_id) VALUES (1, 1, 1, 1)")
            )
        upgrade_to()
        with db.engine.connect() as conn:
            counts = {
                t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()  # noqa: S608 - fixed names
                for t in ("user", "membership", "guardian")
            }
            key = conn.execute(text("SELECT mail_key FROM user")).scalar()
            visibility = conn.execute(text("SELECT address_visibility FROM membership")).scalar()
            family = conn.execute(text("SELECT listed, search_text FROM family")).one()
            member = conn.execute(text("SELECT search_text, sort_name FROM membership")).one()
            stale = listings.stale_rows(conn)
    assert counts == {"user": 1, "membership": 1, "guardian": 1}
    assert len(key) == 32 and visibility == "staff"
    # The search migration backfilled the kept columns of the rows already there.
    assert bool(family.listed) and family.search_text == "old family\nold member\n"
    assert tuple(member) == ("old member\nold@example.org", "Old Member")
    assert stale == []


def test_the_sign_in_counts_migration_counts_the_log_on_each_schools_clock(build_app, tmp_path):
    """Sign-ins already in the audit log become per-day counts, days on the school's own clock."""
    from flask_migrate import upgrade as upgrade_to
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'signins.db'}"
    app = build_app(make_config(url))
    with app.app_context():
        upgrade_to(revision="5ea7c4b1d2e3")  # the one before sign-ins were counted
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO school (id, name, slug, invite_code, timezone, created_at) "
                    "VALUES (1, 'West', 'west', 'W-1', 'America/Los_Angeles', '2020-01-01 00:00:00')"
                )
            )
            for at in ("2020-04-02 01:30:00", "2020-04-02 06:59:00", "2020-04-02 08:00:00"):
                conn.execute(
                    text(
                        "INSERT INTO audit_entry (school_id, created_at, action, detail, by_support) "
                        "VALUES (1, :at, 'auth.signed_in', '{}', 0)"
                    ),
                    {"at": at},
                )
            conn.execute(
                text(
                    "INSERT INTO audit_entry (school_id, created_at, action, detail, by_support) "
                    "VALUES (1, '2020-04-02 01:00:00', 'class.created', '{}', 0)"
                )
            )
        upgrade_to()
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT day, count FROM sign_in_count ORDER BY day")).all()
    assert [(str(day), n) for day, n in rows] == [("2020-04-01", 2), ("2020-04-02", 1)]
