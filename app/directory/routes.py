"""Directory blueprint: live search, filters, pages, print, CSV, staff, and my own details."""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, g, render_template, request, url_for

from app.directory import services
from app.directory.export import to_csv
from app.directory.forms import MyDetailsForm
from app.directory.services import DirectoryQuery
from app.directory.visibility import Viewer, classes_of, current_viewer
from app.extensions import db
from app.htmx import redirect_after_post, render, wants_fragment
from app.models import Visibility
from app.permissions import requires

bp = Blueprint("directory", __name__, url_prefix="/directory")


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
    """Every matching family as CSV, with the same visibility rules as the pages."""
    query = DirectoryQuery.from_args(request.args)
    body = to_csv(services.everything(query, current_viewer(g.membership)))
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="directory.csv"'},
    )


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
        flash("Your directory details are saved.", "success")
        return redirect_after_post(url_for("directory.my_details"))
    return render_template("directory/me.html", form=form), 400 if form.errors else 200


PREVIEWS = {
    "classmate": "a parent in your child's class",
    "schoolmate": "a parent elsewhere in the school",
    "staff": "school staff",
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
