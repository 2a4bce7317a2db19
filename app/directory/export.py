"""The directory as CSV, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io

from app.directory.services import FamilyCard

# A spreadsheet runs a cell that starts with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: str) -> str:
    """Prefix a would-be formula with an apostrophe so the spreadsheet shows it as text."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def to_csv(cards: list[FamilyCard]) -> str:
    """One row per guardian: family, name, the details the viewer may see, and the children."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Family", "Guardian", "Email", "Phone", "Address", "Children"])
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
            writer.writerow([neutralise(cell) for cell in row])
    return out.getvalue()
