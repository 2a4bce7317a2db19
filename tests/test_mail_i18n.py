"""Issue 14: every email in its recipient's language, rendered at send time, one provider call per language.

Catalogues do not exist yet: the sends are checked by their ``lang``/``dir`` attributes, the
rendering's locale and the ``?lang=`` of their links, and a tiny catalogue compiled into a
temporary folder proves that a real Spanish string comes out under the forced locale.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from app import jobs, tenancy
from app.extensions import babel, db
from app.mail import claims, queue_email, rendering
from app.mail.digest import send_digests
from app.mail.jobs import send_message
from app.mail.mailgun import MailgunBackend
from app.mail.rendering import render_in, rendering_for
from app.models import (
    Category,
    DeliveryMode,
    DeliveryStatus,
    MailDelivery,
    MailMessage,
    MailPreference,
    MailRendering,
    MessageTranslation,
)
from tests.conftest import fake_stats
from tests.fakes.mailgun import FakeMailgun

KEY = "key-i18n-0a1b2c3d4e5f"
DOMAIN = "mg.i18n.example"
pytestmark = pytest.mark.usefixtures("loopback_only")  # nothing may reach the real Mailgun


@pytest.fixture
def fake():
    with FakeMailgun(api_key=KEY, domain=DOMAIN) as server:
        yield server


@pytest.fixture
def mailgun(app, fake) -> MailgunBackend:
    """The app sends through the fake, as MAIL_BACKEND=mailgun would."""
    backend = MailgunBackend(KEY, DOMAIN, base_url=fake.base_url, timeout=5.0, events_lag=5.0)
    app.extensions["mail_backend"] = backend
    return backend


@pytest.fixture
def families(make_school, make_member):
    """A school with three families: English, Spanish and Arabic (their own choice)."""
    school = make_school(name="Maple School")
    people = {}
    for code in ("en", "es", "ar"):
        user = make_member(school, email=f"{code}@example.org", name=f"Parent {code}").user
        user.language = code
        people[code] = user
    db.session.commit()
    return school, people


def _announce(school, users, **changes) -> MailMessage:
    """An announcement written by the school, queued and committed (its job left to the caller)."""
    context = {
        "subject": "Trip on Friday",
        "body": "Bring a hat.",
        "body_html": Markup("<p>Bring a <strong>hat</strong>.</p>"),
        "school_name": school.name,
        "sender_name": "Ms Office",
        "audience_label": "Everyone at Maple School",
    } | changes
    with tenancy.bound(school.id):
        message = queue_email(
            "announcement", users, category=Category.SCHOOL_ANNOUNCEMENTS, school_id=school.id, **context
        )
        db.session.commit()
    return message


def _renderings(message_id: int) -> dict[str, MailRendering]:
    db.session.expire_all()
    rows = db.session.scalars(select(MailRendering).where(MailRendering.message_id == message_id))
    return {r.locale: r for r in rows}


def _sent_html(envelope) -> str:
    return envelope.html or ""


# -- one provider call per language ---------------------------------------------------------------


def test_an_announcement_goes_out_in_one_call_per_language(app, fake, mailgun, families):
    school, people = families
    message = _announce(school, list(people.values()))
    assert message.language == "en"  # written on an English page (no request: the default)
    assert message.render_context["subject"] == "Trip on Friday"
    assert message.render_context["__markup__"] == ["body_html"]
    json.dumps(message.render_context)  # what the column keeps is plain JSON
    jobs.run_ready_jobs()

    assert fake.stats()["requests"] == 3
    by_address = {}
    for request in fake.accepted():
        assert len(request.recipients) == 1  # one language each: here one family each
        by_address[request.recipients[0]] = request
    expected = {"en": "ltr", "es": "ltr", "ar": "rtl"}
    for code, direction in expected.items():
        request = by_address[f"{code}@example.org"]
        html = request.first("html")
        assert f'<html lang="{code}" dir="{direction}">' in html
        assert f'<div dir="{direction}"' in html
        assert request.first("subject") == "Trip on Friday"  # what the school typed, as typed
        assert "Bring a <strong>hat</strong>." in html  # the Markup body stayed HTML through JSON
        assert f"lang={code}" in request.first("text")  # the email-settings link
        variables = json.loads(request.first("recipient-variables"))
        link = variables[f"{code}@example.org"]["unsubscribe_url"]
        assert link.endswith(f"?lang={code}")
        (received,) = fake.messages_for(f"{code}@example.org")
        assert link in received.html and link in received.text
        assert received.headers["List-Unsubscribe"].startswith(f"<{link}>")
    assert set(_renderings(message.id)) == {"en", "es", "ar"}
    statuses = db.session.scalars(select(MailDelivery.status).where(MailDelivery.message_id == message.id))
    assert set(statuses) == {DeliveryStatus.SENT}


def test_a_claim_of_many_families_splits_into_at_most_one_batch_per_language(
    app, make_school, make_member, sent_mail
):
    school = make_school()
    users = []
    for n in range(9):
        user = make_member(school, email=f"p{n}@example.org").user
        user.language = ("en", "es", "ar")[n % 3]
        users.append(user)
    school.default_language = "es"
    users.append(make_member(school, email="unset@example.org").user)  # no choice: the school's
    db.session.commit()
    message = _announce(school, users)
    jobs.run_ready_jobs()
    batches = app.extensions["mail_backend"].batches
    assert len(batches) == 3
    by_lang = {b.html.split('lang="')[1][:2]: sorted(r.email for r in b.recipients) for b in batches}
    assert by_lang["es"] == ["p1@example.org", "p4@example.org", "p7@example.org", "unset@example.org"]
    assert by_lang["ar"] == ["p2@example.org", "p5@example.org", "p8@example.org"]
    assert len({b.batch_id for b in batches}) == 3  # each handed over under its own id
    assert len(sent_mail) == 10
    assert set(_renderings(message.id)) == {"en", "es", "ar"}


def test_a_rendering_is_made_once_and_reused(app, families, sent_mail):
    school, people = families
    message = _announce(school, [people["es"]])
    jobs.run_ready_jobs()
    first = _renderings(message.id)["es"]
    again = rendering_for(db.session.get(MailMessage, message.id), "es")
    assert again.id == first.id
    assert db.session.scalars(select(MailRendering)).all() == [first]


def test_two_workers_rendering_the_same_language_keep_one_row(app, families, monkeypatch):
    school, people = families
    message = _announce(school, [people["es"]])
    stored = rendering_for(message, "es")
    db.session.commit()
    real = rendering._stored
    calls = []

    def not_yet_seen(message_id, locale):
        """The first look misses the row, as a worker racing the one that wrote it would."""
        calls.append(locale)
        return None if len(calls) == 1 else real(message_id, locale)

    monkeypatch.setattr(rendering, "_stored", not_yet_seen)
    found = rendering_for(message, "es")
    assert found.id == stored.id
    db.session.commit()  # the savepoint kept the transaction usable
    assert len(_renderings(message.id)) == 1


def test_system_mail_is_written_in_its_one_recipients_language(app, families, sent_mail):
    school, people = families
    with tenancy.bound(school.id):
        message = queue_email(
            "membership_approved",
            [people["ar"]],
            school_id=school.id,
            name="Parent ar",
            school_name=school.name,
            link="http://localhost/sign-in",
        )
        db.session.commit()
    assert message.language == "ar"
    assert '<html lang="ar" dir="rtl">' in message.html_body  # the stored copy, for the web UI
    jobs.run_ready_jobs()
    assert '<html lang="ar" dir="rtl">' in sent_mail[0].html


def test_the_rejection_quote_rule_sits_on_the_starting_side(app):
    context = {"name": "A", "school_name": "S", "reason": "Full"}
    with app.test_request_context():
        _, _, ltr = render_in("en", "membership_rejected", Category.ADMINISTRATIVE, context)
        _, _, rtl = render_in("ar", "membership_rejected", Category.ADMINISTRATIVE, context)
    assert "border-left:4px" in ltr and "padding-left:12px" in ltr
    assert "border-right:4px" in rtl and "padding-right:12px" in rtl
    assert "left" not in rtl.split("<blockquote", 1)[1].split(">", 1)[0]


def test_a_context_json_cannot_hold_fails_loudly(app, families):
    school, people = families
    with pytest.raises(TypeError, match="when"), tenancy.bound(school.id):
        queue_email("email_change_notice", [people["en"]], name="x", when=object())
    with pytest.raises(TypeError, match="nested"), tenancy.bound(school.id):
        queue_email("email_change_notice", [people["en"]], name="x", nested=[Markup("<b>x</b>")])
    db.session.rollback()


def test_messages_written_before_renderings_send_their_stored_bodies(app, families, sent_mail):
    school, people = families
    message = _announce(school, [people["es"]])
    with tenancy.bound(school.id):
        message.render_context = None  # as a row written before this change
        message.html_body = "<p>Stored long ago</p>"
        db.session.commit()
    jobs.run_ready_jobs()
    assert sent_mail[0].html == "<p>Stored long ago</p>"
    assert _renderings(message.id) == {}


# -- a real catalogue -----------------------------------------------------------------------------


@pytest.fixture
def spanish_app(build_app, tmp_path, app):
    """An app whose catalogue folder holds a tiny Spanish catalogue (app/translations is not touched)."""
    catalog = Catalog(locale="es")
    catalog.add("Hello %(name)s,", "Hola %(name)s,")
    catalog.add("Choose a new password", "Elige una contraseña nueva")
    catalog.add("Unsubscribe", "Darse de baja")
    folder = tmp_path / "es" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with open(folder / "messages.mo", "wb") as mo:
        write_mo(mo, catalog)
    # Flask-Babel keeps one translations cache for every app of the process (the extension is a
    # module-level object): empty it so this app loads its own folder, and leaves nothing behind.
    cache = babel.domain_instance.cache
    cache.clear()
    yield build_app(BABEL_TRANSLATION_DIRECTORIES=str(tmp_path))
    cache.clear()


def test_mail_is_rendered_in_the_forced_locale_never_the_requesters(spanish_app):
    context = {"name": "Ana", "hours": 2, "link": "http://localhost/r"}
    # A job run in-process inherits the request's app context: here an Arabic page.
    with spanish_app.test_request_context("/?lang=ar"):
        from app.i18n import current_locale

        assert current_locale() == "ar"
        subject, text, html = render_in("es", "password_reset", Category.ADMINISTRATIVE, context)
        assert current_locale() == "ar"  # and the request's own locale is back afterwards
    assert subject == "Elige una contraseña nueva"
    assert "Hola Ana," in text and "<p>Hola Ana,</p>" in html
    assert '<html lang="es" dir="ltr">' in html


def test_a_spanish_family_gets_the_spanish_strings_through_the_outbox(spanish_app, make_school, make_member):
    with spanish_app.app_context():
        school = make_school()
        user = make_member(school, email="es@example.org", name="Ana").user
        user.language = "es"
        db.session.commit()
        with tenancy.bound(school.id):
            message = queue_email(
                "email_change_notice", [user], category=Category.SCHOOL_ANNOUNCEMENTS, name="Ana"
            )
            db.session.commit()
        jobs.run_ready_jobs()
        (envelope,) = spanish_app.extensions["mail_backend"].sent
        assert "<p>Hola Ana,</p>" in envelope.html
        assert ">Darse de baja</a>" in envelope.html
        assert _renderings(message.id)["es"].locale == "es"


# -- unsubscribe in the email's language ---------------------------------------------------------


def test_the_unsubscribe_pages_open_in_the_emails_language_without_a_cookie(app, families, sent_mail):
    school, people = families
    _announce(school, [people["ar"]])
    jobs.run_ready_jobs()
    link = sent_mail[0].headers["List-Unsubscribe"].split(">")[0].lstrip("<")
    assert link.endswith("?lang=ar")
    anonymous = app.test_client(use_cookies=False)
    page = anonymous.get(link.replace("http://localhost", ""))
    assert page.status_code == 200
    assert '<html lang="ar" dir="rtl"' in page.text
    assert "Set-Cookie" not in page.headers
    action = page.text.split('<form method="post" action="', 1)[1].split('"', 1)[0]
    assert "lang=ar" in action
    done = anonymous.post(action.replace("&amp;", "&"), data={"scope": "all"})
    assert done.status_code == 200
    assert '<html lang="ar" dir="rtl"' in done.text
    assert "Set-Cookie" not in done.headers
    # "Email settings" from the email: sign-in opens in that language too.
    settings = anonymous.get("/account/email-settings?lang=ar")
    assert settings.status_code == 302
    assert "lang=ar" in settings.headers["Location"]


# -- the language at send time --------------------------------------------------------------------


def test_a_scheduled_message_follows_a_language_change_made_after_it_was_written(
    app, families, sent_mail, clock
):
    school, people = families
    message = _announce(school, [people["es"]])
    with tenancy.bound(school.id):
        message.scheduled_for = clock.now() + timedelta(days=2)
        db.session.commit()
    jobs.run_ready_jobs()
    assert sent_mail == []  # not yet due
    people["es"].language = "ar"  # the family switched languages meanwhile
    db.session.commit()
    clock.shift(days=3)
    send_message(message.id)
    (envelope,) = sent_mail
    assert '<html lang="ar" dir="rtl">' in envelope.html
    assert set(_renderings(message.id)) == {"ar"}


def test_each_digest_is_in_its_readers_language(app, families, sent_mail):
    school, people = families
    for code in ("es", "ar"):
        db.session.add(
            MailPreference(
                user_id=people[code].id, category=Category.SCHOOL_ANNOUNCEMENTS, mode=DeliveryMode.DIGEST
            )
        )
    db.session.commit()
    held = _announce(school, [people["es"], people["ar"]])
    jobs.run_ready_jobs()
    assert sent_mail == []
    assert send_digests() == {"digests": 2, "items": 2}
    jobs.run_ready_jobs()
    by_to = {m.to: m for m in sent_mail}
    assert '<html lang="es" dir="ltr">' in by_to["es@example.org"].html
    assert '<html lang="ar" dir="rtl">' in by_to["ar@example.org"].html
    digests = db.session.scalars(select(MailMessage).where(MailMessage.template == "digest")).all()
    assert sorted(d.language for d in digests) == ["ar", "es"]
    # The held item went in as rendered in each reader's language.
    assert set(_renderings(held.id)) == {"es", "ar"}
    for digest in digests:
        (item,) = digest.render_context["items"]
        assert item["subject"] == "Trip on Friday"
        assert f"lang={digest.language}" in item["text"]


def test_a_sensitive_message_keeps_no_context_or_renderings_once_settled(app, families, sent_mail):
    school, people = families
    queue_email(
        "password_reset",
        [people["es"], people["ar"]],
        sensitive=True,
        name="Parent",
        hours=1,
        link="http://localhost/reset/SECRET-TOKEN",
    )
    db.session.commit()
    jobs.run_ready_jobs()
    assert len(sent_mail) == 2 and all("SECRET-TOKEN" in m.text for m in sent_mail)
    message = db.session.scalar(select(MailMessage).where(MailMessage.template == "password_reset"))
    db.session.refresh(message)
    assert message.render_context is None
    assert message.text_body is None and message.html_body is None
    assert _renderings(message.id) == {}


# -- machine translation of announcements --------------------------------------------------------


@pytest.fixture
def translations(monkeypatch):
    """app.translate.service.machine_translation answering "ok" for Spanish, None otherwise."""
    asked = []

    def machine_translation(message, locale):
        asked.append(locale)
        if locale != "es":
            return None
        return MessageTranslation(
            message_id=message.id,
            locale=locale,
            status="ok",
            subject="Excursión el viernes",
            body_html="<p>Trae un <strong>sombrero</strong>.</p>",
            body_text="Trae un sombrero.",
        )

    import app.translate.service as service

    monkeypatch.setattr(service, "machine_translation", machine_translation)
    return asked


def test_a_machine_translated_announcement_carries_the_label_and_the_original(
    app, families, sent_mail, translations
):
    school, people = families
    message = _announce(school, list(people.values()))
    jobs.run_ready_jobs()
    assert sorted(translations) == ["ar", "es"]  # never asked for the language it was written in
    by_to = {m.to: m for m in sent_mail}
    spanish = by_to["es@example.org"]
    assert spanish.subject == "Excursión el viernes"
    html = spanish.html
    label = "Traducción automática (idioma original: inglés). El mensaje original está abajo."
    assert f'<a href="#original" style="color:#1d4ed8;">{label}</a>' in html
    original = html.index('<div id="original" lang="en" dir="ltr">')
    translated = html.index("Trae un <strong>sombrero</strong>.")
    assert translated < original < html.index("Bring a <strong>hat</strong>.")
    text = spanish.text
    assert text.index(label) < text.index("Trae un sombrero.") < text.index("Bring a hat.")
    renderings = _renderings(message.id)
    assert renderings["es"].machine_translated
    assert not renderings["ar"].machine_translated and not renderings["en"].machine_translated
    assert 'id="original"' not in by_to["ar@example.org"].html  # no answer: the original only
    assert by_to["ar@example.org"].subject == "Trip on Friday"


def test_the_claim_outlasts_the_translation_service(app, families, monkeypatch, clock):
    school, people = families
    app.config.update(TRANSLATE_URL="http://127.0.0.1:1", TRANSLATE_TIMEOUT=30.0)
    message = _announce(school, [people["es"], people["ar"]])
    seen = []
    asked = []

    def watching(message, locale):
        """Reads the claim from another connection while the service is being asked."""
        with db.engine.connect() as other:
            leases = other.execute(
                select(MailDelivery.lease_until).where(
                    MailDelivery.message_id == message.id, MailDelivery.status == DeliveryStatus.SENDING
                )
            ).scalars()
            seen.extend(lease - clock.now() for lease in leases)
        asked.append(locale)

    monkeypatch.setattr(rendering, "_machine_translation", watching)
    jobs.run_ready_jobs()
    assert sorted(asked) == ["ar", "es"]
    # The lease (10 s), the service's timeout for each of the two languages it may wait on, and
    # the provider call (its timeout + the lease) of the batch before the last.
    assert seen and min(seen) >= timedelta(seconds=10 + 2 * 30) + claims.call_lease()
    statuses = db.session.scalars(select(MailDelivery.status).where(MailDelivery.message_id == message.id))
    assert set(statuses) == {DeliveryStatus.SENT}


def test_with_the_translation_service_the_announcement_is_translated_once_per_language(
    app, families, sent_mail
):
    """End to end with the fake LibreTranslate (tests/fakes/libretranslate.py, package C's client)."""
    from tests.fakes import libretranslate as fakes

    school, people = families
    with fakes.FakeLibreTranslate() as service:
        app.config.update({**service.config(), "TRANSLATE_TIMEOUT": 2.0})
        message = _announce(school, list(people.values()))
        jobs.run_ready_jobs()
        assert fake_stats(service.base_url)["requests"] == 2  # es and ar, never en
    by_to = {m.to: m for m in sent_mail}
    assert by_to["es@example.org"].subject == "[es] Trip on Friday"
    assert "Traducción automática (idioma original: inglés)." in by_to["es@example.org"].html
    assert "[ar] Bring a" in by_to["ar@example.org"].html
    assert 'id="original" lang="en" dir="ltr"' in by_to["ar@example.org"].html
    assert 'id="original"' not in by_to["en@example.org"].html
    renderings = _renderings(message.id)
    assert renderings["es"].machine_translated and renderings["ar"].machine_translated
    assert not renderings["en"].machine_translated


# -- review fixes: no open write across a translation call, one language's fault, outages -------


def _open_write_elsewhere() -> str | None:
    """What another writer meets now: None if it may write, else why not (SQLite: locked; PostgreSQL:
    a connection idle in a transaction that has written, holding its rows)."""
    with db.engine.connect() as other:
        if other.dialect.name == "sqlite":
            other.exec_driver_sql("PRAGMA busy_timeout = 100")
            try:
                other.exec_driver_sql("BEGIN IMMEDIATE")
            except OperationalError as error:
                return str(error.orig)
            other.exec_driver_sql("ROLLBACK")
            return None
        idle = other.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%%'"
            " AND backend_xid IS NOT NULL"  # it has written: its rows stay locked until it ends
        ).scalar()
        return f"{idle} connection(s) idle in a transaction with writes" if idle else None


