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

MAX_BYTES = 10 * 1024 * 1024

# column: (required, what it holds) -- the upload page documents them from this table.
COLUMNS: dict[str, tuple[bool, str]] = {
    "family_key": (True, "Your reference for the household, the same on each of its rows (e.g. F-0042)."),
    "guardian_name": (True, "The parent's or carer's full name."),
    "guardian_email": (True, "Their email address: the invitation to set a password goes there."),
    "guardian_phone": (False, "Optional phone number."),
    "student_first_name": (True, "The child's first name."),
    "student_last_name": (True, "The child's last name."),
    "class_name": (True, "The class exactly as it is named here (e.g. Grade 2 B)."),
    "grade": (False, "Optional; needed only when two classes share a name."),
    "family_name": (False, "Optional; how the family is listed (default: “<last name> family”)."),
}
REQUIRED = [name for name, (required, _) in COLUMNS.items() if required]
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
    "family_key": "family key",
    "guardian_name": "guardian's name",
    "guardian_email": "guardian's email",
    "guardian_phone": "guardian's phone",
    "student_first_name": "child's first name",
    "student_last_name": "child's last name",
    "class_name": "class",
    "grade": "grade",
    "family_name": "family name",
}
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_BINARY_SIGNATURES = {
    b"PK\x03\x04": "an Excel or other zipped file",
    b"\xd0\xcf\x11\xe0": "an old Excel (.xls) file",
    b"%PDF": "a PDF",
}
SAVE_AS = "In your spreadsheet, choose Save As (or Download) → “CSV UTF-8”, then upload that file."


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
        raise FileProblem("The file is empty.")
    for signature, what in _BINARY_SIGNATURES.items():
        if raw.startswith(signature):
            raise FileProblem(f"This is {what}, not a CSV file. {SAVE_AS}")
    if b"\x00" in raw:
        raise FileProblem(f"This is not a text file (it contains binary data). {SAVE_AS}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise FileProblem(
            f"The file is not UTF-8 text (the first unreadable character is on line {line}); "
            f"it was probably saved in an older encoding. We don't guess encodings, because a "
            f"wrong guess would misspell names. {SAVE_AS}"
        ) from None


def _header(cells: list[str]) -> list[str]:
    return [re.sub(r"[\s\-]+", "_", cell.strip().lower()) for cell in cells]


def parse(text: str) -> ParsedFile:
    """Split the text into rows and check each one on its own (classes and duplicates come later)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = _header(next(reader, []))
        if not any(header):
            raise FileProblem("The first line must name the columns. Download the template to see them.")
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            hint = " (the file seems to use semicolons; use commas)" if ";" in ",".join(header) else ""
            raise FileProblem(
                f"Missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}{hint}. "
                "The first line must name the columns as in the template."
            )
        rows = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines are common at the end of exported sheets
            rows.append(_row(reader.line_num, header, cells))
    except csv.Error as error:
        raise FileProblem(f"The file is not valid CSV near line {reader.line_num}: {error}.") from None
    if not rows:
        raise FileProblem("The file has a header but no rows.")
    ignored = [name for name in header if name and name not in COLUMNS]
    return ParsedFile(rows, ignored)


def _row(line: int, header: list[str], cells: list[str]) -> Row:
    values = dict.fromkeys(COLUMNS, "")
    for name, cell in zip(header, cells, strict=False):
        if name in COLUMNS:
            values[name] = cell.strip()
    row = Row(line, values)
    if len(cells) > len(header):
        row.errors.append(f"This row has {len(cells)} cells but the header has {len(header)} columns.")
    for name in REQUIRED:
        if not values[name]:
            row.errors.append(f"The {LABELS[name]} is missing.")
    for name, limit in LIMITS.items():
        if len(values[name]) > limit:
            row.errors.append(f"The {LABELS[name]} is longer than {limit} characters.")
    email = values["guardian_email"]
    if email and not _EMAIL.match(email):
        row.errors.append(f"“{email[:60]}” is not an email address.")
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
                row.errors.append(f"Duplicate of line {seen[row.key]} (same family, guardian and child).")
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
            row.errors.append(f"The class “{name}” is in {grades}, not {grade}.")
            return None
        candidates = matching
    if not candidates:
        row.errors.append(f"There is no class named “{name}”. Create it first, or check the spelling.")
        return None
    if len(candidates) > 1:
        row.errors.append(f"Several classes are named “{name}”: add the grade to choose one.")
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
