"""Sign-in limits that fit a school (app/auth/throttle.py): hundreds of parents behind one wifi
sign in within a minute, and a stranger's failures slow the stranger, never lock the owner out.

The clock stands still (the ``clock`` fixture moves ``time.time`` too, which the limiter's
memory storage reads), so "within a minute" holds however slow the machine is, and waits pass
when the test shifts the clock.
"""

from __future__ import annotations

import re

import pytest
from werkzeug.security import generate_password_hash

from app.auth import passwords, throttle
from app.extensions import db, limiter
from app.models import User
from tests.conftest import PASSWORD

OWNER_IP = "203.0.113.10"
ATTACKER_IP = "198.51.100.66"
SCHOOL_WIFI = "192.0.2.1"
WRONG = "not the right password at all"


CHEAP_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1")


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch):
    """Hundreds of sign-ins per test: verification still runs, at a cost that measures the
    limits rather than scrypt (the accounts' hashes, the unknown-address one, no upgrade)."""
    monkeypatch.setattr(
        passwords, "_DUMMY_HASH", generate_password_hash("no such account", method="pbkdf2:sha256:1")
    )
    monkeypatch.setattr(passwords, "needs_rehash", lambda _hash: False)


def _member(make_member, school, email: str):
    """A member whose password hash is cheap to check; returns the address."""
    member = make_member(school, email=email)
    db.session.get(User, member.user_id).password_hash = CHEAP_HASH
    db.session.commit()
    return email


def _attempt(app, email: str, password: str, ip: str):
    """One sign-in from a fresh browser at ``ip``."""
    client = app.test_client()
    return client.form("/sign-in", {"email": email, "password": password}, environ_base={"REMOTE_ADDR": ip})


def _waits(response) -> int | None:
    """The seconds a slowed answer asks for (None: not slowed)."""
    match = re.search(
        r"Too many attempts from here\. Try again in (\d+) seconds?\.", response.get_data(as_text=True)
    )
    return int(match.group(1)) if match else None


def _fail(app, email: str, ip: str, times: int, clock) -> list[int | None]:
    """``times`` wrong passwords, each after the pair's wait has passed; the waits each asked for."""
    waits = []
    for _ in range(times):
        response = _attempt(app, email, WRONG, ip)
        assert response.status_code in (400, 429)
        wait = _waits(response)
        waits.append(wait)
        if wait:
            clock.shift(seconds=wait)
    return waits


def test_two_hundred_parents_behind_one_wifi_all_sign_in_within_a_minute(
    app, clock, make_school, make_member
):
    """200 accounts, correct passwords, one IP, the clock standing still: every one is let in."""
    school = make_school()
    emails = [_member(make_member, school, f"parent{n}@example.org") for n in range(200)]
    statuses = [_attempt(app, email, PASSWORD, SCHOOL_WIFI).status_code for email in emails]
    assert statuses == [303] * 200


def test_a_strangers_hundred_failures_do_not_stop_the_owner(app, clock, make_school, make_member):
    head = _member(make_member, make_school(), "head@example.org")
    _fail(app, head, ATTACKER_IP, 100, clock)
    assert _attempt(app, head, PASSWORD, OWNER_IP).status_code == 303


