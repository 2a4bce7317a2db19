"""Main blueprint: the home page, the announcements a member reads, health and public pages."""

from __future__ import annotations

from pathlib import Path

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import ngettext
from flask_login import current_user
from sqlalchemy import text

from app.auth.forms import ConfirmForm
from app.classes.services import classes_of_member
from app.directory.visibility import classes_of
from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.lookup import or_404
from app.main import feed
from app.main import home as parts
from app.messages.services import render_markdown
from app.models import PlatformRole
from app.models.base import utcnow
from app.parsing import optional_id
from app.permissions import has_platform_role, member, public

bp = Blueprint("main", __name__)


@bp.route("/")
@public
def home():
    """Signed-in members see their home (feed, events, to-dos, queues); others see what the service is."""
    if not current_user.is_authenticated:
        return render_template("main/landing.html")
    if g.membership is None and has_platform_role(*PlatformRole):
        return redirect(url_for("platform.console"))  # the operator's staff belong to no school
    if g.membership is None or not g.membership.is_approved:
        return redirect(url_for("auth.pending"))
    if g.get("support_grant"):
        # Platform support under a grant: announcements, events and queues are not what a grant
        # opens (app/platform/access.py), and this page is public, so it says so itself.
        return render_template("main/home.html", support_view=True)
    my_classes = classes_of_member(g.membership)
    reader = feed.Reader(g.membership.id, frozenset(c.id for c in my_classes))
    news = feed.page(
        reader,
        words=feed.clean_query(request.args.get("q")),
        before=optional_id(request.args.get("before")),
    )
    if wants_fragment("feed"):  # the search box, live: only the feed is recounted and re-read
        return render("main/home.html", block="feed", target="feed", news=news)
    return render(
        "main/home.html",
        block="feed",
        target="feed",
        news=news,
        my_classes=my_classes,
        todo=parts.things_to_do(reader),
        queues=parts.queues(),
        events=parts.next_events(reader, utcnow()),
    )


def _reader() -> feed.Reader:
    """The signed-in member as a reader of the feed (their classes in one query)."""
    return feed.Reader(g.membership.id, classes_of(g.membership.id))


@bp.route("/news/<int:message_id>")
@member
def news(message_id: int):
    """One announcement sent to the member, read in the app; opening it marks it read."""
    reader = _reader()
    item = or_404(feed.get(reader, message_id))
    if not item.read:
        feed.mark_read(reader, [item.message.id])
        db.session.commit()
    message = item.message
    return render_template(
        "main/message.html",
        message=message,
        sender_name=item.sender_name,
        body_html=render_markdown(message.source_markdown or message.text_body or ""),
    )


@bp.route("/news/read-all", methods=["POST"])
@member
def read_all():
    """Mark every announcement of the member's feed read."""
    if not ConfirmForm().validate_on_submit():
        abort(400)
    marked = feed.mark_all_read(_reader())
    db.session.commit()
    flash(
        ngettext("%(num)d announcement marked read.", "%(num)d announcements marked read.", marked),
        "success",
    )
    return redirect_after_post(url_for("main.home"))


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