def test_no_write_is_left_open_while_the_translation_service_is_asked(app, families, sent_mail, monkeypatch):
    from app.translate.client import TranslateClient
    from tests.fakes import libretranslate as fakes

    school, people = families
    real = TranslateClient.translate
    seen = []

    def watched(self, texts, **options):
        """Look at the database from elsewhere while the call is being made."""
        seen.append((options["target"], db.session().in_transaction(), _open_write_elsewhere()))
        return real(self, texts, **options)

    monkeypatch.setattr(TranslateClient, "translate", watched)
    with fakes.FakeLibreTranslate() as service:
        app.config.update({**service.config(), "TRANSLATE_TIMEOUT": 2.0})
        message = _announce(school, list(people.values()))
        jobs.run_ready_jobs()
    assert sorted(target for target, _, _ in seen) == ["ar", "es"]
    assert [(in_transaction, blocked) for _, in_transaction, blocked in seen] == [(False, None)] * 2
    assert len(sent_mail) == 3
    assert all(r.machine_translated for code, r in _renderings(message.id).items() if code != "en")
    assert _open_write_elsewhere() is None  # each rendering and translation was committed


def test_the_digest_takes_no_write_before_asking_the_translation_service(
    app, families, sent_mail, monkeypatch
):
    from app.translate.client import TranslateClient
    from tests.fakes import libretranslate as fakes

    school, people = families
    for code in ("es", "ar"):
        db.session.add(
            MailPreference(
                user_id=people[code].id, category=Category.SCHOOL_ANNOUNCEMENTS, mode=DeliveryMode.DIGEST
            )
        )
    db.session.commit()
    _announce(school, [people["es"], people["ar"]])
    jobs.run_ready_jobs()  # both held for the digest, nothing translated yet
    real = TranslateClient.translate
    seen = []

    def watched(self, texts, **options):
        """Look at the database from elsewhere while the call is being made."""
        seen.append(_open_write_elsewhere())
        return real(self, texts, **options)

    monkeypatch.setattr(TranslateClient, "translate", watched)
    with fakes.FakeLibreTranslate() as service:
        app.config.update({**service.config(), "TRANSLATE_TIMEOUT": 2.0})
        assert send_digests() == {"digests": 2, "items": 2}
    assert seen == [None, None]
    digests = db.session.scalars(select(MailMessage).where(MailMessage.template == "digest")).all()
    subjects = {d.language: d.render_context["items"][0]["subject"] for d in digests}
    assert subjects == {"es": "[es] Trip on Friday", "ar": "[ar] Trip on Friday"}


