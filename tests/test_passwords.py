"""Passwords after NIST SP 800-63B rev. 4, and joining that reveals no account."""

from __future__ import annotations

import re
import statistics
import time

import pytest
from sqlalchemy import func, select

from app.auth import passwords
from app.demo import DEMO_PASSWORD
from app.extensions import db, limiter
from app.models import User
from tests.conftest import PASSWORD, sign_in, without_csrf_tokens

# --- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        PASSWORD,  # the suite's shared password
        DEMO_PASSWORD,  # the demo accounts' (README)
        "maple lantern orbit quietly",
        "x7$" + "unrelated words here",
        "a" + "b" * 0 + "q9 kettle drum on mars",
        "名前は秘密です、でも長いパスフレーズ",  # any Unicode
        "   spaces   are   fine here   ",
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor" * 3,  # 237
    ],
)
def test_long_passwords_of_any_characters_are_accepted(password):
    assert passwords.problems(password, email="kim@example.org", name="Kim Lee") == []


def test_exactly_fifteen_characters_is_enough_and_fourteen_is_not():
    assert passwords.problems("river stone owl") == []  # 15
    assert passwords.problems("river stone ow") == [passwords.TOO_SHORT]  # 14
    assert "15 characters" in passwords.TOO_SHORT


def test_at_least_sixty_four_characters_are_always_accepted_and_256_is_the_ceiling():
    sixty_four = "the quick yellow kettle whistles at dawn while seven owls snooze 1"
    assert len(sixty_four) >= 64 and passwords.problems(sixty_four) == []
    assert passwords.problems("wren " * 40) == [passwords.TOO_COMMON]  # repetitive, not too long
    assert passwords.problems("".join(f"{w} " for w in range(100)))[0] == passwords.TOO_LONG


def test_no_composition_rules():
    """No digits, capitals or symbols needed: lower-case words alone pass."""
    assert passwords.problems("plain lower case words only") == []


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "Correct-Horse-Battery-Staple",  # case and punctuation do not disguise it
        "passwordpassword",
        "123456789012345",
        "qwertyuiopasdfgh",
        "iloveyouiloveyou",
        "password1234",  # short and common: "common" is the more useful answer
        "abcabcabcabcabcabc",
        "zzzzzzzzzzzzzzzzzzzz",
        "abcdefghijklmnopq",
        "9876543210987654",
        "joinourclass2026",
    ],
)
def test_common_breached_and_patterned_passwords_are_refused(password):
    assert passwords.problems(password) == [passwords.TOO_COMMON]


def test_the_bundled_list_is_read_without_case_spaces_or_punctuation():
    common = passwords._common_passwords()
    assert len(common) > 150
    assert "correcthorsebatterystaple" in common
    assert all(entry == passwords._squeezed(entry) for entry in common)


@pytest.mark.parametrize(
    ("password", "email", "name"),
    [
        ("nadianewparent99", "kept@example.org", "Nadia Newparent"),
        ("Nadia Newparent 2026!", "kept@example.org", "Nadia Newparent"),
        ("zebediah.q@example.org", "zebediah.q@example.org", "Z Q"),
        ("zebediahzebediah1", "zebediah@example.org", "Zed"),
    ],
)
def test_passwords_built_from_the_name_or_email_are_refused(password, email, name):
    assert passwords.problems(password, email=email, name=name) == [passwords.TOO_PERSONAL]


def test_a_name_inside_a_long_passphrase_is_fine():
    assert (
        passwords.problems("nadia rides seven purple bicycles", email="n@example.org", name="Nadia Li") == []
    )


def test_unicode_is_normalised_before_counting_and_hashing():
    """NFKC: the same password typed with full-width or composed characters still matches."""
    composed, decomposed = "caf\u00e9 au lait sans sucre", "cafe\u0301 au lait sans sucre"
    stored = passwords.hash_password(composed)
    assert passwords.verify_password(stored, decomposed)
    assert passwords.verify_password(
        passwords.hash_password("ｗｉｄｅ ｌｅｔｔｅｒｓ ｏｋ ｈｅｒｅ"), "wide letters ok here"
    )
    assert not passwords.verify_password(stored, "cafe au lait sans sucre")


def test_unknown_accounts_are_checked_against_a_dummy_hash():
    assert passwords.verify_password(None, "anything at all here") is False


