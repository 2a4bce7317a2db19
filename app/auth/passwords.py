"""Password rules after NIST SP 800-63B rev. 4: length over composition, no known-bad passwords.

- at least 15 characters (a password is the only factor here), at most 256, so 64 and more are
  always accepted; any Unicode character counts, spaces included, and nothing is required (no
  digits, capitals or symbols) because composition rules push people to predictable patterns;
- characters are counted after Unicode NFKC normalisation, which is also what is hashed, so the
  same password typed on another keyboard still matches;
- refused: passwords on the bundled list of common and breached passwords (compared without
  case, spaces or punctuation), a character or short run repeated, straight keyboard or number
  runs, and passwords built from the person's own name or email address, or this service's name.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from app.lazytext import lazy_gettext as _l

MIN_LENGTH = 15
MAX_LENGTH = 256
# Lazy: shown in the reader's language (a form field's description, and form errors).
GUIDANCE = _l(
    "At least %(min)s characters. A few unrelated words work well; spaces are fine.", min=MIN_LENGTH
)
# scrypt at a cost on OWASP's Password Storage Cheat Sheet list (N=2^17, r=8, p=1, or the equal
# N=2^15, r=8, p=3): the latter holds memory at 32 MiB a hash, which a small web dyno can afford
# for concurrent sign-ins. Werkzeug's default (p=1) is below every row of that list.
HASH_METHOD = "scrypt:32768:8:3"
# A hash of a random password, checked when the email is unknown so timing reveals nothing.
_DUMMY_HASH = generate_password_hash("not-a-real-password-4f9c2a", method=HASH_METHOD)
_SERVICE_WORDS = ("joinourclass", "ourclass")
_RUNS = ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiopasdfghjklzxcvbnm", "1qaz2wsx3edc4rfv5tgb")
TOO_SHORT = _l("Use at least %(min)s characters. A few unrelated words work well.", min=MIN_LENGTH)
TOO_LONG = _l("Use at most %(max)s characters.", max=MAX_LENGTH)
TOO_COMMON = _l("This password is too easy to guess (it is common or has leaked). Try a few unrelated words.")
TOO_PERSONAL = _l("Don't build your password from your name or email address (or this site's name).")


def normalise(password: str) -> str:
    """NFKC, as NIST asks: what is counted, compared and hashed."""
    return unicodedata.normalize("NFKC", password)


def _squeezed(text: str) -> str:
    """Lower case without spaces or punctuation: 'Correct Horse-Battery' -> 'correcthorsebattery'."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


@cache
def _common_passwords() -> frozenset[str]:
    path = Path(__file__).with_name("common_passwords.txt")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(_squeezed(line) for line in lines if line and not line.startswith("#"))


def _is_repetitive(squeezed: str) -> bool:
    """One character, or one short run, repeated ('aaaa...', 'abcabcabc...', '121212...')."""
    if len(set(squeezed)) <= 2:
        return True
    return re.fullmatch(r"(.{1,5})\1+.{0,5}", squeezed) is not None


def _is_keyboard_run(squeezed: str) -> bool:
    """A stretch of the alphabet, the digits or a keyboard row, forwards or backwards."""
    return any(squeezed in run * 2 or squeezed in (run * 2)[::-1] for run in _RUNS)


def _personal_words(email: str, name: str) -> set[str]:
    local = email.split("@")[0]
    words = {_squeezed(email), _squeezed(local), _squeezed(name), *_SERVICE_WORDS}
    words |= {_squeezed(part) for part in re.split(r"[\s._+-]+", f"{local} {name}")}
    return {word for word in words if len(word) >= 4}


def problems(password: str, *, email: str = "", name: str = "") -> list[str]:
    """What is wrong with a proposed password, in words a person can act on (empty if fine)."""
    password = normalise(password)
    squeezed = _squeezed(password)
    if squeezed in _common_passwords():
        return [str(TOO_COMMON)]  # said first: a longer version of it would be no better
    if len(password) < MIN_LENGTH:
        return [str(TOO_SHORT)]
    if len(password) > MAX_LENGTH:
        return [str(TOO_LONG)]
    if _is_repetitive(squeezed) or _is_keyboard_run(squeezed):
        return [str(TOO_COMMON)]
    personal = _personal_words(email, name)
    # What is left once the person's own words are taken out must still be a password.
    rest = squeezed
    for word in sorted(personal, key=len, reverse=True):
        rest = rest.replace(word, "")
    if personal and len(rest) < len(squeezed) and len(rest) < MIN_LENGTH // 2:
        return [str(TOO_PERSONAL)]
    return []


def hash_password(password: str) -> str:
    """Hash the normalised password with scrypt at HASH_METHOD's cost, salted per password."""
    return generate_password_hash(normalise(password), method=HASH_METHOD)


def needs_rehash(password_hash: str) -> bool:
    """Was this hash made at another cost than HASH_METHOD (an older, weaker default)?"""
    return not password_hash.startswith(HASH_METHOD + "$")


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password; an unknown account costs the same time as a known one."""
    matches = check_password_hash(password_hash or _DUMMY_HASH, normalise(password))
    return matches and password_hash is not None