def _catalogue_app(build_app, tmp_path, entries: dict[str, str]):
    """An app whose Spanish catalogue holds only ``entries`` (app/translations is not touched)."""
    catalog = Catalog(locale="es")
    for msgid, msgstr in entries.items():
        catalog.add(msgid, msgstr)
    folder = tmp_path / "es" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with open(folder / "messages.mo", "wb") as mo:
        write_mo(mo, catalog)
    return build_app(BABEL_TRANSLATION_DIRECTORIES=str(tmp_path))


@pytest.fixture
def broken_spanish_app(build_app, tmp_path, app):
    """Spanish whose greeting names a placeholder the template does not pass (a renamed %(name)s)."""
    cache = babel.domain_instance.cache
    cache.clear()
    yield _catalogue_app(build_app, tmp_path, {"Hello %(name)s,": "Hola %(nombre)s,"})
    cache.clear()


def test_one_languages_rendering_failure_sends_that_group_in_the_messages_language(
    broken_spanish_app, make_school, make_member, caplog
):
    with broken_spanish_app.app_context():
        school = make_school()
        people = []
        for code in ("es", "ar", "en"):
            user = make_member(school, email=f"{code}@example.org", name=f"Secret {code}").user
            user.language = code
            people.append(user)
        db.session.commit()
        with tenancy.bound(school.id):
            message = queue_email(
                "email_change_notice", people, category=Category.SCHOOL_ANNOUNCEMENTS, name="Secret Ana"
            )
            db.session.commit()
        jobs.run_ready_jobs()
        sent = {e.to: e for e in broken_spanish_app.extensions["mail_backend"].sent}
        assert sorted(sent) == ["ar@example.org", "en@example.org", "es@example.org"]  # each once
        assert '<html lang="en" dir="ltr">' in sent["es@example.org"].html  # the message's own language
        assert '<html lang="ar" dir="rtl">' in sent["ar@example.org"].html
        statuses = db.session.scalars(
            select(MailDelivery.status).where(MailDelivery.message_id == message.id)
        )
        assert set(statuses) == {DeliveryStatus.SENT}
        assert set(_renderings(message.id)) == {"en", "ar"}  # no Spanish one was kept
    failures = [r for r in caplog.records if r.name == "app.mail.rendering"]
    assert len(failures) == 1 and "KeyError" in failures[0].getMessage()
    assert "Secret" not in caplog.text and "example.org" not in caplog.text  # no personal data


