"""Machine translation of announcements against a fake LibreTranslate (a real HTTP server on loopback).

Asked once per message and language and kept; a refusal (400, a refused key) is kept for good,
any other failure (500, 429, a timeout) for a while (its Retry-After, else ten minutes), so later
batches neither wait nor ask again meanwhile, and the caller sends the original.
What comes back is sanitised as our own Markdown is. Nothing here may reach a real service.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

import pytest
from sqlalchemy import func, select

from app import tenancy
from app.extensions import db
from app.models import Category, MailMessage, MessageTranslation, Role
from app.translate import machine_translation
from app.translate.client import TranslateClient, TranslateFailure
from app.translate.service import html_to_text
from config import ConfigError, ProductionConfig
from tests.conftest import fake_process, fake_stats, sign_in
from tests.fakes.libretranslate import FakeLibreTranslate, fake_translation

pytestmark = pytest.mark.usefixtures("loopback_only")  # nothing may reach a real service

BODY = "Hello families,\n\n**Bring** a *coat* on Friday.\n\n- boots\n- hat\n"
KEY = "lt-secret-key-7f3a9c1d"


@pytest.fixture
def fake():
    with FakeLibreTranslate() as server:
        yield server


@pytest.fixture
def keyed():
    with FakeLibreTranslate(api_key=KEY) as server:
        yield server


def _configure(app, fake, **overrides):
    """Point the app at the fake (a short timeout, so a hanging service costs little here)."""
    app.config.update({**fake.config(), "TRANSLATE_TIMEOUT": 2.0, **overrides})


def _message(language="en", subject="Coats & boots on Friday", body=BODY) -> MailMessage:
    """A committed platform announcement (no school: the service does not care whose it is)."""
    message = MailMessage(
        category=Category.SCHOOL_ANNOUNCEMENTS,
        template="announcement",
        subject=subject,
        text_body=body,
        html_body="<p>stored</p>",
        source_markdown=body,
        language=language,
    )
    db.session.add(message)
    db.session.commit()
    return message


def _rows(message_id: int) -> list[MessageTranslation]:
    db.session.expire_all()
    query = select(MessageTranslation).where(MessageTranslation.message_id == message_id)
    return list(db.session.scalars(query.order_by(MessageTranslation.id)))


# --- translating and keeping -----------------------------------------------------------------


def test_a_translation_is_asked_once_in_one_call_and_kept_for_every_later_batch(app, fake):
    _configure(app, fake)
    message = _message()

    first = machine_translation(message, "es")
    db.session.commit()
    assert first is not None and first.status == "ok"
    assert first.subject == "[es] Coats & boots on Friday"  # escaped for the HTML call, plain again
    assert "<strong>[es] Bring</strong>" in first.body_html and "<li>[es] boots</li>" in first.body_html
    assert first.body_text.splitlines()[0] == "[es] Hello families,"
    assert "- [es] boots" in first.body_text

    [request] = fake.accepted()  # one HTTP call: subject and body together, as HTML
    assert request.json["source"] == "en" and request.json["target"] == "es"
    assert request.json["format"] == "html"
    assert request.texts[0] == "Coats &amp; boots on Friday"
    assert "<strong>Bring</strong>" in request.texts[1]
    assert "api_key" not in request.json  # no key configured: none sent

    # The next batch, or another worker with its own session, reads the kept row.
    message_id, kept_id, kept_html = message.id, first.id, first.body_html
    db.session.expunge_all()
    again = machine_translation(db.session.get(MailMessage, message_id), "es")
    assert again is not None and (again.id, again.body_html) == (kept_id, kept_html)
    assert fake.attempts == 1
    assert [(row.locale, row.status) for row in _rows(message_id)] == [("es", "ok")]


def test_each_language_is_asked_once(app, fake):
    _configure(app, fake)
    message = _message()
    for _ in range(2):
        assert machine_translation(message, "es").subject.startswith("[es] ")
        assert machine_translation(message, "ar").subject.startswith("[ar] ")
    assert sorted(r.json["target"] for r in fake.accepted()) == ["ar", "es"]


def test_the_message_language_is_the_source(app, fake):
    _configure(app, fake)
    message = _message(language="es", subject="Abrigos el viernes")
    translation = machine_translation(message, "en")
    assert translation.subject == "[en] Abrigos el viernes"
    assert fake.accepted()[0].json["source"] == "es"


def test_the_same_language_is_not_translated(app, fake):
    _configure(app, fake)
    assert machine_translation(_message(language="es"), "es") is None
    assert fake.attempts == 0
    assert db.session.scalar(select(func.count(MessageTranslation.id))) == 0


def test_without_translate_url_nothing_is_translated(app, fake):
    app.config.update(TRANSLATE_URL=None)
    message = _message()
    assert machine_translation(message, "es") is None
    assert fake.attempts == 0 and _rows(message.id) == []


def test_a_message_with_nothing_to_translate_is_left_alone(app, fake):
    _configure(app, fake)
    message = _message(body="")
    message.source_markdown = None
    db.session.commit()
    assert machine_translation(message, "es") is None
    assert fake.attempts == 0


def test_another_workers_row_wins_the_race(app, fake):
    """Both asked; the second insert finds the first's row and returns it (no IntegrityError)."""
    _configure(app, fake)
    message = _message()
    with tenancy.unscoped():
        db.session.add(
            MessageTranslation(
                message_id=message.id, locale="es", status="ok", subject="theirs", body_html="<p>x</p>"
            )
        )
        db.session.commit()
    from app.translate import service

    kept = service._kept
    calls = {"n": 0}

    def not_seen_at_first(message_id, locale):
        """The first look finds nothing, as if the other worker's row were not committed yet."""
        calls["n"] += 1
        return None if calls["n"] == 1 else kept(message_id, locale)

    service._kept = not_seen_at_first
    try:
        won = machine_translation(message, "es")
    finally:
        service._kept = kept
    assert won is not None and won.subject == "theirs"
    assert len(_rows(message.id)) == 1 and fake.attempts == 1


