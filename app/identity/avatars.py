"""Initials avatars: the letters of a name and a background chosen from it, the same every time."""

from __future__ import annotations

import unicodedata
import zlib

# Backgrounds for white initials; each has at least 4.5:1 contrast with white (a test checks
# it, and that app.css's .avatar-tone-N classes are these colours in this order).
PALETTE = (
    "#1e40af",
    "#047857",
    "#b91c1c",
    "#6d28d9",
    "#0f766e",
    "#be185d",
    "#4338ca",
    "#c2410c",
)
# Scripts whose letters join their neighbours: two initials side by side would read as one word.
_JOINING = ("ARABIC", "SYRIAC", "NKO", "MONGOLIAN")
ZWNJ = "\u200c"


def _first_letter(word: str) -> str:
    """The word's first letter with its combining marks (NFC), upper-cased where the script has case."""
    for i, char in enumerate(word):
        if unicodedata.category(char).startswith("L"):
            end = i + 1
            while end < len(word) and unicodedata.category(word[end]).startswith("M"):
                end += 1
            letter = unicodedata.normalize("NFC", word[i:end])
            upper = letter.upper()
            return upper if len(upper) == len(letter) else letter  # "ß" stays one letter
    return ""


def _joins(letter: str) -> bool:
    return unicodedata.name(letter[0], "").startswith(_JOINING)


def initials(name: str | None) -> str:
    """First letters of the first and last words ("Ana María López" -> "AL"); one for a single name,
    "" for a name with no letters. Arabic initials are kept apart by a zero-width non-joiner."""
    normalised = unicodedata.normalize("NFC", name or "")
    letters = [letter for letter in (_first_letter(word) for word in normalised.split()) if letter]
    if not letters:
        return ""
    if len(letters) == 1:
        return letters[0]
    first, last = letters[0], letters[-1]
    joiner = ZWNJ if _joins(first) and _joins(last) else ""
    return f"{first}{joiner}{last}"


def tone(name: str | None) -> int:
    """The palette index for a name: stable across runs and machines (crc32, not hash())."""
    key = unicodedata.normalize("NFC", (name or "").strip()).casefold()
    return zlib.crc32(key.encode("utf-8")) % len(PALETTE)