def test_a_rendering_error_of_any_kind_falls_back_and_the_mail_goes_once(
    app, families, sent_mail, monkeypatch
):
    school, people = families
    real = rendering._render

    def failing(message, locale):
        """The translation client (or anything under it) raises what nobody foresaw."""
        if locale == "ar":
            raise RuntimeError("unexpected answer for parent ar@example.org")
        return real(message, locale)

    monkeypatch.setattr(rendering, "_render", failing)
    message = _announce(school, list(people.values()))
    jobs.run_ready_jobs()
    assert sorted(m.to for m in sent_mail) == ["ar@example.org", "en@example.org", "es@example.org"]
    by_to = {m.to: m for m in sent_mail}
    assert '<html lang="en" dir="ltr">' in by_to["ar@example.org"].html
    statuses = db.session.scalars(select(MailDelivery.status).where(MailDelivery.message_id == message.id))
    assert set(statuses) == {DeliveryStatus.SENT}


def test_a_temporary_translation_failure_is_asked_again_by_a_later_batch(app, families, sent_mail, clock):
    from tests.fakes import libretranslate as fakes

    school, people = families
    with fakes.FakeLibreTranslate() as service:
        app.config.update({**service.config(), "TRANSLATE_TIMEOUT": 2.0})
        service.queue_responses([(503, {"error": "Service Unavailable"})])
        message = _announce(school, [people["es"]])
        jobs.run_ready_jobs()
        (envelope,) = sent_mail
        assert envelope.subject == "Trip on Friday"  # the original went out at once
        assert "es" not in _renderings(message.id)  # not kept untranslated
        assert rendering_for(message, "es").machine_translated is False  # soon after: not asked again
        assert service.attempts == 1
        clock.shift(minutes=11)
        later = rendering_for(db.session.get(MailMessage, message.id), "es")
        assert later.machine_translated and later.subject == "[es] Trip on Friday"
        assert service.attempts == 2
    assert _renderings(message.id)["es"].machine_translated