def test_the_attackers_pair_is_slowed_more_each_time_and_never_locked(app, clock, make_school, make_member):
    head = _member(make_member, make_school(), "head@example.org")
    email = head
    # Five typos cost nothing.
    assert _fail(app, email, ATTACKER_IP, throttle.FREE_FAILURES, clock) == [None] * throttle.FREE_FAILURES
    sixth = _attempt(app, email, WRONG, ATTACKER_IP)
    assert sixth.status_code == 429 and sixth.headers["Retry-After"] == "2" and _waits(sixth) == 2
    page = sixth.get_data(as_text=True)
    assert 'value="head@example.org"' in page and WRONG not in page  # the address kept, never the password
    # While the pair waits, even the right password is not checked from there.
    waiting = _attempt(app, email, PASSWORD, ATTACKER_IP)
    assert waiting.status_code == 429 and _waits(waiting) == 2
    clock.shift(seconds=1)
    assert _waits(_attempt(app, email, PASSWORD, ATTACKER_IP)) == 1
    clock.shift(seconds=1)
    # The waits double, up to five minutes, and always end.
    assert _fail(app, email, ATTACKER_IP, 10, clock) == [4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert _attempt(app, email, PASSWORD, ATTACKER_IP).status_code == 303


def test_the_slowed_answer_to_htmx_is_the_form_with_the_message(app, clock, make_school, make_member):
    head = _member(make_member, make_school(), "head@example.org")
    _fail(app, head, ATTACKER_IP, throttle.FREE_FAILURES, clock)
    client = app.test_client()
    response = client.htmx(
        "/sign-in",
        {"email": "head@example.org", "password": WRONG},
        target="sign-in-form",
        environ_base={"REMOTE_ADDR": ATTACKER_IP},
    )
    body = response.get_data(as_text=True)
    assert response.status_code == 400 and body.lstrip().startswith("<form")  # the status htmx swaps in
    assert _waits(response) == 2 and 'value="head@example.org"' in body


def test_a_success_resets_the_pair(app, clock, make_school, make_member):
    member = _member(make_member, make_school(), "typo@example.org")
    email = member
    assert _fail(app, email, OWNER_IP, throttle.FREE_FAILURES, clock) == [None] * throttle.FREE_FAILURES
    assert _attempt(app, email, PASSWORD, OWNER_IP).status_code == 303
    # Had the count stayed, the next failure would make them wait; it starts afresh instead.
    assert _fail(app, email, OWNER_IP, throttle.FREE_FAILURES, clock) == [None] * throttle.FREE_FAILURES
    assert _waits(_attempt(app, email, WRONG, OWNER_IP)) == 2


def test_only_failures_count_toward_the_account(app, clock, make_school, make_member):
    """Hundreds of correct sign-ins to one account from many places never slow anyone."""
    member = _member(make_member, make_school(), "busy@example.org")
    for n in range(throttle.ACCOUNT_BUDGET + 5):
        assert _attempt(app, member, PASSWORD, f"10.0.{n // 250}.{n % 250}").status_code == 303
    assert _waits(_attempt(app, member, WRONG, OWNER_IP)) is None


def test_the_account_budget_slows_every_failing_ip_and_never_blocks_a_fresh_one(
    app, clock, make_school, make_member
):
    """A botnet: one failure from each of many IPs. Past the account's budget (an hour, every IP)
    each failure makes its IP wait five minutes from its first, so the botnet gets one guess per
    IP per five minutes; an IP with no recent failures is still checked, so the owner gets in."""
    head = _member(make_member, make_school(), "head@example.org")
    email = head
    bots = [f"198.51.{n // 250}.{n % 250}" for n in range(throttle.ACCOUNT_BUDGET + 3)]
    waits = [_waits(_attempt(app, email, WRONG, ip)) for ip in bots]
    assert waits[: throttle.ACCOUNT_BUDGET] == [None] * throttle.ACCOUNT_BUDGET
    assert waits[throttle.ACCOUNT_BUDGET :] == [throttle.MAX_DELAY] * 3
    # Under attack, the owner's correct password from their own IP goes straight in.
    assert _attempt(app, email, PASSWORD, OWNER_IP).status_code == 303
    # A typo from a fresh IP now costs five minutes (slowed), then the right password works.
    assert _waits(_attempt(app, email, WRONG, "203.0.113.77")) == throttle.MAX_DELAY
    assert _waits(_attempt(app, email, PASSWORD, "203.0.113.77")) == throttle.MAX_DELAY
    clock.shift(seconds=throttle.MAX_DELAY)
    assert _attempt(app, email, PASSWORD, "203.0.113.77").status_code == 303
    # The budget is per hour: after it, a failure costs only what its pair has earned.
    clock.shift(seconds=throttle.ACCOUNT_WINDOW)
    assert _waits(_attempt(app, email, WRONG, "203.0.113.78")) is None


def test_an_address_without_an_account_is_slowed_the_same_way(app, clock):
    """The answers tell nobody which addresses have accounts."""
    waits = _fail(app, "nobody@example.org", ATTACKER_IP, throttle.FREE_FAILURES + 2, clock)
    assert waits == [None] * throttle.FREE_FAILURES + [2, 4]


def test_the_per_ip_limit_answers_with_the_form_and_the_typed_address(app, clock, make_school, make_member):
    app.config["RATELIMIT_SIGN_IN"] = "2 per minute"
    member = _member(make_member, make_school(), "late@example.org")
    for ip_attempt in range(2):
        assert _attempt(app, f"other{ip_attempt}@example.org", WRONG, SCHOOL_WIFI).status_code == 400
    refused = _attempt(app, member, PASSWORD, SCHOOL_WIFI)
    assert refused.status_code == 429
    assert _waits(refused) == 60 and 'value="late@example.org"' in refused.get_data(as_text=True)
    assert _attempt(app, member, PASSWORD, OWNER_IP).status_code == 303  # another IP is not held
    clock.shift(seconds=60)
    assert _attempt(app, member, PASSWORD, SCHOOL_WIFI).status_code == 303


def test_no_address_or_ip_in_the_storage_keys(app, clock, make_school, make_member):
    member = _member(make_member, make_school(), "private.person@example.org")
    _fail(app, member, ATTACKER_IP, throttle.FREE_FAILURES + 1, clock)
    with app.app_context():  # the limiter's memory counters and the throttle's own, by key
        keys = [*limiter.storage.storage, *throttle.local_counters()._values]
    for key in keys:
        assert "private.person" not in key and "example.org" not in key, key
    ours = [key for key in keys if key.startswith("signin:")]
    assert {key.split(":")[1] for key in ours} == {"pair", "wait", "acct"}
    for key in ours:  # (the per-IP limit's own key names the IP, as every per-IP limit does)
        assert re.fullmatch(r"signin:(pair|wait|acct):[0-9a-f]{32}", key), key


def test_redis_keys_hold_no_address(build_app, clock, make_school, make_member, redis_url):
    """The same on Redis, production's store (TEST_REDIS_URL)."""
    import redis

    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    _member(make_member, make_school(), "private.person@example.org")
    on_redis = build_app(RATELIMIT_STORAGE_URI=redis_url)
    try:
        _fail(on_redis, "private.person@example.org", ATTACKER_IP, throttle.FREE_FAILURES + 1, clock)
        keys = [key.decode() for key in connection.keys("*")]
        assert any("signin:wait:" in key for key in keys)
        for key in keys:
            assert "private.person" not in key and "example.org" not in key, key
            assert key.startswith("LIMITS:LIMITER/") or ATTACKER_IP not in key, key
    finally:
        connection.flushdb()


@pytest.fixture
def redis_url():
    """TEST_REDIS_URL, or a skip (a failure under CI) without it."""
    import os

    from tests.conftest import require_service

    url = os.environ.get("TEST_REDIS_URL")
    require_service("Redis", bool(url), "set TEST_REDIS_URL=redis://127.0.0.1:6379/<n>")
    return url


def test_addresses_of_one_ipv6_network_share_a_pair(app, clock, make_school, make_member):
    """An IPv6 host holds a whole /64: moving to the next address does not start a fresh pair."""
    head = _member(make_member, make_school(), "head@example.org")
    _fail(app, head, "2001:db8:5:7::1", throttle.FREE_FAILURES, clock)
    assert _waits(_attempt(app, head, WRONG, "2001:db8:5:7::2")) == 2  # same /64: slowed
    assert _attempt(app, head, PASSWORD, "2001:db8:5:8::1").status_code == 303  # another /64
    with app.test_request_context("/"):
        assert throttle.network_of("2001:db8:5:7:aa::9") == "2001:db8:5:7::/64"
        assert throttle.network_of("::ffff:198.51.100.66") == "198.51.100.66"
        assert throttle.network_of("198.51.100.66") == "198.51.100.66"


def test_the_account_pages_current_password_is_slowed_like_sign_in(app, clock, make_school, make_member):
    """A stolen session cannot try thousands of current passwords to take the account over."""
    from tests.conftest import sign_in

    head = _member(make_member, make_school(), "head@example.org")
    client = app.test_client()
    sign_in(client, head)
    new = "a new long passphrase 77"
    fields = {"pw-current_password": WRONG, "pw-password": new, "pw-confirm": new}
    for _ in range(throttle.FREE_FAILURES):
        page = client.form("/account/password", fields).get_data(as_text=True)
        assert "That is not your current password." in page
    client.form("/account/password", fields)  # the sixth failure starts the wait
    right = {**fields, "pw-current_password": PASSWORD}
    slowed = client.form("/account/password", right).get_data(as_text=True)
    assert "Too many attempts from here. Try again in 2 seconds." in slowed  # not even checked
    clock.shift(seconds=2)
    assert client.form("/account/password", right).status_code == 303  # the wait over: changed
