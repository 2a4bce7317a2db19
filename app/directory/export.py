"""The directory as CSV, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io

from app.directory.services import FamilyCard
from app.lazytext import lazy_gettext as _l

# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: str) -> str:
    """Prefix a would-be formula with an apostrophe so the spreadsheet shows it as text."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


# Lazy: the header is written in the language of the person exporting (English by default).
HEADER = [_l("Family"), _l("Guardian"), _l("Email"), _l("Phone"), _l("Address"), _l("Children")]


def to_csv(cards: list[FamilyCard]) -> str:
    """One row per guardian: family, name, the details the viewer may see, and the children."""
    return header() + rows(cards)


def header() -> str:
    """The CSV's first line."""
    return _written([[str(title) for title in HEADER]])


def rows(cards: list[FamilyCard]) -> str:
    """The CSV lines of these cards (a batch of a streamed export, or all of them)."""
    lines = []
    for card in cards:
        children = "; ".join(f"{name} ({', '.join(classes)})" for name, classes in card.children)
        for guardian in card.guardians:
            row = [
                card.name,
                guardian.name,
                guardian.contact.get("email", ""),
                guardian.contact.get("phone", ""),
                guardian.contact.get("address", ""),
                children,
            ]
            lines.append([neutralise(cell) for cell in row])
    return _written(lines)


def _written(lines: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(lines)
    return out.getvalue()
