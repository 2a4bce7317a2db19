"""P10, P11: categories, one-click unsubscribe (RFC 8058), preferences, digests and suppressions."""

from __future__ import annotations

import math
import re

import pytest
from sqlalchemy import select

from app.extensions import db
from app.mail.jobs import send_message
from app.models import Category, DeliveryMode, DeliveryStatus, MailDelivery, MailPreference, Suppression
from app.unsubscribe import tokens
from tests.conftest import sign_in


def _statuses(message):
    db.session.expire_all()
    rows = db.session.scalars(select(MailDelivery).where(MailDelivery.message_id == message.id))
    return {d.to_email: (d.status, d.last_error) for d in rows}


def _unsubscribe_path(envelope):
    url = re.search(r"<(http://localhost/unsubscribe/[^>]+)>", envelope.headers["List-Unsubscribe"]).group(1)
    return url.replace("http://localhost", "")


def test_optional_mail_carries_a_personal_unsubscribe_link_and_one_click_headers(
    app, make_school, make_member, sent_mail, send_email
):
    school = make_school()
    # Long local parts: three letters ("bob") turn up by chance in a random signature.
    a = make_member(school, email="annabelle@example.org")
    b = make_member(school, email="bartholomew@example.org")
    send_email([a.user, b.user])
    by_to = {m.to: m for m in sent_mail}
    for person, envelope in by_to.items():
        assert envelope.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        path = _unsubscribe_path(envelope)
        assert path in envelope.text and path in envelope.html  # a visible link too
        token = path.rsplit("/", 1)[1]
        assert person.split("@")[0] not in token.lower()  # nothing personal in the link
        assert str(a.user_id) not in token.split(".")[1:]
    assert _unsubscribe_path(by_to[a.user.email]) != _unsubscribe_path(by_to[b.user.email])


def test_administrative_mail_has_no_unsubscribe(app, make_school, make_member, sent_mail, send_email):
    member = make_member(make_school())
    send_email([member.user], category=Category.ADMINISTRATIVE)
    assert "List-Unsubscribe" not in sent_mail[0].headers
    assert "/unsubscribe/" not in sent_mail[0].text


def test_one_click_post_unsubscribes_before_the_next_send_and_get_changes_nothing(
    app, client, make_school, make_member, sent_mail, send_email
):
    member = make_member(make_school(), email="ann@example.org")
    send_email([member.user])
    path = _unsubscribe_path(sent_mail[0])

    page = client.get(path)
    assert page.status_code == 200 and "Stop “School announcements” emails?" in page.get_data(as_text=True)
    assert "Set-Cookie" not in page.headers  # works for someone who is not signed in, leaves nothing
    assert db.session.scalar(select(MailPreference)) is None  # GET alone changed nothing

    anonymous = app.test_client(use_cookies=False)
    response = anonymous.post(path, data={"List-Unsubscribe": "One-Click"})  # no cookie, no CSRF token
    assert response.status_code == 200  # not a redirect
    assert "Set-Cookie" not in response.headers
    multipart = anonymous.post(
        path, data={"List-Unsubscribe": "One-Click"}, content_type="multipart/form-data"
    )
    assert multipart.status_code == 200

    sent_mail.clear()
    second = send_email([member.user])
    assert sent_mail == []
    assert _statuses(second)["ann@example.org"] == (DeliveryStatus.SKIPPED, "unsubscribed from this category")
    send_email([member.user], category=Category.NEWSLETTERS)  # other categories still arrive
    assert len(sent_mail) == 1


def test_the_page_offers_everything_non_administrative(app, make_school, make_member, sent_mail, send_email):
    member = make_member(make_school(), email="ann@example.org")
    send_email([member.user])
    path = _unsubscribe_path(sent_mail[0])
    client = app.test_client(use_cookies=False)
    done = client.post(path, data={"scope": "all"})
    assert done.status_code == 200 and "You are unsubscribed" in done.get_data(as_text=True)
    sent_mail.clear()
    for category in Category:
        send_email([member.user], category=category)
    assert [m.headers["X-Category"] for m in sent_mail] == ["administrative"]  # P11: notices still arrive


