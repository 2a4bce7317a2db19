"""The application factory."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from config import Config, ConfigError, config_from_env, refuse_to_start


def create_app(config: Config | None = None) -> Flask:
    """Build the app: config, extensions, the request pipeline, blueprints, CLI and error pages.

    Without a config it reads the environment, as gunicorn, worker.py and the flask command do;
    a configuration it refuses ends the process with the reasons, one line per variable.
    """
    if config is not None:
        return _build(config)
    try:
        return _build(config_from_env())
    except ConfigError as error:
        refuse_to_start(error)


def _build(config: Config) -> Flask:
    from app import pipeline

    app = Flask(__name__, instance_path=_instance_path())
    app.config.from_object(config)
    app.config["ENV_NAME"] = config.ENV_NAME
    if app.config["BEHIND_PROXY"]:
        # Flask's documented way to add middleware; its types call wsgi_app a method, not a slot.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    register_url_converters(app)  # before any blueprint adds a rule that uses them
    register_extensions(app)
    pipeline.install(app)  # every app-wide request hook, in order, in one place
    register_blueprints(app)
    register_error_pages(app)
    register_cli(app)
    return app


def _instance_path() -> str:
    from config import INSTANCE_DIR

    return str(INSTANCE_DIR)


def register_extensions(app: Flask) -> None:
    """Bind the unbound extensions and the project's own mechanisms to this app.

    CSRFProtect, the limiter and the login manager bring request hooks: app/pipeline.py binds
    them, at the place their hooks take in the pipeline.
    """
    from app import i18n, jobs, tenancy
    from app.extensions import babel, db, login_manager, migrate
    from app.i18n.formatting import FILTERS
    from app.logging_setup import configure_logging
    from app.mail.backends import init_backend
    from app.sessions import DatabaseSessionInterface

    configure_logging(app)
    db.init_app(app)
    _tune_sqlite(app)
    migrate.init_app(app, db, render_as_batch=True)
    login_manager.session_protection = None  # sessions are server-side and revocable
    login_manager.login_view = "auth.sign_in"
    login_manager.login_message = None
    app.session_interface = DatabaseSessionInterface()
    babel.init_app(app, locale_selector=i18n.select_locale)
    # {% trans %} blocks collapse their whitespace, so a msgid does not depend on indentation.
    app.jinja_env.policies["ext.i18n.trimmed"] = True
    app.jinja_env.filters.update(FILTERS)
    tenancy.install()
    jobs.install()
    try:
        init_backend(app)
    except RuntimeError as error:  # settings the mail backend cannot use (MAILGUN_REGION, ...)
        raise ConfigError(str(error)) from None

    @login_manager.user_loader
    def load_user(user_id: str):
        from app.models import User

        user = db.session.get(User, int(user_id))
        return user if user is not None and user.active else None


def _tune_sqlite(app: Flask) -> None:
    """SQLite: enforce foreign keys, let readers run while one connection writes, know time zones."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        return
    from sqlalchemy import event

    from app.clock import sqlite_local_date
    from app.extensions import db

    with app.app_context():

        @event.listens_for(db.engine, "connect")
        def _pragmas(dbapi_connection, _record):
            dbapi_connection.create_function("local_date", 2, sqlite_local_date, deterministic=True)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=15000")
            cursor.close()


def register_url_converters(app: Flask) -> None:
    """``<int:...>`` is bounded to what an id column holds: a larger value answers 404, not a 500."""
    from app.urls import RowIdConverter

    app.url_map.converters["int"] = RowIdConverter


def register_blueprints(app: Flask) -> None:
    """Each feature package brings one blueprint."""
    from app import permissions, security
    from app.auth.routes import bp as auth_bp
    from app.calendar.routes import bp as calendar_bp
    from app.classes.routes import bp as classes_bp
    from app.consent.routes import bp as consent_bp
    from app.dev.routes import bp as dev_bp
    from app.directory.routes import bp as directory_bp
    from app.i18n.routes import bp as i18n_bp
    from app.identity.routes import bp as identity_bp
    from app.imports.routes import bp as imports_bp
    from app.main.routes import bp as main_bp
    from app.members.routes import bp as members_bp
    from app.messages.routes import bp as messages_bp
    from app.platform.routes import bp as platform_bp
    from app.settings.routes import bp as settings_bp
    from app.support.routes import bp as support_bp
    from app.unsubscribe.routes import bp as unsubscribe_bp
    from app.webhooks.routes import bp as webhooks_bp

    app.register_blueprint(main_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(classes_bp)
    app.register_blueprint(members_bp)
    app.register_blueprint(messages_bp)
    app.register_blueprint(support_bp)
    app.register_blueprint(dev_bp)
    app.register_blueprint(directory_bp)
    app.register_blueprint(unsubscribe_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(consent_bp)
    app.register_blueprint(settings_bp)
    app.register_blueprint(i18n_bp)
    app.register_blueprint(platform_bp)
    app.register_blueprint(calendar_bp)
    app.register_blueprint(imports_bp)
    app.register_blueprint(identity_bp)
    # Flask's own static route is public: it serves only files under app/static.
    permissions.public(app.view_functions["static"])
    # The few views that take no CSRF token are named in one list (app/security.py).
    security.exempt_listed_views(app)


def register_error_pages(app: Flask) -> None:
    """Friendly pages for the errors a person can meet."""
    from flask import render_template
    from flask_wtf.csrf import CSRFError

    from app.extensions import db
    from app.security import handle_csrf_error

    app.register_error_handler(CSRFError, handle_csrf_error)

    def page(code: int):
        def handler(error):
            if getattr(error, "response", None) is not None:
                return error.response  # made for the occasion (a sign-in form saying how long to wait)
            if code >= 500:
                db.session.rollback()  # release locks before the session store writes
            return render_template("errors/error.html", code=code), code

        return handler

    for code in (400, 403, 404, 405, 413, 429, 500):
        app.register_error_handler(code, page(code))


def register_cli(app: Flask) -> None:
    """flask commands: create-school, seed-demo, jobs."""
    from app.cli import register

    register(app)