def test_an_outage_costs_one_provider_call_and_one_retry_job_for_every_language(
    app, fake, mailgun, families, monkeypatch, clock
):
    school, people = families
    retries = []
    monkeypatch.setattr(jobs, "enqueue_in", lambda seconds, func, *args, **kw: retries.append((func, args)))
    fake.queue_responses([(429, {"message": "Too Many Requests"}, {"Retry-After": "30"})])
    message = _announce(school, list(people.values()))
    jobs.run_ready_jobs()
    assert fake.attempts == 1  # the first language's call failed: the others were not tried
    assert retries == [(send_message, (message.id,))]
    db.session.expire_all()
    rows = db.session.scalars(select(MailDelivery).where(MailDelivery.message_id == message.id)).all()
    assert {(d.status, d.batch_id, d.claimed_by is None or d.lease_until is None) for d in rows} == {
        (DeliveryStatus.PENDING, None, True)
    }
    assert {d.next_attempt_at for d in rows} == {clock.now() + timedelta(seconds=30)}  # due together
    clock.shift(seconds=31)
    assert send_message(message.id)["sent"] == 3  # the one retry sends every language
    assert fake.stats()["requests"] == 3


@pytest.mark.parametrize("languages", [("en",), ("en", "es", "ar")])
def test_sending_costs_the_same_queries_for_5_or_40_recipients(app, make_school, make_member, languages):
    """Committing between renderings and languages must not reload each row one query at a time."""
    from app.mail.jobs import send_message
    from tests.conftest import count_queries

    def statements_for(size: int) -> int:
        school = make_school()
        users = []
        for n in range(size):
            user = make_member(school).user
            user.language = languages[n % len(languages)]
            users.append(user)
        db.session.commit()
        message = _announce(school, users)
        message_id = message.id
        db.session.expire_all()
        with count_queries() as statements:
            send_message(message_id)
        assert (
            db.session.scalar(
                select(func.count())
                .select_from(MailDelivery)
                .where(MailDelivery.message_id == message_id, MailDelivery.status == DeliveryStatus.SENT)
            )
            == size
        )
        import collections
        import os

        if os.environ.get("QDUMP"):
            for stmt, n in collections.Counter(" ".join(x.split())[:150] for x in statements).most_common(8):
                print(n, stmt)
        return len(statements)

    statements_for(3)  # warm-up: the first send fills caches (catalogues, templates)
    assert statements_for(40) == statements_for(5)