# --- the pages use the rules ---------------------------------------------------------------------


def _join(client, code, email, password="violet tundra marmalade ferry", name="Nadia Newparent"):
    return client.form(
        "/join",
        {"invite_code": code, "name": name, "email": email, "password": password, "accept_policy": "y"},
    )


def test_join_explains_the_length_next_to_the_password(client, make_school):
    make_school(code="GOOD-1")
    response = _join(client, "GOOD-1", "new@example.org", password="fourteen chars")
    assert response.status_code == 400
    error = re.search(r'id="password-error">([^<]*)<', response.get_data(as_text=True))
    assert error and "at least 15 characters" in error.group(1)


def test_change_password_refuses_a_common_one(client, make_school, make_member):
    member = make_member(make_school())
    sign_in(client, member.user.email)
    response = client.form(
        "/account/password",
        {
            "pw-current_password": PASSWORD,
            "pw-password": "passwordpassword",
            "pw-confirm": "passwordpassword",
        },
    )
    assert response.status_code == 400
    assert "too easy to guess" in response.get_data(as_text=True)


# --- joining reveals no account -----------------------------------------------------------------


def _comparable(response) -> tuple:
    """What a person (or a script) sees of an answer, less what differs every time anyway."""
    headers = sorted(
        (
            name,
            ""
            if name in ("Set-Cookie", "Date", "X-RateLimit-Reset", "Retry-After", "X-Request-ID")
            else value,
        )
        for name, value in response.headers.items()
    )
    return response.status_code, headers, without_csrf_tokens(response.get_data(as_text=True))


@pytest.mark.parametrize("htmx", [False, True])
def test_joining_with_an_address_that_has_an_account_answers_as_for_a_new_one(
    app, make_school, make_member, sent_mail, htmx
):
    school = make_school(name="Hazel School", code="HAZEL-1")
    existing = make_member(make_school(name="Elm School"), email="taken@example.org", name="Tessa Taken")
    answers = []
    for email in ("taken@example.org", "fresh@example.org"):
        limiter.reset()  # each attempt starts from the same rate-limit count (X-RateLimit-Remaining)
        client = app.test_client()
        if htmx:
            response = client.htmx(
                "/join",
                {
                    "invite_code": "HAZEL-1",
                    "name": "Nadia Newparent",
                    "email": email,
                    "password": "violet tundra marmalade ferry",
                    "accept_policy": "y",
                },
                target="join-form",
            )
        else:
            response = _join(client, "HAZEL-1", email)
        follow = client.get("/join/sent")
        answers.append((_comparable(response), _comparable(follow), client.get("/account").status_code))
    for taken, fresh in zip(answers[0][:2], answers[1][:2], strict=True):
        assert taken[0] == fresh[0] and taken[2] == fresh[2]  # status and body
        assert set(taken[1]) ^ set(fresh[1]) == set()  # headers
    assert answers[0][2] == answers[1][2]
    first, _, account = answers[0]
    assert first[0] in (303, 204) and account == 302  # nobody is signed in by joining
    assert "Check your email" in answers[0][1][2]

    # The existing account is untouched and told how to add the school; the new one is created.
    db.session.expire_all()
    assert db.session.get(User, existing.user_id).name == "Tessa Taken"
    assert (
        db.session.scalar(select(func.count()).select_from(User).where(User.email == "fresh@example.org"))
        == 1
    )
    subjects = {mail.to: mail.subject for mail in sent_mail}
    assert subjects["taken@example.org"] == "You already have an account"
    assert subjects["fresh@example.org"] == "Your request to join Hazel School"
    told = next(mail for mail in sent_mail if mail.to == "taken@example.org")
    assert "Join another school" in told.text and "/sign-in" in told.text
    assert school.name in told.text


def test_a_weak_password_is_refused_the_same_way_for_both(app, make_school, make_member):
    """The password is judged before the address is looked up, so a refusal reveals nothing either."""
    make_school(code="HAZEL-1")
    make_member(make_school(), email="taken@example.org")
    bodies = []
    for email in ("taken@example.org", "fresh@example.org"):
        response = _join(app.test_client(), "HAZEL-1", email, password="short one")
        assert response.status_code == 400
        bodies.append(without_csrf_tokens(response.get_data(as_text=True)).replace(email, "EMAIL"))
    assert bodies[0] == bodies[1]