def test_deactivated_account_gets_not_even_administrative_mail(
    app, make_school, make_member, sent_mail, send_email
):
    member = make_member(make_school(), email="gone@example.org")
    member.user.active = False
    db.session.commit()
    message = send_email([member.user], category=Category.ADMINISTRATIVE)
    assert sent_mail == []
    assert _statuses(message)["gone@example.org"] == (DeliveryStatus.SKIPPED, "account deactivated")


@pytest.mark.parametrize("token", ["nonsense", "a.b.c", "x" * 500, "%00", "abc.s.forged-signature"])
def test_a_tampered_token_gets_a_clear_400(app, token):
    client = app.test_client(use_cookies=False)
    for response in (
        client.get(f"/unsubscribe/{token}"),
        client.post(f"/unsubscribe/{token}", data={"scope": "all"}),
    ):
        assert response.status_code == 400
        # A NUL byte is refused for every route before any view runs (app/security.py).
        expected = (
            "Something in that request was not right" if token == "%00" else "recognise this unsubscribe link"
        )
        assert expected in response.get_data(as_text=True)


def test_a_token_for_another_category_cannot_be_edited_into_one(app, make_school, make_member):
    member = make_member(make_school())
    key, _code, signature = tokens.make(member.user, Category.NEWSLETTERS).split(".")
    assert tokens.read(f"{key}.s.{signature}") is None
    assert tokens.read(f"{key}.n.{signature}")[1] is Category.NEWSLETTERS


def test_preferences_toggle_with_htmx_and_administrative_is_locked(
    client, make_school, make_member, sent_mail
):
    member = make_member(make_school())
    sign_in(client, member.user.email)
    page = client.get("/account/email-settings").get_data(as_text=True)
    assert "Always, while your account is active" in page and "locked" in page

    response = client.htmx("/account/email-settings/newsletters", {"mode": "digest"}, target="email-settings")
    assert response.status_code == 200
    assert 'value="digest" checked' in response.get_data(as_text=True)
    assert "<html" not in response.get_data(as_text=True)

    refused = client.htmx("/account/email-settings/administrative", {"mode": "off"}, target="email-settings")
    assert refused.status_code == 400 and "reach every active account" in refused.get_data(as_text=True)
    no_digest = client.htmx(
        "/account/email-settings/promotional", {"mode": "digest"}, target="email-settings"
    )
    assert no_digest.status_code == 400
    assert client.form("/account/email-settings/junk", {"mode": "off"}).status_code == 404
    plain = client.form("/account/email-settings/promotional", {"mode": "off"})
    assert plain.status_code == 303 and plain.headers["Location"] == "/account/email-settings"

    modes = dict(db.session.execute(select(MailPreference.category, MailPreference.mode)).all())
    assert modes == {Category.NEWSLETTERS: DeliveryMode.DIGEST, Category.PROMOTIONAL: DeliveryMode.OFF}


def test_digest_choice_holds_the_mail_for_the_digest(app, make_school, make_member, sent_mail, send_email):
    member = make_member(make_school(), email="digest@example.org")
    db.session.add(
        MailPreference(user_id=member.user_id, category=Category.NEWSLETTERS, mode=DeliveryMode.DIGEST)
    )
    db.session.commit()
    message = send_email([member.user], category=Category.NEWSLETTERS)
    assert sent_mail == []
    assert _statuses(message)["digest@example.org"][0] is DeliveryStatus.DIGEST


