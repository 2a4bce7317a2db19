"""Initials for the ``.avatar`` component: ``{{ person.name|initials }}`` -> "AL"."""

from __future__ import annotations

import unicodedata


def initials(name: str | None, limit: int = 2) -> str:
    """The first letter of the first and last words ("Ada King Lovelace" -> "AL"), upper-cased.

    Words start at a letter or digit (quotes and brackets are skipped); a name with none gives "?".
    Combining marks stay with their letter, so an accented initial keeps its accent.
    """
    letters = []
    for word in (name or "").split():
        start = next((i for i, ch in enumerate(word) if ch.isalnum()), None)
        if start is None:
            continue
        end = start + 1
        while end < len(word) and unicodedata.combining(word[end]):
            end += 1
        letters.append(word[start:end])
    if not letters:
        return "?"
    chosen = letters if len(letters) <= limit else [*letters[: limit - 1], letters[-1]]
    return unicodedata.normalize("NFC", "".join(chosen[:limit])).upper()
