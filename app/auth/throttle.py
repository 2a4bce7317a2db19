"""Sign-in throttling that slows a guesser and never lets a stranger lock anyone out.

OWASP ASVS (v5.0 V6.3.1, "controls against credential stuffing and brute force ... without
enabling an attacker to lock out a legitimate user") asks for per-account protection that
cannot be turned into a denial of service. Three measures, each with its own job:

1. **Per IP** (Flask-Limiter, ``RATELIMIT_SIGN_IN``): sized for a school evening, hundreds of
   parents behind one wifi (300 a minute). It bounds what one address can try across every
   account; it is not what protects an account.
2. **Per (account, IP) pair**: failed passwords only, counted for ``PAIR_WINDOW``. The first
   ``FREE_FAILURES`` cost nothing (typos); after that the pair waits before its next attempt,
   doubling from 2 s up to ``MAX_DELAY`` (5 min): slowed, never locked. A success from that
   IP resets the pair. A stranger's failures from elsewhere never touch the owner's pair.
3. **Per account, every IP** (the larger, slower budget): failures counted for an hour. Past
   ``ACCOUNT_BUDGET`` the account is under attack, and *every* failure on it then makes its
   pair wait at least ``MAX_DELAY`` (from the first failure, so a botnet gets one guess per IP
   per five minutes). Nothing is ever refused because of the account count alone: an IP with
   no recent failures on the account always has its attempt checked, so the owner's correct
   password goes through even while the account is under attack; their own typo then costs
   them five minutes, which slows and never blocks.

The account is the submitted address (normalised), whether or not it has an account, so the
answers say nothing about which addresses exist. Keys are keyed hashes (HMAC with the secret
key): the storage (Redis in production, memory locally) holds no address and no IP.

The limitation: two people behind one NAT share a pair for a given account, so someone on a
school's wifi failing on the head teacher's address slows the head teacher's attempts from that
wifi too (never more than one try per five minutes, and not at all from any other network).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass

from flask import current_app, request
from limits.storage import MemoryStorage, Storage

from app.extensions import limiter

log = logging.getLogger(__name__)

FREE_FAILURES = 5
MAX_DELAY = 300  # seconds
PAIR_WINDOW = 24 * 3600  # a pair's failures are forgotten a day after the first
ACCOUNT_BUDGET = 100  # failures per account, from every IP, in ACCOUNT_WINDOW
ACCOUNT_WINDOW = 3600

# Where the limiter's storage is unreachable (a Redis outage), counting goes on in this
# process's memory rather than locking everyone out or letting guesses through uncounted.


class LocalCounters:
    """Counters with expiry in this process, behind one lock, expired when read.

    For the throttle when there is no Redis (development, tests) or Redis is down. limits'
    MemoryStorage is not used for it: its timer thread walks the expirations while ``clear``
    removes them, and raises KeyError in that thread now and then.
    """

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str) -> tuple[int, float] | None:
        found = self._values.get(key)
        if found is not None and found[1] <= time.time():
            del self._values[key]
            return None
        return found

    def get(self, key: str) -> int:
        with self._lock:
            found = self._live(key)
            return found[0] if found else 0

    def get_expiry(self, key: str) -> float:
        with self._lock:
            found = self._live(key)
            return found[1] if found else time.time()

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount``; a new counter lives ``expiry`` seconds (as limits' storages count)."""
        with self._lock:
            found = self._live(key)
            value, expires = found if found else (0, time.time() + expiry)
            self._values[key] = (value + amount, expires)
            return value + amount

    def clear(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)


_fallback = LocalCounters()  # outside any app (a script)


def local_counters() -> LocalCounters:
    """This app's own counters in memory (one set per app, as each app has its own limiter)."""
    try:
        return current_app.extensions.setdefault("sign_in_throttle", LocalCounters())
    except RuntimeError:
        return _fallback


@dataclass(frozen=True)
class Keys:
    """The storage keys of one attempt: its pair's failures and wait, and its account's failures."""

    pair: str
    wait: str
    account: str


def keyed_hash(*parts: str) -> str:
    """A keyed hash of ``parts`` (HMAC-SHA256 with the secret key): nothing guessable in storage."""
    secret = current_app.secret_key
    if not secret:  # every config sets one; production refuses to start without
        raise RuntimeError("SECRET_KEY is not set: submitted addresses cannot be keyed.")
    secret_bytes = secret if isinstance(secret, bytes) else secret.encode()
    message = "\x1f".join(parts).encode()
    return hmac.new(secret_bytes, message, hashlib.sha256).hexdigest()[:32]


def network_of(ip: str) -> str:
    """The unit an attacker cannot multiply cheaply: an IPv4 address, or an IPv6 /64.

    One IPv6 host is usually given a whole /64 (2^64 addresses); counting each address alone
    would give it a fresh pair for every guess.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:198.51.100.66 is that IPv4 address
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def keys_for(email: str, ip: str | None = None) -> Keys:
    """The keys for this (normalised) address from this IP's network (default: the request's)."""
    ip = ip if ip is not None else (request.remote_addr or "")
    pair = keyed_hash("sign-in-pair", email, network_of(ip))
    return Keys(
        pair=f"signin:pair:{pair}", wait=f"signin:wait:{pair}", account=f"signin:acct:{keyed_hash(email)}"
    )


def _storage() -> Storage | LocalCounters:
    try:
        storage = limiter.storage
    except AssertionError:  # the limiter is not bound to an app (a script): count in memory
        return local_counters()
    return local_counters() if isinstance(storage, MemoryStorage) else storage


def _call(operation: str, *args):
    """One storage operation, on the in-memory fallback if the limiter's storage fails."""
    try:
        return getattr(_storage(), operation)(*args)
    except Exception:  # noqa: BLE001 - an outage of the store must not stop sign-in
        log.warning("sign-in throttle storage unavailable; counting in memory")
        return getattr(local_counters(), operation)(*args)


def wait_seconds(keys: Keys) -> int:
    """Seconds this pair must still wait before its password is checked (0: go ahead)."""
    if not _call("get", keys.wait):
        return 0
    return max(1, math.ceil(_call("get_expiry", keys.wait) - time.time()))


def delay_after(pair_failures: int, account_failures: int) -> int:
    """How long a pair waits after its latest failure, given both counts."""
    delay = 0 if pair_failures <= FREE_FAILURES else min(2 ** (pair_failures - FREE_FAILURES), MAX_DELAY)
    if account_failures > ACCOUNT_BUDGET:
        delay = MAX_DELAY
    return delay


def record_failure(keys: Keys) -> int:
    """Count a failed password for the pair and the account; returns the pair's wait (seconds)."""
    pair_failures = _call("incr", keys.pair, PAIR_WINDOW)
    account_failures = _call("incr", keys.account, ACCOUNT_WINDOW)
    delay = delay_after(pair_failures, account_failures)
    if delay:
        _call("clear", keys.wait)
        _call("incr", keys.wait, delay)
    return delay


def record_success(keys: Keys) -> None:
    """A correct password from this IP: its pair starts afresh (the account count stays)."""
    _call("clear", keys.pair)
    _call("clear", keys.wait)