# --- failures: kept (for good, or for a while), never retried in the same send, never raised ------


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ((400, {"error": "es is not supported"}), "refused the request (400): es is not supported"),
        ((403, {"error": "Invalid API key"}), "refused the API key (403)"),
    ],
)
def test_a_refusal_is_kept_for_good(app, fake, clock, script, reason):
    _configure(app, fake)
    message = _message()
    fake.queue_responses([script])

    assert machine_translation(message, "es") is None
    clock.shift(days=3)
    assert machine_translation(message, "es") is None  # any later batch: no second call
    assert fake.attempts == 1
    [row] = _rows(message.id)
    assert row.status == "failed" and reason in row.error
    assert row.subject is None and row.body_html is None


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ((500, {"error": "Internal Server Error"}), "error (500)"),
        ((503, {"error": "Service Unavailable"}), "error (503)"),
        ((200, {"translatedText": ["only one"]}), "without the translated texts"),
        ((200, "not json at all"), "without the translated texts"),
    ],
)
def test_a_temporary_failure_is_kept_for_ten_minutes_then_asked_again(app, fake, clock, script, reason):
    _configure(app, fake)
    message = _message()
    fake.queue_responses([script])

    assert machine_translation(message, "es") is None
    assert machine_translation(message, "es") is None  # the next batch: no second call
    [row] = _rows(message.id)
    assert row.status == "retry" and reason in row.error
    assert row.subject is None and row.body_html is None
    clock.shift(minutes=9)
    assert machine_translation(message, "es") is None
    assert fake.attempts == 1
    clock.shift(minutes=2)  # a later batch asks again, and the answer replaces the failure
    again = machine_translation(message, "es")
    assert again is not None and again.subject == "[es] Coats & boots on Friday"
    assert fake.attempts == 2
    assert [(r.locale, r.status) for r in _rows(message.id)] == [("es", "ok")]


def test_a_rate_limit_is_kept_until_its_retry_after(app, fake, clock):
    _configure(app, fake)
    message = _message()
    limited = (429, {"error": "Too many request limits violations"}, {"Retry-After": "90"})
    fake.queue_responses([limited, limited])

    assert machine_translation(message, "es") is None
    clock.shift(seconds=89)
    assert machine_translation(message, "es") is None and fake.attempts == 1
    clock.shift(seconds=2)
    assert machine_translation(message, "es") is None and fake.attempts == 2  # asked, limited again
    [row] = _rows(message.id)  # the new failure took the lapsed one's place
    assert row.status == "retry" and "rate limit" in row.error
    clock.shift(seconds=91)
    assert machine_translation(message, "es") is not None and fake.attempts == 3


