"""Reading an uploaded CSV and checking every row, before anything is written.

Problems with the file as a whole (not text, not UTF-8, missing columns) stop the preview;
problems with a row are listed next to that row. Cells are kept as plain text: a name that
starts with "=" is stored as typed, and the directory's CSV export neutralises it.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

from flask_babel import gettext as _
from flask_babel import ngettext

from app.lazytext import lazy_gettext as _l

MAX_BYTES = 10 * 1024 * 1024

# column: (required, what it holds) -- the upload page documents them from this table.
COLUMNS: dict[str, tuple[bool, Any]] = {
    "family_key": (True, _l("Your reference for the household, the same on each of its rows (e.g. F-0042).")),
    "guardian_name": (True, _l("The parent's or carer's full name.")),
    "guardian_email": (True, _l("Their email address: the invitation to set a password goes there.")),
    "guardian_phone": (False, _l("Optional phone number.")),
    "student_first_name": (True, _l("The child's first name.")),
    "student_last_name": (True, _l("The child's last name.")),
    "class_name": (True, _l("The class exactly as it is named here (e.g. Grade 2 B).")),
    "grade": (False, _l("Optional; needed only when two classes share a name.")),
    "family_name": (False, _l("Optional; how the family is listed (default: “<last name> family”).")),
}
REQUIRED = [name for name, (required, _what) in COLUMNS.items() if required]
LIMITS = {
    "family_key": 80,
    "guardian_name": 120,
    "guardian_email": 254,
    "guardian_phone": 40,
    "student_first_name": 80,
    "student_last_name": 80,
    "class_name": 120,
    "grade": 20,
    "family_name": 120,
}
LABELS = {
    "family_key": _l("family key"),
    "guardian_name": _l("guardian's name"),
    "guardian_email": _l("guardian's email"),
    "guardian_phone": _l("guardian's phone"),
    "student_first_name": _l("child's first name"),
    "student_last_name": _l("child's last name"),
    "class_name": _l("class"),
    "grade": _l("grade"),
    "family_name": _l("family name"),
}
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_BINARY_SIGNATURES = {
    b"PK\x03\x04": _l("an Excel or other zipped file"),
    b"\xd0\xcf\x11\xe0": _l("an old Excel (.xls) file"),
    b"%PDF": _l("a PDF"),
}
SAVE_AS = _l("In your spreadsheet, choose Save As (or Download) → “CSV UTF-8”, then upload that file.")


class FileProblem(ValueError):
    """The file cannot be read as the CSV we need; the message says what to do."""


@dataclass
class Row:
    """One data row: its line in the file, its cells by column, and what is wrong with it."""

    line: int
    values: dict[str, str]
    errors: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The stable identity of a row: family key, guardian email, child's name (case-insensitive)."""
        v = self.values
        return (
            v["family_key"].lower(),
            v["guardian_email"].lower(),
            v["student_first_name"].lower(),
            v["student_last_name"].lower(),
        )


@dataclass
class ParsedFile:
    rows: list[Row]
    ignored_columns: list[str]

    @property
    def error_rows(self) -> list[Row]:
        return [row for row in self.rows if row.errors]


