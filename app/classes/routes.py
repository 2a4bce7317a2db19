"""Classes blueprint: the list of classes and a class's page (the roster grows in the classes issue)."""

from __future__ import annotations

from flask import Blueprint, abort, g, render_template

from app.classes import services
from app.directory import services as directory
from app.directory.visibility import current_viewer
from app.permissions import requires

bp = Blueprint("classes", __name__, url_prefix="/classes")


@bp.route("/")
@requires("directory.view")
def index():
    """All classes of the current school."""
    return render_template("classes/index.html", classes=services.list_classes())


@bp.route("/<int:class_id>")
@requires("directory.view")
def show(class_id: int):
    """A class: its teachers, room parents and families."""
    school_class = services.get_class(class_id)
    if school_class is None:
        abort(404)
    families = directory.load_families(services.class_family_ids(school_class))
    return render_template(
        "classes/show.html",
        school_class=school_class,
        helpers=services.class_helpers(school_class),
        cards=directory.cards_for(families, current_viewer(g.membership), directory.class_names()),
    )
