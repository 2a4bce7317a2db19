"""Reading ids out of what people send (form fields, query strings): ASCII digits only.

``str.isdigit()`` is the wrong test for "can ``int()`` read this": it is True for "²" and
"①", which ``int()`` refuses (a 500), and ``int()`` itself reads Arabic-Indic or full-width
digits, spaces, signs and underscores. Every id that arrives as text goes through here.
"""

from __future__ import annotations

import re

# Twelve digits is far beyond any row id and keeps the number inside every database's integer.
_ID = re.compile(r"[0-9]{1,12}")
_LARGEST = 10**12 - 1


def optional_id(value: object) -> int | None:
    """A positive id from a submitted value, or None for anything else (blank, "²", "-1", "0", 13 digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        # Already parsed (a caller passing an id on): the same bounds, so this can be called twice.
        return value if 0 < value <= _LARGEST else None
    if not isinstance(value, str) or not _ID.fullmatch(value):
        return None
    number = int(value)
    return number if number > 0 else None