def test_the_new_account_signs_in_after_joining_and_waits(client, make_school):
    make_school(name="Hazel School", code="HAZEL-1")
    assert _join(client, "HAZEL-1", "fresh@example.org").status_code == 303
    assert sign_in(client, "fresh@example.org", "violet tundra marmalade ferry").status_code == 303
    assert "Hazel School" in client.get("/pending").get_data(as_text=True)


def test_an_address_with_an_account_takes_about_as_long_to_answer(app, make_school, make_member):
    """Both paths hash the password once (scrypt dominates), so timing tells nothing either.

    Medians of a few joins each; a path that skipped the hash would be ten times faster."""
    make_school(code="HAZEL-1")
    make_member(make_school(), email="taken@example.org")
    times: dict[str, list[float]] = {"taken": [], "fresh": []}
    for n in range(4):
        for kind in ("taken", "fresh"):
            limiter.reset()
            client = app.test_client()
            token = client.csrf_token()
            email = "taken@example.org" if kind == "taken" else f"fresh{n}@example.org"
            fields = {
                "invite_code": "HAZEL-1",
                "name": "Nadia Newparent",
                "email": email,
                "password": "violet tundra marmalade ferry",
                "accept_policy": "y",
                "csrf_token": token,
            }
            started = time.perf_counter()
            assert client.post("/join", data=fields).status_code == 303
            times[kind].append(time.perf_counter() - started)
    ratio = statistics.median(times["taken"]) / statistics.median(times["fresh"])
    assert 0.5 < ratio < 2.0, times


# OWASP Password Storage Cheat Sheet, scrypt: the minimum (N, r, p), or one of the variants it
# lists as equal in strength (memory is 128 * N * r bytes; p buys back time for less memory).
OWASP_SCRYPT_MINIMUMS = ((2**17, 8, 1), (2**16, 8, 2), (2**15, 8, 3), (2**14, 8, 5), (2**13, 8, 10))


def _scrypt_parameters(password_hash: str) -> tuple[int, int, int, str, str]:
    method, salt, digest = password_hash.split("$")
    name, n, r, p = method.split(":")
    assert name == "scrypt", method
    return int(n), int(r), int(p), salt, digest


def test_passwords_are_hashed_with_scrypt_at_owasps_cost():
    """P12: scrypt at or above one of OWASP's listed (N, r, p); a 16-char salt per hash (the same
    password hashes twice to different values); a 64-byte digest."""
    first, second = passwords.hash_password(PASSWORD), passwords.hash_password(PASSWORD)
    n, r, p, salt, digest = _scrypt_parameters(first)
    assert n & (n - 1) == 0, n
    assert any(n >= mn and r >= mr and p >= mp for mn, mr, mp in OWASP_SCRYPT_MINIMUMS), (n, r, p)
    assert len(salt) >= 16 and len(digest) == 128
    assert first != second and _scrypt_parameters(second)[3] != salt
    assert passwords.verify_password(first, PASSWORD)
    assert not passwords.verify_password(first, PASSWORD + "!")
    # The dummy hash for unknown accounts costs the same, or timing would tell them apart.
    assert _scrypt_parameters(passwords._DUMMY_HASH)[:3] == (n, r, p)


def test_an_older_weaker_hash_is_upgraded_at_the_next_sign_in(client, make_school, make_member):
    """A hash made at Werkzeug's former default (N=2^15, r=8, p=1) still opens the account, and
    the sign-in stores a new hash at today's cost."""
    from werkzeug.security import generate_password_hash

    member = make_member(make_school())
    user = db.session.get(User, member.user_id)
    user.password_hash = generate_password_hash(passwords.normalise(PASSWORD), method="scrypt:32768:8:1")
    db.session.commit()
    assert passwords.needs_rehash(user.password_hash)
    assert sign_in(client, user.email).status_code in (302, 303)
    db.session.expire_all()
    upgraded = db.session.get(User, member.user_id).password_hash
    assert not passwords.needs_rehash(upgraded)
    assert _scrypt_parameters(upgraded)[:3] == _scrypt_parameters(passwords.hash_password("x" * 15))[:3]
    assert passwords.verify_password(upgraded, PASSWORD)
