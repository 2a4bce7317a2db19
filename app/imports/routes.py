"""The imports blueprint: upload a CSV, preview every row's problems, apply it all or nothing."""

from __future__ import annotations

from pathlib import PurePath

from flask import Blueprint, Response, abort, flash, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from app.extensions import db
from app.htmx import redirect_after_post, render
from app.imports import parsing, services
from app.imports.forms import ApplyForm, UploadForm
from app.imports.parsing import FileProblem
from app.lookup import school_row_or_404
from app.models.imports import ImportRun, ImportStatus
from app.permissions import requires

bp = Blueprint("imports", __name__, url_prefix="/import")

PREVIEW_ROWS = 50  # rows shown of a file without problems
ALL_ROWS_UP_TO = 200  # a file with problems shows every row up to this size, else only its broken rows
ERROR_ROWS_SHOWN = 500


def _too_big_message() -> str:
    return _(
        "The file is larger than %(size)s MB. Split it into smaller files.",
        size=services.max_bytes() // (1024 * 1024),
    )


@bp.errorhandler(413)
def too_big(_error):
    """An upload over the limit: the upload page, saying so next to the file field."""
    if not current_user.is_authenticated:  # refused before access was checked: say no more
        return render_template("errors/error.html", code=413), 413
    form = UploadForm(formdata=None)
    form.file.errors = [_too_big_message()]
    # Refused before the member and school were loaded (app/pipeline.py), so no list of recent imports.
    return render_template("imports/index.html", form=form, columns=parsing.COLUMNS, recent=[]), 413


def _index_page(form: UploadForm) -> str:
    recent = db.session.scalars(select(ImportRun).order_by(ImportRun.id.desc()).limit(10)).all()
    return render_template("imports/index.html", form=form, columns=parsing.COLUMNS, recent=recent)


@bp.route("/", methods=["GET", "POST"])
@requires("import.run")
def index():
    """Upload a CSV; a file with problems is shown row by row, a clean one is kept for applying."""
    form = UploadForm()
    if form.validate_on_submit():
        upload = form.file.data
        raw = upload.stream.read(services.max_bytes() + 1)
        filename = PurePath(upload.filename or "").name[:200]
        if len(raw) > services.max_bytes():
            form.file.errors.append(_too_big_message())
        else:
            try:
                text, checked = services.read_upload(raw)
            except FileProblem as problem:
                form.file.errors.append(str(problem))
            else:
                if not checked.ok:
                    return _preview(checked, filename=filename, run=None, status=400)
                run = ImportRun(
                    filename=filename,
                    content=text,
                    total_rows=len(checked.parsed.rows),
                    created_by_id=current_user.id,
                )
                db.session.add(run)
                services.forget_stale_previews()
                db.session.commit()
                return redirect_after_post(url_for("imports.show", run_id=run.id))
    return _index_page(form), 400 if form.errors else 200


def _preview(checked: services.Checked, *, filename: str, run: ImportRun | None, status: int = 200):
    rows = checked.parsed.rows
    if checked.ok:
        shown = rows[:PREVIEW_ROWS]
        counts = services.plan(rows).counts(rows, checked.class_of)
    else:
        shown = rows if len(rows) <= ALL_ROWS_UP_TO else checked.parsed.error_rows[:ERROR_ROWS_SHOWN]
        counts = None
    page = render_template(
        "imports/preview.html",
        checked=checked,
        rows=rows,
        shown=shown,
        counts=counts,
        filename=filename,
        run=run,
        apply_form=ApplyForm(),
        upload_form=UploadForm(formdata=None),
        threshold=services.WORKER_THRESHOLD,
    )
    return page, status


@bp.route("/<int:run_id>")
@requires("import.run")
def show(run_id: int):
    """A checked file waiting to be applied, or an import's progress and outcome."""
    run = school_row_or_404(ImportRun, run_id)
    if run.status is ImportStatus.PREVIEWED:
        checked = services.check(run.content or "")
        return _preview(checked, filename=run.filename, run=run, status=200 if checked.ok else 409)
    return render(
        "imports/run.html", block="progress", target="import-progress", run=run, stuck=services.stuck(run)
    )


@bp.route("/<int:run_id>/progress")
@requires("import.run")
def progress(run_id: int):
    """How far an import is (htmx polls this every second until it is finished)."""
    run = school_row_or_404(ImportRun, run_id)
    return render(
        "imports/run.html", block="progress", target="import-progress", run=run, stuck=services.stuck(run)
    )


@bp.route("/<int:run_id>/apply", methods=["POST"])
@requires("import.run")
def apply(run_id: int):
    """Apply a checked file: everything or nothing; large files go to the worker."""
    run = school_row_or_404(ImportRun, run_id)
    if not ApplyForm().validate_on_submit():
        abort(400)
    if not services.start(run):
        flash(_("This file is already being imported."), "info")
        return redirect_after_post(url_for("imports.show", run_id=run.id))
    queued = services.apply_or_enqueue(run)
    if queued:
        flash(_("The import has started. You can leave this page: it carries on."), "info")
    elif run.status is ImportStatus.DONE:
        flash(_("The import is done."), "success")
    else:
        flash(_("The import did not go through; nothing was changed."), "error")
    return redirect_after_post(url_for("imports.show", run_id=run.id))


@bp.route("/<int:run_id>/again", methods=["POST"])
@requires("import.run")
def start_again(run_id: int):
    """Queue an import again that no worker picked up (Redis was down, or a worker was lost)."""
    run = school_row_or_404(ImportRun, run_id)
    if not ApplyForm().validate_on_submit():
        abort(400)
    if services.start_again(run):
        flash(_("The import is queued again."), "info")
    return redirect_after_post(url_for("imports.show", run_id=run.id))


@bp.route("/template.csv")
@requires("import.run")
def template():
    """The CSV template with every column and an example family."""
    return Response(
        parsing.template_csv(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="families-template.csv"'},
    )
