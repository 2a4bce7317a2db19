"""Password rules in line with current guidance: length over composition, no common passwords."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

MIN_LENGTH = 12
MAX_LENGTH = 256
# A hash of a random password, checked when the email is unknown so timing reveals nothing.
_DUMMY_HASH = generate_password_hash("not-a-real-password-4f9c2a")


@cache
def _common_passwords() -> frozenset[str]:
    path = Path(__file__).with_name("common_passwords.txt")
    lines = (line.strip().lower() for line in path.read_text().splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def problems(password: str, *, email: str = "", name: str = "") -> list[str]:
    """What is wrong with a proposed password, in words a person can act on (empty if fine)."""
    if len(password) < MIN_LENGTH:
        return [f"Use at least {MIN_LENGTH} characters. A few unrelated words work well."]
    if len(password) > MAX_LENGTH:
        return [f"Use at most {MAX_LENGTH} characters."]
    lowered = password.lower()
    if lowered in _common_passwords() or len(set(lowered)) <= 2:
        return ["This password is too easy to guess. Try a few unrelated words."]
    personal = {email.lower(), email.split("@")[0].lower(), name.lower().replace(" ", "")}
    if any(part and len(part) >= 4 and part in lowered.replace(" ", "") for part in personal):
        return ["Don't build your password from your name or email address."]
    return []


def hash_password(password: str) -> str:
    """Hash with Werkzeug's default (scrypt), salted per password."""
    return generate_password_hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password; an unknown account costs the same time as a known one."""
    return check_password_hash(password_hash or _DUMMY_HASH, password) and password_hash is not None
