"""Main blueprint: the home page, health check and public information pages."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import text

from app.classes.services import classes_of_member
from app.extensions import db
from app.models import PlatformRole
from app.permissions import has_platform_role, public

bp = Blueprint("main", __name__)


@bp.route("/")
@public
def home():
    """Signed-in members see their school; others see what the service is."""
    if not current_user.is_authenticated:
        return render_template("main/landing.html")
    if g.membership is None and has_platform_role(*PlatformRole):
        return redirect(url_for("platform.console"))  # the operator's staff belong to no school
    if g.membership is None or not g.membership.is_approved:
        return redirect(url_for("auth.pending"))
    return render_template("main/home.html", my_classes=classes_of_member(g.membership))


@bp.route("/favicon.ico")
@public
def favicon():
    """The site icon, for browsers that ask for /favicon.ico before reading the page's <link>."""
    icon = Path(current_app.static_folder or "static") / "favicon.svg"
    response = current_app.response_class(icon.read_bytes(), mimetype="image/svg+xml")
    response.cache_control.max_age = 86400
    response.cache_control.public = True
    return response


@bp.route("/health")
@public
def health():
    """For the platform's health check: the database answers, and Redis when configured."""
    checks = {"database": _check(lambda: db.session.execute(text("SELECT 1")))}
    if current_app.config.get("REDIS_URL"):
        from app.jobs import redis_connection

        checks["redis"] = _check(lambda: redis_connection().ping())
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "unavailable", checks=checks), 200 if healthy else 503


def _check(probe) -> str:
    try:
        probe()
        return "ok"
    except Exception:  # any failure means unhealthy; the log says which
        current_app.logger.exception("health check failed")
        return "failing"


@bp.route("/privacy")
@public
def privacy():
    """The privacy policy in force (the operator publishes theirs; we ship a short placeholder)."""
    from app.consent.routes import policy_page

    return policy_page()
