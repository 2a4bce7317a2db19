"""Calendar blueprint: upcoming events and the month, adding and changing them, and iCalendar."""

from __future__ import annotations

import hashlib
from datetime import datetime, time

from flask import Blueprint, Response, abort, flash, g, request, url_for
from flask_babel import gettext as _

from app import clock
from app.calendar import forms, ical, links, services
from app.calendar import month as grid
from app.extensions import db, limiter
from app.htmx import redirect_after_post, render
from app.i18n import current_locale
from app.lookup import or_404
from app.models.base import utcnow
from app.parsing import optional_id
from app.permissions import member, public, requires
from app.urls import external_url

bp = Blueprint("calendar", __name__, url_prefix="/calendar")


def _zone():
    return clock.school_zone()


def _page(*, status: int = 200, feed_url: str | None = None):
    """The calendar page: from the start of today on the school's clock, and the feed controls."""
    zone = _zone()
    today = datetime.combine(services.to_local(utcnow(), zone).date(), time(0), tzinfo=zone)
    events = services.upcoming(services.current_audience(), today)
    return render(
        "calendar/index.html",
        block="feed",
        target="calendar-feed",
        status=status,
        events=[
            (event, services.to_local(event.starts_at, zone), services.to_local(event.ends_at, zone))
            for event in events
        ],
        zone=zone,
        add_links=links.add_links,
        has_feed=services.has_feed(g.membership.id),
        feed_url=feed_url,
        webcal_url=links.webcal(feed_url) if feed_url else None,
        confirm_form=forms.ConfirmForm(),
        may_edit=services.may_edit,
        may_delete=services.may_delete,
    )


@bp.route("/")
@member
def index():
    """Upcoming school events and those of my classes, in the school's time zone."""
    return _page()


@bp.route("/month")
@member
def month():
    """The events of one month (?month=YYYY-MM, this month by default) as a grid of weeks."""
    zone = _zone()
    today = services.to_local(utcnow(), zone).date()
    first = grid.parse_month(request.args.get("month"), today)
    if first is None:
        abort(400)
    locale = current_locale()
    weeks = grid.weeks(first, grid.first_weekday(locale))
    start, end = grid.span_utc(weeks, zone)
    events = services.between(services.current_audience(), start, end)
    previous, following = grid.shift_month(first, -1), grid.shift_month(first, 1)
    return render(
        "calendar/month.html",
        block="month",
        target="calendar-month",
        first=first,
        weeks=weeks,
        by_day=grid.place(events, weeks, zone),
        events=[
            (event, services.to_local(event.starts_at, zone), services.to_local(event.ends_at, zone))
            for event in events
        ],
        weekdays=grid.weekdays(locale),
        caption=grid.caption(first, locale),
        day_number=lambda day: grid.day_number(day, locale),
        today=today,
        zone=zone,
        month_param=grid.month_param,
        previous=previous,
        following=following,
        this_month=today.replace(day=1),
        add_links=links.add_links,
        all_day=links.all_day,
        may_edit=services.may_edit,
        truncated=len(events) >= services.MONTH_LIMIT,
    )


@bp.route("/<int:event_id>.ics")
@member
def event_ics(event_id: int):
    """One event as an iCalendar file, to open in Apple Calendar or any other calendar app."""
    event = or_404(services.visible_event(event_id, services.current_audience()))
    body = ical.calendar(g.school.name, [links.ics_event(event)])
    response = Response(body, mimetype="text/calendar")
    response.headers["Content-Type"] = "text/calendar; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="event-{event.id}.ics"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _event_form(audience, event=None) -> forms.EventForm:
    """The form with the classes this person may choose, times shown on the school's clock."""
    zone = _zone()
    form = forms.EventForm(obj=event)
    if event is not None and not form.is_submitted():
        form.starts_at.data = services.to_local(event.starts_at, zone).replace(tzinfo=None)
        form.ends_at.data = services.to_local(event.ends_at, zone).replace(tzinfo=None)
        form.class_id.data = str(event.class_id or "")
    classes = services.class_choices(audience, also=event.class_id if event else None)
    form.class_id.choices = [("", _("The whole school"))] + [(str(c.id), c.name) for c in classes]
    hint = _("On the school's clock (%(zone)s).", zone=zone.key)
    form.starts_at.description = form.ends_at.description = hint
    return form


def _save(form: forms.EventForm, event=None):
    """Validate and save (times converted to UTC), or the form again with errors by the fields."""
    if form.validate_on_submit():
        zone = _zone()
        saved = services.save_event(
            event,
            title=form.title.data,
            starts_at=services.to_utc(form.starts_at.data, zone),
            ends_at=services.to_utc(form.ends_at.data, zone),
            location=form.location.data,
            description=form.description.data,
            class_id=optional_id(form.class_id.data),  # "" is the whole school
        )
        db.session.commit()
        flash(_("%(title)s is saved.", title=saved.title), "success")
        return redirect_after_post(url_for("calendar.index"))
    return render(
        "calendar/edit.html",
        block="form",
        target="event-form",
        status=400 if form.errors else 200,
        form=form,
        event=event,
        confirm_form=forms.ConfirmForm(),
        may_delete=event is not None and services.may_delete(event),
    )


@bp.route("/new", methods=["GET", "POST"])
@requires("events.create")
def create():
    """Add an event for the school or one of my classes."""
    return _save(_event_form(services.current_audience()))


@bp.route("/<int:event_id>/edit", methods=["GET", "POST"])
@member
def edit(event_id: int):
    """Change an event: my own with events.edit_own, anyone's with events.edit_any."""
    audience = services.current_audience()
    event = or_404(services.visible_event(event_id, audience))
    if not services.may_edit(event):
        abort(403)
    return _save(_event_form(audience, event), event)


@bp.route("/<int:event_id>/delete", methods=["POST"])
@member
def delete(event_id: int):
    """Delete an event: my own with events.delete_own, anyone's with events.delete_any."""
    event = or_404(services.visible_event(event_id, services.current_audience()))
    if not services.may_delete(event):
        abort(403)
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    title = event.title
    services.delete_event(event)
    db.session.commit()
    flash(_("%(title)s is deleted.", title=title), "success")
    return redirect_after_post(url_for("calendar.index"))


@bp.route("/feed", methods=["POST"])
@member
def new_feed():
    """Make (or remake) my secret feed address; it is shown once, and the old one stops working."""
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    token = services.new_feed(g.membership.id)
    db.session.commit()
    return _page(feed_url=external_url("calendar.feed", token=token))


@bp.route("/feed/revoke", methods=["POST"])
@member
def revoke_feed():
    """Switch my feed address off."""
    if not forms.ConfirmForm().validate_on_submit():
        abort(400)
    services.revoke_feed(g.membership.id)
    db.session.commit()
    flash(_("Your calendar feed address is switched off."), "success")
    return redirect_after_post(url_for("calendar.index"))


def _feed_key() -> str:
    """Limit per feed address, not per IP: calendar services fetch many people's feeds from one IP."""
    token = (request.view_args or {}).get("token", "")
    return "feed:" + hashlib.sha256(token.encode()).hexdigest()[:32]


@bp.route("/feed/<token>.ics")
@public
@limiter.limit("60 per hour", key_func=_feed_key)
def feed(token: str):
    """A person's events as iCalendar, for calendar apps (no cookie: the secret address is the key)."""
    found = or_404(services.feed_for_token(token))
    body = ical.calendar(found.school_name, (links.ics_event(event) for event in found.events))
    response = Response(body, mimetype="text/calendar")
    response.headers["Content-Type"] = "text/calendar; charset=utf-8"
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