def decode(raw: bytes) -> str:
    """The file's text: UTF-8 with or without a byte-order mark, or a clear refusal (never a guess)."""
    if not raw.strip():
        raise FileProblem(_("The file is empty."))
    for signature, what in _BINARY_SIGNATURES.items():
        if raw.startswith(signature):
            raise FileProblem(_("This is %(what)s, not a CSV file. %(save_as)s", what=what, save_as=SAVE_AS))
    if b"\x00" in raw:
        raise FileProblem(
            _("This is not a text file (it contains binary data). %(save_as)s", save_as=SAVE_AS)
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise FileProblem(
            _(
                "The file is not UTF-8 text (the first unreadable character is on line %(line)s); "
                "it was probably saved in an older encoding. We don't guess encodings, because a "
                "wrong guess would misspell names. %(save_as)s",
                line=line,
                save_as=SAVE_AS,
            )
        ) from None


def _header(cells: list[str]) -> list[str]:
    return [re.sub(r"[\s\-]+", "_", cell.strip().lower()) for cell in cells]


def parse(text: str) -> ParsedFile:
    """Split the text into rows and check each one on its own (classes and duplicates come later)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = _header(next(reader, []))
        if not any(header):
            raise FileProblem(_("The first line must name the columns. Download the template to see them."))
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            hint = _(" (the file seems to use semicolons; use commas)") if ";" in ",".join(header) else ""
            raise FileProblem(
                ngettext(
                    "Missing column: %(names)s%(hint)s. "
                    "The first line must name the columns as in the template.",
                    "Missing columns: %(names)s%(hint)s. "
                    "The first line must name the columns as in the template.",
                    len(missing),
                    names=", ".join(missing),
                    hint=hint,
                )
            )
        rows = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines are common at the end of exported sheets
            rows.append(_row(reader.line_num, header, cells))
    except csv.Error as error:
        raise FileProblem(
            _("The file is not valid CSV near line %(line)s: %(error)s.", line=reader.line_num, error=error)
        ) from None
    if not rows:
        raise FileProblem(_("The file has a header but no rows."))
    ignored = [name for name in header if name and name not in COLUMNS]
    return ParsedFile(rows, ignored)


def _row(line: int, header: list[str], cells: list[str]) -> Row:
    values = dict.fromkeys(COLUMNS, "")
    for name, cell in zip(header, cells, strict=False):
        if name in COLUMNS:
            values[name] = cell.strip()
    row = Row(line, values)
    if len(cells) > len(header):
        row.errors.append(
            _(
                "This row has %(cells)s cells but the header has %(columns)s columns.",
                cells=len(cells),
                columns=len(header),
            )
        )
    for name in REQUIRED:
        if not values[name]:
            row.errors.append(_("The %(column)s is missing.", column=LABELS[name]))
    for name, limit in LIMITS.items():
        if len(values[name]) > limit:
            row.errors.append(
                _("The %(column)s is longer than %(limit)s characters.", column=LABELS[name], limit=limit)
            )
    email = values["guardian_email"]
    if email and not _EMAIL.match(email):
        row.errors.append(_("“%(email)s” is not an email address.", email=email[:60]))
    values["guardian_email"] = email.lower()
    return row


def check_against_school(parsed: ParsedFile, classes: list[tuple[int, str, str]]) -> dict[int, int]:
    """Resolve each row's class among ``(id, name, grade)`` and flag unknown classes and duplicates.

    Returns ``{row line: class id}`` for rows whose class was found.
    """
    by_name: dict[str, list[tuple[int, str]]] = {}
    for class_id, name, grade in classes:
        by_name.setdefault(name.strip().lower(), []).append((class_id, grade))
    found: dict[int, int] = {}
    seen: dict[tuple, int] = {}
    for row in parsed.rows:
        resolved = _resolve_class(row, by_name)
        if resolved is not None:
            found[row.line] = resolved
        if all(row.key):
            if row.key in seen:
                row.errors.append(
                    _("Duplicate of line %(line)s (same family, guardian and child).", line=seen[row.key])
                )
            else:
                seen[row.key] = row.line
    return found


def _resolve_class(row: Row, by_name: dict[str, list[tuple[int, str]]]) -> int | None:
    name, grade = row.values["class_name"], row.values["grade"]
    if not name:
        return None
    candidates = by_name.get(name.lower(), [])
    if grade:
        matching = [c for c in candidates if c[1].strip().lower() == grade.lower()]
        if candidates and not matching:
            grades = ", ".join(sorted({c[1] for c in candidates}))
            row.errors.append(
                _(
                    "The class “%(name)s” is in %(grades)s, not %(grade)s.",
                    name=name,
                    grades=grades,
                    grade=grade,
                )
            )
            return None
        candidates = matching
    if not candidates:
        row.errors.append(
            _("There is no class named “%(name)s”. Create it first, or check the spelling.", name=name)
        )
        return None
    if len(candidates) > 1:
        row.errors.append(_("Several classes are named “%(name)s”: add the grade to choose one.", name=name))
        return None
    return candidates[0][0]


def template_csv() -> str:
    """The downloadable template: the header and two example rows of one family."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(COLUMNS))
    child = ["Sam", "Example", "Grade 2 B", "Grade 2", ""]
    writer.writerow(["F-0001", "Ada Example", "ada@example.org", "+1 555 0100", *child])
    writer.writerow(["F-0001", "Ben Example", "ben@example.org", "", *child])
    return out.getvalue()