@pytest.mark.parametrize(("retry_after", "kept_for"), [("0", 60), ("5", 60), ("99999999", 3600)])
def test_a_retry_after_is_taken_within_a_minute_and_an_hour(app, fake, clock, retry_after, kept_for):
    _configure(app, fake)
    message = _message()
    fake.queue_responses([(429, {"error": "slow down"}, {"Retry-After": retry_after})])
    assert machine_translation(message, "es") is None
    clock.shift(seconds=kept_for - 1)
    assert machine_translation(message, "es") is None and fake.attempts == 1  # not every batch
    clock.shift(seconds=2)
    assert machine_translation(message, "es") is not None and fake.attempts == 2  # not never


def test_a_translation_call_has_no_write_of_the_caller_open(app, fake, monkeypatch):
    """The caller's pending writes are committed before the call, the answer right after it."""
    _configure(app, fake)
    message = _message()
    real = TranslateClient.translate
    during = []

    def watched(self, texts, **options):
        during.append(db.session().in_transaction())
        return real(self, texts, **options)

    monkeypatch.setattr(TranslateClient, "translate", watched)
    message.subject = "Coats on Friday"  # a pending write of the caller's
    db.session.flush()
    assert machine_translation(message, "es").subject == "[es] Coats on Friday"
    assert during == [False]
    db.session.rollback()  # nothing is lost: both were committed
    assert [(r.locale, r.status) for r in _rows(message.id)] == [("es", "ok")]
    assert db.session.get(MailMessage, message.id).subject == "Coats on Friday"


def test_a_slow_service_costs_one_timeout_then_nothing(app, fake):
    _configure(app, fake, TRANSLATE_TIMEOUT=0.5)
    message = _message()
    fake.queue_responses([{"delay": 5}])  # answers, but long after the client gave up

    started = time.monotonic()
    assert machine_translation(message, "es") is None
    assert time.monotonic() - started < 3
    started = time.monotonic()
    assert machine_translation(message, "es") is None
    assert time.monotonic() - started < 0.5
    [row] = _rows(message.id)
    assert row.status == "retry" and row.error.endswith("timed out")
    assert fake.attempts == 1


def test_an_unreachable_service_is_a_failure_kept_for_a_while(app):
    app.config.update(TRANSLATE_URL="http://127.0.0.1:1", TRANSLATE_TIMEOUT=2.0)  # nothing listens
    message = _message()
    assert machine_translation(message, "es") is None
    [row] = _rows(message.id)
    assert row.status == "retry" and "could not be reached: connection refused" in row.error


def test_a_wrong_setting_turns_translation_off_without_raising(app, caplog):
    app.config.update(TRANSLATE_URL="http://translate.example.org")  # plain http off loopback
    message = _message()
    with caplog.at_level(logging.WARNING):
        assert machine_translation(message, "es") is None
    assert "TRANSLATE_URL must use https" in caplog.text
    assert _rows(message.id) == []  # not this message's fault: nothing kept against it


# --- the API key -----------------------------------------------------------------------------


def test_the_api_key_is_sent_when_configured_and_never_logged(app, keyed, caplog):
    _configure(app, keyed)
    message = _message()
    with caplog.at_level(logging.DEBUG):
        translation = machine_translation(message, "es")
    assert translation is not None
    assert keyed.accepted()[0].json["api_key"] == KEY
    assert KEY not in caplog.text
    assert KEY not in repr(TranslateClient.from_config(app.config))


def test_a_refused_key_is_a_failure_that_names_the_setting_not_the_key(app, keyed, caplog):
    _configure(app, keyed, TRANSLATE_API_KEY="lt-wrong-key-000")
    message = _message()
    with caplog.at_level(logging.DEBUG):
        assert machine_translation(message, "es") is None
    [row] = _rows(message.id)
    assert row.status == "failed" and "403" in row.error and "TRANSLATE_API_KEY" in row.error
    assert "lt-wrong-key-000" not in caplog.text and "lt-wrong-key-000" not in row.error
    assert keyed.accepted() == [] and keyed.attempts == 1


