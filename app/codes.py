"""Invitation codes are typed by hand: the form a code is compared in."""

from __future__ import annotations

import unicodedata

# Typed, pasted or autocorrected between a code's groups: none of them are part of the code.
_SEPARATORS = {"\u2212", "\u00ad", "_", ".", "/"}


def code_key(code: str | None) -> str:
    """``mAple 2026``, ``MAPLE–2026`` and ``maple-2026`` are all ``MAPLE2026``.

    Full-width and other compatibility forms become plain letters and digits (NFKC); spaces of any
    kind, hyphens and every other dash (Unicode's "Pd" category, the minus sign, a soft hyphen) go;
    case is ignored."""
    text = unicodedata.normalize("NFKC", code or "")
    kept = (
        ch
        for ch in text
        if not ch.isspace() and ch not in _SEPARATORS and unicodedata.category(ch) not in ("Pd", "Cf")
    )
    return "".join(kept).upper()
