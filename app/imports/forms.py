"""Forms of the imports feature: the upload, and applying a checked file."""

from __future__ import annotations

from flask_wtf.file import FileField, FileRequired

from app.forms import GuardedForm
from app.lazytext import lazy_gettext as _l


class UploadForm(GuardedForm):
    """A CSV file of families to check."""

    file = FileField(
        _l("CSV file"),
        validators=[FileRequired(_l("Choose a CSV file to upload."))],
        description=_l(
            "UTF-8 CSV, at most 10 MB, with the columns below. Nothing is saved until you apply it."
        ),
    )


class ApplyForm(GuardedForm):
    """Apply a checked file (CSRF only)."""
