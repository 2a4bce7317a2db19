"""Reading ids out of what people send (form fields, query strings): ASCII digits only.

``str.isdigit()`` is the wrong test for "can ``int()`` read this": it is True for "²" and
"①", which ``int()`` refuses (a 500), and ``int()`` itself reads Arabic-Indic or full-width
digits, spaces, signs and underscores. Every id that arrives as text goes through here.
"""

from __future__ import annotations

import re

# Every id column is an INTEGER: PostgreSQL refuses a larger value in a comparison with one
# ("integer out of range", a 500), so a larger number is no id at all. Route arguments are
# bounded by the same number (app.urls.RowIdConverter).
LARGEST_ID = 2**31 - 1
_ID = re.compile(r"[0-9]{1,10}")  # LARGEST_ID has ten digits


def optional_id(value: object) -> int | None:
    """A positive id from a submitted value, or None for anything else (blank, "²", "-1", "0", 2**31)."""
    if isinstance(value, int) and not isinstance(value, bool):
        # Already parsed (a caller passing an id on): the same bounds, so this can be called twice.
        return value if 0 < value <= LARGEST_ID else None
    if not isinstance(value, str) or not _ID.fullmatch(value):
        return None
    number = int(value)
    return number if 0 < number <= LARGEST_ID else None
