"""The translation catalogues: complete, current with the code, and compiled as committed.

- Complete: every message of the Spanish and Arabic catalogues is translated (every plural form),
  nothing is fuzzy, and every ``%(name)s`` of the English is kept (Babel's own checkers).
- Safe: templates print translations as markup (Jinja's gettext), so a translation has exactly
  the English's tags and no quote or ``&`` of its own that could change the page.
- Current: extracting the messages from the code now gives exactly the catalogue's messages, so
  no string was added or changed without its translation (``make i18n-update`` fixes it).
- Compiled: each committed ``.mo`` is byte for byte what ``pybabel compile`` makes of its ``.po``
  (``make i18n-compile``), so what is served is what was reviewed.
"""

from __future__ import annotations

import re
from collections import Counter
from io import BytesIO
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "app" / "translations"
LOCALES = ("es", "ar")
PLURAL_FORMS = {"es": 3, "ar": 6}  # CLDR: Spanish one/many/other, Arabic zero/one/two/few/many/other


def catalogue(locale: str) -> Catalog:
    """The .po file of ``locale``, read as Babel reads it."""
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=locale)


def extracted_ids() -> set[str | tuple[str, ...]]:
    """What `make i18n-extract` finds in the code now (the same babel.cfg and keywords)."""
    with (ROOT / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    keywords = {**DEFAULT_KEYWORDS, "lazy_gettext": None, "lazy_ngettext": (1, 2), "_l": None}
    found: set[str | tuple[str, ...]] = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT / "app"), method_map, options_map, keywords=keywords
    ):
        found.add(message if isinstance(message, str) else tuple(m for m in message if m))
    return found


TAG = re.compile(r"</?[a-zA-Z][^>]*>")
BARE_AMPERSAND = re.compile(r"&(?![a-zA-Z]+;|#\d+;)")


def markup_problems(msgid: str | tuple[str, ...], strings: tuple[str, ...]) -> list[str]:
    """Translations are printed as markup, so they may use only the English's tags, quotes and &."""
    english = msgid if isinstance(msgid, str) else msgid[-1]
    allowed_tags = Counter(TAG.findall(english))
    problems = []
    for text in strings:
        if Counter(TAG.findall(text)) != allowed_tags:
            problems.append(f"{msgid!r}: its tags differ from the English's")
        if '"' in text and '"' not in english:
            problems.append(f"{msgid!r}: an ASCII quote, which would end an HTML attribute")
        if BARE_AMPERSAND.search(text) and not BARE_AMPERSAND.search(english):
            problems.append(f"{msgid!r}: a bare &")
    return problems


@pytest.mark.parametrize("locale", LOCALES)
def test_every_message_is_translated_and_keeps_its_placeholders(locale):
    po = catalogue(locale)
    messages = [m for m in po if m.id]
    assert len(messages) > 500
    problems = []
    for message in messages:
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.fuzzy:
            problems.append(f"fuzzy: {message.id!r}")
        if isinstance(message.id, tuple) and len(strings) != PLURAL_FORMS[locale]:
            problems.append(f"{len(strings)} plural forms, not {PLURAL_FORMS[locale]}: {message.id!r}")
        if not all(s.strip() for s in strings):
            problems.append(f"untranslated: {message.id!r}")
        problems += [f"{message.id!r}: {error}" for error in message.check(po)]
        problems += markup_problems(message.id, strings)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("locale", LOCALES)
def test_the_catalogues_hold_exactly_what_the_code_asks_for(locale):
    in_code = extracted_ids()
    in_catalogue = {m.id for m in catalogue(locale) if m.id}
    missing = sorted(map(str, in_code - in_catalogue))
    stale = sorted(map(str, in_catalogue - in_code))
    hint = f"run `make i18n-update` and translate: missing {missing}, stale {stale}"
    assert (missing, stale) == ([], []), hint


@pytest.mark.parametrize("locale", LOCALES)
def test_the_committed_mo_is_the_compiled_po(locale):
    compiled = BytesIO()
    write_mo(compiled, catalogue(locale), use_fuzzy=False)
    committed = (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.mo").read_bytes()
    assert committed == compiled.getvalue(), "run `make i18n-compile` and commit the .mo"