def test_suppressed_addresses(app, make_school, make_member, sent_mail, send_email):
    school = make_school()
    bounced = make_member(school, email="bounced@example.org")
    complained = make_member(school, email="complained@example.org")
    db.session.add_all(
        [
            Suppression(email="bounced@example.org", reason="bounce", blocks_administrative=True),
            Suppression(email="complained@example.org", reason="complaint", blocks_administrative=False),
        ]
    )
    db.session.commit()
    news = send_email([bounced.user, complained.user])
    notice = send_email([bounced.user, complained.user], category=Category.ADMINISTRATIVE)
    assert [m.to for m in sent_mail] == [
        "complained@example.org"
    ]  # only the notice, only to the live address
    assert _statuses(news)["complained@example.org"] == (
        DeliveryStatus.SKIPPED,
        "address suppressed (complaint)",
    )
    assert _statuses(notice)["bounced@example.org"] == (DeliveryStatus.SKIPPED, "address suppressed (bounce)")


def test_a_large_send_is_batched_by_the_backend_size(app, make_school, sent_mail, monkeypatch, send_email):
    """P4's batching through the outbox: ceil(n / max_batch) provider calls, each person once."""
    from app.auth.passwords import hash_password
    from app.models import User

    backend = app.extensions["mail_backend"]
    monkeypatch.setattr(backend, "max_batch", 7)
    password = hash_password("not used here")
    users = [User(email=f"p{n}@example.org", name=f"P {n}", password_hash=password) for n in range(30)]
    db.session.add_all(users)
    db.session.commit()
    message = send_email(users, category=Category.NEWSLETTERS)
    assert len(backend.batches) == math.ceil(30 / 7)
    assert sorted(m.to for m in sent_mail) == sorted(u.email for u in users)
    links = {_unsubscribe_path(m) for m in sent_mail}
    assert len(links) == 30
    assert send_message(message.id)["sent"] == 0  # nothing is sent twice
    assert len(sent_mail) == 30


def _readings(token: str) -> list[str]:
    """Every way to read a token: as sent, each dot-separated part, and each part decoded as
    base64 (standard and URL-safe) or hex where it decodes."""
    import base64
    import binascii
    import contextlib

    found = [token, *token.split(".")]
    for part in token.split("."):
        padded = part + "=" * (-len(part) % 4)
        for decode in (base64.urlsafe_b64decode, base64.b64decode, bytes.fromhex):
            with contextlib.suppress(ValueError, binascii.Error):
                found.append(decode(padded if decode is not bytes.fromhex else part).decode("latin-1"))
    return found


def test_an_unsubscribe_token_carries_no_readable_personal_data(app, make_school, make_member):
    """P10: decoded every way, a token holds no address, no name and no id of the person, only a
    random per-account key, a category letter and a signature; and it still opens the right person."""
    import hashlib

    school = make_school()
    member = make_member(school, email="ada.lovelace@example.org", name="Ada Lovelace")
    twin = make_member(school, email="ada.lovelace2@example.org", name="Ada Lovelace")
    user = member.user
    ids = {str(user.id), str(member.id), str(school.id)}
    # Not "ada" alone: three hex letters turn up in a random hex key about once in 140 runs.
    forbidden = {"ada.lovelace", "lovelace", "example.org", user.email}
    # The key is not derived from what it would hide (a hash of the address or id is as good as it).
    forbidden |= {
        hashlib.new(name, value.encode()).hexdigest()[:16]
        for name in ("md5", "sha1", "sha256")
        for value in (user.email, *ids)
    }
    for category in (*[c for c in Category if c.optional], tokens.ALL):
        token = tokens.make(user, category)
        key, code, _signature = token.split(".")
        assert len(key) >= 32 and key != tokens.make(twin.user, category).split(".")[0]
        assert len(code) == 1
        assert not any(part.isdigit() for part in token.split(".")), token
        for reading in _readings(token):
            for secret in forbidden:
                assert secret.lower() not in reading.lower(), (category, secret)
            assert reading.strip() not in ids, (category, reading)  # an id, merely encoded
        assert tokens.read(token) == (user, category)