def test_a_service_quoting_the_key_back_has_it_scrubbed(app, keyed, caplog):
    _configure(app, keyed)
    keyed.queue_responses([(400, {"error": f"api_key {KEY} is not valid for this request"})])
    message = _message()
    with caplog.at_level(logging.DEBUG):
        assert machine_translation(message, "es") is None
    [row] = _rows(message.id)
    assert KEY not in row.error and "[key]" in row.error
    assert KEY not in caplog.text


# --- what comes back is sanitised ----------------------------------------------------------------


def test_markup_the_service_returns_is_sanitised_as_our_markdown_is(app, fake):
    _configure(app, fake)
    hostile = (
        '<p onclick="steal()">Hola <strong style="color:red">familias</strong></p>'
        "<script>alert(1)</script><img src=x onerror=alert(2)>"
        '<a href="javascript:alert(3)">aquí</a> <a href="https://school.example.org/x">enlace</a>'
        "<iframe src=https://evil.example></iframe><h1>Grande</h1>"
    )
    fake.queue_responses([(200, {"translatedText": ['Hola <b onclick="x()">todos</b>', hostile]})])
    translation = machine_translation(_message(), "es")

    assert translation is not None and translation.status == "ok"
    assert translation.subject == "Hola todos"
    html = translation.body_html.lower()
    for forbidden in ("<script", "onclick", "onerror", "<img", "javascript:", "<iframe", "style=", "<h1"):
        assert forbidden not in html, forbidden
    assert "<strong>familias</strong>" in translation.body_html
    assert 'href="https://school.example.org/x"' in translation.body_html
    assert 'rel="noopener noreferrer"' in translation.body_html
    assert "alert" not in translation.body_text and "familias" in translation.body_text


def test_the_text_body_follows_the_html():
    html = (
        '<h2>Hoy</h2><p>Uno <strong>dos</strong> <a href="https://x.org">enlace</a></p>'
        "<ol><li>a</li><li>b</li></ol><p>línea<br>otra</p>"
    )
    assert html_to_text(html) == "Hoy\n\nUno dos enlace (https://x.org)\n\n1. a\n2. b\n\nlínea\notra"


# --- the client and the fake on their own ----------------------------------------------------------


def test_the_client_speaks_libretranslate(fake):
    client = TranslateClient(fake.base_url, timeout=2)
    assert client.translate(["Hello", "Bye"], source="en", target="es") == ["[es] Hello", "[es] Bye"]
    assert client.translate(["<p>Hi <em>there</em></p>"], source="en", target="ar", format="html") == [
        "<p>[ar] Hi <em>[ar] there</em></p>"
    ]
    languages = client.languages()
    assert "es" in languages["en"] and "en" not in languages["en"]
    assert fake_stats(fake.base_url) == {"requests": 2, "attempts": 2, "languages": 1}


def test_the_client_refuses_plain_http_off_loopback_and_raises_a_typed_failure(fake):
    with pytest.raises(RuntimeError, match="must use https"):
        TranslateClient("http://translate.example.org")
    with pytest.raises(RuntimeError, match="http"):
        TranslateClient("ftp://translate.example.org")
    fake.queue_responses([(500, {"error": "boom"})])
    with pytest.raises(TranslateFailure) as failed:
        TranslateClient(fake.base_url, timeout=2).translate(["x"], source="en", target="es")
    assert failed.value.status == 500


def test_the_fake_marks_text_between_tags_only():
    assert fake_translation("<p>a <b>b</b></p>\n<ul>\n<li>c</li>\n</ul>", "es", "html") == (
        "<p>[es] a <b>[es] b</b></p>\n<ul>\n<li>[es] c</li>\n</ul>"
    )


def test_the_fake_checks_requests_as_libretranslate_does(keyed):
    client = TranslateClient(keyed.base_url, KEY, timeout=2)
    with pytest.raises(TranslateFailure, match=r"\(400\): xx is not supported"):
        client.translate(["x"], source="en", target="xx")
    with pytest.raises(TranslateFailure, match="403"):
        TranslateClient(keyed.base_url, timeout=2).translate(["x"], source="en", target="es")


