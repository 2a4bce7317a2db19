"""Directory blueprint: live search, filters, pages, print, CSV, staff, and my own details."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _

from app import tenancy
from app.directory import export, services
from app.directory.forms import MyDetailsForm
from app.directory.services import DirectoryQuery
from app.directory.visibility import Viewer, classes_of, current_viewer
from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.lazytext import lazy_gettext as _l
from app.models import Visibility
from app.permissions import requires

bp = Blueprint("directory", __name__, url_prefix="/directory")
T = TypeVar("T")


@bp.route("/")
@requires("directory.view")
def index():
    """The school directory; htmx asks for just the results while the person types."""
    query = DirectoryQuery.from_args(request.args)
    result = services.search(query, current_viewer(g.membership))
    whole_page = not wants_fragment("directory-results")  # the filters are outside the results
    return render(
        "directory/index.html",
        block="results",
        target="directory-results",
        oob_blocks=("export",),
        query=query,
        result=result,
        classes=services.all_classes() if whole_page else [],
        grades=services.grades() if whole_page else [],
    )


@bp.route("/print")
@requires("directory.export")
def print_view():
    """Every matching family on one printable page."""
    query = DirectoryQuery.from_args(request.args)
    cards = services.everything(query, current_viewer(g.membership))
    return render_template("directory/print.html", cards=cards, query=query)


@bp.route("/export.csv")
@requires("directory.export")
def export_csv():
    """Every matching family as CSV, with the same visibility rules as the pages, streamed as it
    is built (a thousand families at a time), so the first byte comes at once and memory
    stays flat however large the school."""
    query = DirectoryQuery.from_args(request.args)
    viewer = current_viewer(g.membership)
    return Response(
        _streamed_csv(
            current_app._get_current_object(), tenancy.current_school_id(), query, viewer, export.header()
        ),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="directory.csv"'},
    )


def _streamed_csv(app, school_id, query: DirectoryQuery, viewer: Viewer, header: str) -> Iterator[str]:
    """The CSV's pieces: the header, then the rows of ``EXPORT_BATCH`` families at a time.

    The server reads the body after the request's context is gone, so each piece is made in an
    app context of its own, bound to the request's school, pushed and popped within the piece
    (a context held across a ``yield`` may be popped from another contextvars context).
    The header is made during the request, in the reader's language.
    """

    def within(work: Callable[[], T]) -> T:
        with app.app_context(), tenancy.bound(school_id):
            return work()

    ids, names = within(lambda: (services.export_ids(query), services.class_names()))
    yield header
    for start in range(0, len(ids), services.EXPORT_BATCH):
        batch = ids[start : start + services.EXPORT_BATCH]
        yield within(lambda: export.rows(services.cards_of(batch, viewer, names=names)))  # noqa: B023


@bp.route("/staff")
@requires("directory.view")
def staff():
    """The staff directory: names, titles and classes taught."""
    return render_template("directory/staff.html", staff=services.staff())


@bp.route("/me", methods=["GET", "POST"])
@requires("directory.view")
def my_details():
    """My phone and address, and who may see each of my details."""
    membership = g.membership
    form = MyDetailsForm(obj=membership)
    if form.validate_on_submit():
        membership.phone = (form.phone.data or "").strip() or None
        membership.address = (form.address.data or "").strip() or None
        for field in ("email", "phone", "address"):
            setattr(membership, f"{field}_visibility", Visibility(getattr(form, f"{field}_visibility").data))
        db.session.commit()
        flash(_("Your directory details are saved."), "success")
        return redirect_after_post(url_for("directory.my_details"))
    return render_template("directory/me.html", form=form), 400 if form.errors else 200


PREVIEWS = {
    "classmate": _l("a parent in your child's class"),
    "schoolmate": _l("a parent elsewhere in the school"),
    "staff": _l("school staff"),
}


@bp.route("/me/preview")
@requires("directory.view")
def preview():
    """My details on my family's card as another parent (or staff) would see them."""
    as_whom = request.args.get("as", "classmate")
    if as_whom not in PREVIEWS:
        abort(404)
    mine = classes_of(g.membership.id)
    someone_else = Viewer(
        membership_id=-1,
        class_ids=mine if as_whom == "classmate" else frozenset(),
        sees_all=as_whom == "staff",
    )
    me = current_viewer(g.membership)
    cards = services.load_cards(services.families_of(g.membership.id), me, own_details_seen_by=someone_else)
    return render_template("directory/preview.html", cards=cards, as_whom=as_whom, previews=PREVIEWS)