def test_the_fake_runs_as_its_own_process():
    with fake_process("tests.fakes.libretranslate", "--api-key", KEY) as base_url:
        client = TranslateClient(base_url, KEY, timeout=5)
        assert client.translate(["Hi"], source="en", target="es") == ["[es] Hi"]
        assert fake_stats(base_url)["requests"] == 1


# --- production configuration --------------------------------------------------------------------

GOOD = {
    "APP_ENV": "production",
    "SECRET_KEY": "production-like-secret-for-this-test-0123456789",
    "PUBLIC_URL": "https://school.example.org",
    "MAIL_BACKEND": "mailgun",
    "MAILGUN_API_KEY": "key-test",
    "MAILGUN_DOMAIN": "mg.example.org",
    "MAIL_FROM": "Maple School <no-reply@mg.example.org>",
    "REDIS_URL": "redis://127.0.0.1:6379/15",  # nothing here connects to it
}


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        (None, None),
        ("https://translate.example.org", None),
        ("http://127.0.0.1:5000", None),
        ("http://lt:s3cret@translate.example.org", "TRANSLATE_URL must use https"),
        ("translate.example.org", "TRANSLATE_URL must be the translation service's https:// address"),
        ("https://translate.example.org", "TRANSLATE_TIMEOUT must be a positive number"),
    ],
)
def test_production_wants_https_for_translate_url(monkeypatch, url, refused):
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TRANSLATE_TIMEOUT", "0" if refused and "TIMEOUT" in refused else "10")
    if url is None:
        monkeypatch.delenv("TRANSLATE_URL", raising=False)
    else:
        monkeypatch.setenv("TRANSLATE_URL", url)
    if refused is None:
        assert url == ProductionConfig().TRANSLATE_URL
        return
    with pytest.raises(ConfigError) as problem:
        ProductionConfig()
    [line] = str(problem.value).splitlines()
    assert refused in line and "s3cret" not in line  # the URL may hold credentials: not echoed


# --- the compose form's "Written in" -------------------------------------------------------------


@pytest.fixture
def admin(client, make_school, make_member):
    school = make_school(name="Maple School")
    make_member(school, role=Role.ADMIN, email="admin@maple.org")
    make_member(school, email="parent@maple.org")
    sign_in(client, "admin@maple.org")
    return school


def _messages() -> list[MailMessage]:
    db.session.expire_all()
    with tenancy.unscoped():
        return list(db.session.scalars(select(MailMessage).order_by(MailMessage.id)))


def _compose(client, **extra):
    data = {"subject": "Coats on Friday", "body": BODY, "action": "send", **extra}
    return client.form("/messages/new?kind=school", data)


def test_the_compose_form_asks_which_language_it_is_written_in(client, admin):
    page = client.get("/messages/new?kind=school").get_data(as_text=True)
    assert "Written in" in page
    assert '<option lang="es" value="es">Español</option>' in page
    assert '<option lang="en" selected value="en">English</option>' in page
    spanish = client.get("/messages/new?kind=school&lang=es").get_data(as_text=True)
    assert '<option lang="es" selected value="es">Español</option>' in spanish


def test_the_chosen_language_is_stored_on_the_message(client, admin, sent_mail):
    assert _compose(client, language="es").status_code == 303
    [message] = _messages()
    assert message.language == "es"


def test_without_a_choice_the_message_is_in_the_page_language(client, admin, sent_mail):
    assert _compose(client).status_code == 303
    [message] = _messages()
    assert message.language == "en"


def test_an_unknown_language_is_refused_next_to_the_field(client, admin, sent_mail):
    response = _compose(client, language="xx")
    assert response.status_code == 400
    assert 'id="language-error"' in response.get_data(as_text=True)
    assert _messages() == [] and sent_mail == []


def test_the_fake_answers_bad_json_as_libretranslate(fake):
    request = urllib.request.Request(
        f"{fake.base_url}/translate", data=b"{", method="POST", headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(request, timeout=5)
    assert refused.value.code == 400 and "error" in json.loads(refused.value.read())
