"""The Mailgun backend against a fake Mailgun: a real HTTP server on loopback (no Redis needed).

Nothing here may reach api.mailgun.net: an autouse guard refuses to resolve any host but
loopback, so a misrouted request fails loudly instead of leaving the machine.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlencode

import pytest

from app import create_app
from app.extensions import db
from app.mail.backends import Batch, OutcomeUnknown, PermanentFailure, Recipient, TemporaryFailure
from app.mail.mailgun import MailgunBackend
from app.providers import retry_after_seconds as _retry_after
from tests.conftest import fake_process, fake_stats, make_config, post_to_fake
from tests.fakes.mailgun import FakeMailgun

KEY = "key-test-9f8e7d6c5b4a39281706"
DOMAIN = "mg.school.example"
CLOSED_URL = "http://127.0.0.1:1"  # nothing listens on port 1: connections are refused
UNSUBSCRIBE = "<%recipient.unsubscribe_url%>"
ONE_CLICK = "List-Unsubscribe=One-Click"
pytestmark = pytest.mark.usefixtures("loopback_only")  # nothing may reach the real Mailgun


@pytest.fixture
def fake():
    with FakeMailgun(api_key=KEY, domain=DOMAIN) as server:
        yield server


def _backend(fake_or_url, **overrides) -> MailgunBackend:
    base = fake_or_url if isinstance(fake_or_url, str) else fake_or_url.base_url
    config = {"MAILGUN_API_KEY": KEY, "MAILGUN_DOMAIN": DOMAIN, "MAILGUN_BASE_URL": base}
    config.update(overrides)
    return MailgunBackend.from_config(config)


@pytest.fixture
def backend(fake) -> MailgunBackend:
    return _backend(fake, MAILGUN_TIMEOUT=5)


def _email(n: int) -> str:
    return f"parent{n:05d}@example.org"


def _link(n: int) -> str:
    return f"https://school.example/unsubscribe/tok{n:05d}x"


def _recipients(count: int, start: int = 1) -> list[Recipient]:
    return [
        Recipient(
            delivery_id=n, email=_email(n), variables={"unsubscribe_url": _link(n), "name": f"P{n:05d}"}
        )
        for n in range(start, start + count)
    ]


def _batch(recipients: list[Recipient], **changes) -> Batch:
    values = {
        "sender": "Join Our Class <no-reply@school.example>",
        "subject": "News for %recipient.name%",
        "text": "Hello %recipient.name%.\nUnsubscribe: %recipient.unsubscribe_url%\n",
        "html": '<p>Hello %recipient.name%. <a href="%recipient.unsubscribe_url%">Unsubscribe</a></p>',
        "tag": "class-news",
        "recipients": recipients,
        "headers": {"List-Unsubscribe": UNSUBSCRIBE, "List-Unsubscribe-Post": ONE_CLICK},
    }
    values.update(changes)
    return Batch(**values)


def _post(url: str, body: bytes, content_type: str, key: str = KEY) -> tuple[int, dict]:
    """POST straight to the fake (not through the backend), returning status and JSON body."""
    status, answer, _headers = post_to_fake(url, body, user="api", password=key, content_type=content_type)
    return status, answer


def _post_form(fake: FakeMailgun, fields, key: str = KEY, domain: str = DOMAIN) -> tuple[int, dict]:
    body = urlencode(fields, doseq=True).encode()
    url = f"{fake.base_url}/v3/{domain}/messages"
    return _post(url, body, "application/x-www-form-urlencoded", key)


# -- the request Mailgun receives ---------------------------------------------------------------


def test_request_shape_path_auth_and_form_fields(fake, backend):
    recipients = _recipients(3)
    ids = backend.send_batch(_batch(recipients))

    assert len(fake.requests) == 1
    request = fake.requests[0]
    assert request.path == f"/v3/{DOMAIN}/messages"
    expected_auth = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    assert request.headers["Authorization"] == expected_auth
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = request.fields
    assert fields["from"] == ["Join Our Class <no-reply@school.example>"]
    assert fields["to"] == [_email(1), _email(2), _email(3)]  # one field per recipient
    assert fields["subject"] == ["News for %recipient.name%"]
    assert "%recipient.unsubscribe_url%" in fields["text"][0]
    assert fields["html"][0].startswith("<p>Hello")
    variables = json.loads(fields["recipient-variables"][0])
    assert variables == {r.email: r.variables for r in recipients}
    assert variables[_email(2)]["unsubscribe_url"] == _link(2)
    assert fields["o:tag"] == ["class-news"]
    assert fields["o:tracking"] == fields["o:tracking-clicks"] == fields["o:tracking-opens"] == ["no"]
    assert fields["h:List-Unsubscribe"] == [UNSUBSCRIBE]
    assert fields["h:List-Unsubscribe-Post"] == [ONE_CLICK]
    assert "v:batch" not in fields  # only a batch with an id carries one
    assert ids == {1: request.message_id, 2: request.message_id, 3: request.message_id}
    assert request.message_id.startswith("<") and request.message_id.endswith(f"@{DOMAIN}>")


def test_each_recipient_gets_their_own_unsubscribe_link_in_body_and_headers(fake, backend):
    backend.send_batch(_batch(_recipients(2)))
    (message,) = fake.messages_for(_email(2))
    assert message.to == _email(2)
    assert message.subject == "News for P00002"
    assert _link(2) in message.text and _link(2) in message.html
    assert message.headers["List-Unsubscribe"] == f"<{_link(2)}>"
    assert message.headers["List-Unsubscribe-Post"] == ONE_CLICK
    assert message.tags == ["class-news"]


def test_html_is_left_out_when_none_and_recipient_variables_are_sent_even_when_empty(fake, backend):
    recipients = [Recipient(delivery_id=n, email=_email(n)) for n in (1, 2)]
    backend.send_batch(_batch(recipients, html=None, headers={}, text="Plain", subject="Plain"))
    fields = fake.requests[0].fields
    assert "html" not in fields
    assert json.loads(fields["recipient-variables"][0]) == {_email(1): {}, _email(2): {}}
    assert [m.to for m in fake.messages_for(_email(1))] == [_email(1)]


def test_tracking_is_on_only_when_configured(fake):
    _backend(fake, MAILGUN_TRACKING="true").send_batch(_batch(_recipients(1)))
    fields = fake.requests[0].fields
    assert fields["o:tracking"] == fields["o:tracking-clicks"] == fields["o:tracking-opens"] == ["yes"]


def test_2500_recipients_in_batches_of_max_batch_make_three_requests(fake, backend):
    everyone = _recipients(2500)
    ids: dict[int, str] = {}
    for start in range(0, len(everyone), backend.max_batch):
        ids |= backend.send_batch(_batch(everyone[start : start + backend.max_batch]))

    assert backend.max_batch == 1000
    assert [len(r.fields["to"]) for r in fake.requests] == [1000, 1000, 500]
    assert sorted(ids) == list(range(1, 2501))
    assert len(set(ids.values())) == 3
    assert sorted(fake.recipients()) == sorted(r.email for r in everyone)
    (last,) = fake.messages_for(_email(2500))
    assert _link(2500) in last.text


def test_backend_refuses_more_than_max_batch_and_sends_nothing_for_an_empty_batch(fake, backend):
    with pytest.raises(ValueError, match="at most 1000"):
        backend.send_batch(_batch(_recipients(1001)))
    assert backend.send_batch(_batch([])) == {}
    assert fake.attempts == 0


def test_nobody_sees_another_persons_address_or_link(fake, backend):
    recipients = _recipients(40)
    backend.send_batch(_batch(recipients))
    for me in recipients:
        (message,) = fake.messages_for(me.email)
        seen = " ".join([message.to, message.subject, message.text, message.html, *message.headers.values()])
        assert me.email in message.to and _link(me.delivery_id) in seen
        for other in recipients:
            if other is not me:
                assert other.email not in seen
                assert other.variables["unsubscribe_url"] not in seen


def test_the_fake_shows_everyone_every_address_without_recipient_variables(fake):
    """So the privacy test above means something: the fake models Mailgun's batch behaviour."""
    fields = [("from", "a@school.example"), ("to", _email(1)), ("to", _email(2))]
    fields += [("subject", "Hi"), ("text", "Hello")]
    assert _post_form(fake, fields)[0] == 200
    (message,) = fake.messages_for(_email(1))
    assert _email(2) in message.to


def test_a_repeated_address_is_sent_once_and_bad_batch_data_fails_for_good_without_a_request(fake, backend):
    twice = [Recipient(1, _email(1), {"u": "a"}), Recipient(2, _email(1), {"u": "a"})]
    ids = backend.send_batch(_batch(twice))
    assert fake.requests[0].fields["to"] == [_email(1)]
    assert set(ids) == {1, 2}
    bad_batches = [
        _batch([Recipient(1, _email(1), {"u": "a"}), Recipient(2, _email(1), {"u": "b"})]),
        _batch([Recipient(3, f"{_email(1)}, {_email(2)}")]),  # Mailgun would read two addresses
        _batch([Recipient(4, "")]),
        _batch(_recipients(1), headers={"X-Bad": "a\r\nBcc: someone@example.org"}),
    ]
    for bad in bad_batches:
        # PermanentFailure, not ValueError: the send job handles it and never retries it in a loop.
        with pytest.raises(PermanentFailure) as refused:
            backend.send_batch(bad)
        assert "example.org" not in str(refused.value)
    assert fake.attempts == 1


# -- failures -----------------------------------------------------------------------------------


def test_server_error_is_temporary_and_the_next_attempt_goes_through(fake, backend):
    fake.queue_responses([(500, {"message": "Internal Server Error"})])
    with pytest.raises(OutcomeUnknown) as failed:  # Mailgun has queued batches it answered 5xx to
        backend.send_batch(_batch(_recipients(2)))
    assert "500" in failed.value.reason
    assert failed.value.retry_after is None
    assert fake.requests == []
    assert set(backend.send_batch(_batch(_recipients(2)))) == {1, 2}
    assert fake.attempts == 2


def test_rate_limit_is_temporary_with_retry_after_seconds(fake, backend):
    fake.queue_responses([(429, {"message": "Too Many Requests"}, {"Retry-After": "7"})])
    with pytest.raises(TemporaryFailure) as failed:
        backend.send_batch(_batch(_recipients(1)))
    assert failed.value.retry_after == 7
    assert "429" in failed.value.reason
    assert not isinstance(failed.value, OutcomeUnknown)  # refused: Mailgun did not take it


def test_retry_after_as_an_http_date_or_nonsense(clock):
    soon = format_datetime(clock.now() + timedelta(seconds=30), usegmt=True)
    assert _retry_after(soon) == 30
    past = format_datetime(clock.now() - timedelta(hours=1), usegmt=True)
    assert _retry_after(past) == 0
    assert _retry_after("soon-ish") is None
    assert _retry_after(None) is None
    assert _retry_after("-5") == 0


def test_bad_request_is_permanent_with_mailguns_message(fake, backend):
    fake.queue_responses(
        [(400, {"message": "'from' parameter is not a valid address. please check documentation"})]
    )
    with pytest.raises(PermanentFailure) as failed:
        backend.send_batch(_batch(_recipients(1)))
    assert "400" in failed.value.reason
    assert "'from' parameter is not a valid address" in failed.value.reason


def test_a_long_refusal_is_truncated_and_keeps_no_address(fake, backend):
    fake.queue_responses([(400, {"message": f"bad recipient {_email(1)} " + "x" * 1000})])
    with pytest.raises(PermanentFailure) as failed:
        backend.send_batch(_batch(_recipients(1)))
    assert len(failed.value.reason) <= 300
    assert _email(1) not in failed.value.reason and "[address]" in failed.value.reason


@pytest.mark.parametrize("status", [401, 404, 413])
def test_other_client_errors_are_permanent(fake, backend, status):
    fake.queue_responses([(status, None)])  # no JSON body at all
    with pytest.raises(PermanentFailure, match=str(status)):
        backend.send_batch(_batch(_recipients(1)))


def test_wrong_key_is_permanent(fake):
    wrong = MailgunBackend("key-wrong", DOMAIN, base_url=fake.base_url, timeout=5)
    with pytest.raises(PermanentFailure) as failed:
        wrong.send_batch(_batch(_recipients(1)))
    assert "401" in failed.value.reason and "Forbidden" in failed.value.reason
    assert fake.requests == []


def test_unknown_domain_is_permanent(fake):
    elsewhere = MailgunBackend(KEY, "mg.other.example", base_url=fake.base_url, timeout=5)
    with pytest.raises(PermanentFailure, match="404"):
        elsewhere.send_batch(_batch(_recipients(1)))


def test_closed_port_is_temporary_and_known_not_taken():
    with pytest.raises(TemporaryFailure, match="connection refused") as failed:
        _backend(CLOSED_URL, MAILGUN_TIMEOUT=2).send_batch(_batch(_recipients(1)))
    assert not isinstance(failed.value, OutcomeUnknown)  # the request never got there


def test_a_timeout_waiting_for_the_answer_leaves_the_outcome_unknown(fake):
    fake.queue_responses([{"delay": 3, "status": 200, "body": {"id": "<late@x>", "message": "Queued"}}])
    slow = _backend(fake, MAILGUN_TIMEOUT=0.5)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown, match="timed out"):
        slow.send_batch(_batch(_recipients(1)))
    assert time.monotonic() - started < 2.5


@pytest.fixture
def dribbling_url():
    """A loopback server that reads the request, then answers one byte every 0.2 s (for 8 s)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in itertools.islice(itertools.cycle(b"HTTP/1.1 200 OK\r\nX-Slow: a"), 40):
                if stop.wait(0.2):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return  # the client hung up: what the deadline is for

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()
    thread.join(timeout=5)


def test_a_call_ends_by_its_timeout_even_when_the_answer_trickles_in(dribbling_url):
    """The timeout bounds the whole call, not each socket read: a server sending a byte every
    0.2 s never trips a 1 s per-read timeout, but the claims count on the call ending by then."""
    slow = _backend(dribbling_url, MAILGUN_TIMEOUT=1)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknown, match="timed out"):
        slow.send_batch(_batch(_recipients(1)))
    assert 0.9 < time.monotonic() - started < 2.5


def test_accepted_then_dropped_leaves_the_outcome_unknown_and_events_tell(fake, backend):
    fake.queue_responses([{"drop": True}])
    recipients = _recipients(3)
    with pytest.raises(OutcomeUnknown, match="connection closed without a response"):
        backend.send_batch(_batch(recipients, batch_id="b-dropped"))
    [request] = fake.accepted()  # Mailgun has it, though nobody heard
    assert fake.stats()["dropped"] == 1
    accepted = backend.accepted("b-dropped", datetime.now(UTC))
    assert accepted == {r.email: request.message_id for r in recipients}


def test_a_200_without_a_message_id_leaves_the_outcome_unknown(fake, backend):
    fake.queue_responses([(200, {"message": "Queued. Thank you."})])
    with pytest.raises(OutcomeUnknown, match="without a message id"):
        backend.send_batch(_batch(_recipients(1)))


def test_the_key_and_addresses_never_appear_in_failures_or_logs(fake, backend, caplog):
    recipients = _recipients(2)
    fake.queue_responses(
        [
            (500, {"message": f"boom {KEY} {_email(1)}"}),
            (429, {"message": _email(2)}, {"Retry-After": "3"}),
            (400, {"message": f"invalid: {_email(1)} with key {KEY}"}),
            (401, {"message": f"Forbidden {KEY}"}),
            (302, None, {"Location": "http://127.0.0.1:1/elsewhere"}),
        ]
    )
    failures: list[Exception] = []
    with caplog.at_level(logging.DEBUG, logger="app.mail.mailgun"):
        for _ in range(5):
            with pytest.raises((TemporaryFailure, PermanentFailure)) as failed:
                backend.send_batch(_batch(recipients))
            failures.append(failed.value)
        for other in (
            _backend(CLOSED_URL, MAILGUN_TIMEOUT=2),
            MailgunBackend("key-wrong", DOMAIN, base_url=fake.base_url),
        ):
            with pytest.raises((TemporaryFailure, PermanentFailure)) as failed:
                other.send_batch(_batch(recipients))
            failures.append(failed.value)
    assert len(failures) == 7
    said = [str(f) for f in failures] + [repr(f) for f in failures] + [f.reason for f in failures]
    said += [caplog.text, repr(backend)]
    for text in said:
        assert KEY not in text
        assert "example.org" not in text
    assert "redirect" in failures[4].reason


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "url"),
    [
        (None, "https://api.mailgun.net"),
        ("us", "https://api.mailgun.net"),
        ("EU", "https://api.eu.mailgun.net"),
    ],
)
def test_from_config_picks_the_region_url(region, url):
    config = {"MAILGUN_API_KEY": KEY, "MAILGUN_DOMAIN": DOMAIN, "MAILGUN_REGION": region}
    chosen = MailgunBackend.from_config(config)
    assert chosen.base_url == url
    assert chosen.url == f"{url}/v3/{DOMAIN}/messages"
    assert chosen.timeout == 30 and chosen.tracking is False
    assert chosen.events_lag == 300 and chosen.events_url == f"{url}/v3/{DOMAIN}/events"


def test_from_config_base_url_overrides_region_and_reads_timeout():
    chosen = MailgunBackend.from_config(
        {
            "MAILGUN_API_KEY": KEY,
            "MAILGUN_DOMAIN": DOMAIN,
            "MAILGUN_REGION": "eu",
            "MAILGUN_BASE_URL": "http://127.0.0.1:9/",
            "MAILGUN_TIMEOUT": "2.5",
        }
    )
    assert chosen.base_url == "http://127.0.0.1:9"
    assert chosen.timeout == 2.5


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ({"MAILGUN_DOMAIN": DOMAIN}, "MAILGUN_API_KEY"),
        ({"MAILGUN_API_KEY": KEY}, "MAILGUN_DOMAIN"),
        ({"MAILGUN_API_KEY": "", "MAILGUN_DOMAIN": ""}, "MAILGUN_API_KEY and MAILGUN_DOMAIN"),
        ({"MAILGUN_API_KEY": KEY, "MAILGUN_DOMAIN": DOMAIN, "MAILGUN_REGION": "mars"}, "MAILGUN_REGION"),
        ({"MAILGUN_API_KEY": KEY, "MAILGUN_DOMAIN": DOMAIN, "MAILGUN_TIMEOUT": "soon"}, "MAILGUN_TIMEOUT"),
        (
            {"MAILGUN_API_KEY": KEY, "MAILGUN_DOMAIN": DOMAIN, "MAILGUN_EVENTS_LAG_SECONDS": "soon"},
            "MAILGUN_EVENTS_LAG_SECONDS",
        ),
        (
            {"MAILGUN_API_KEY": KEY, "MAILGUN_DOMAIN": DOMAIN, "MAILGUN_BASE_URL": "http://mailgun.example"},
            "https",
        ),
        ({"MAILGUN_API_KEY": KEY, "MAILGUN_DOMAIN": DOMAIN, "MAILGUN_BASE_URL": "ftp://127.0.0.1"}, "http"),
    ],
)
def test_from_config_refuses_an_incomplete_or_unsafe_setup(config, complaint):
    with pytest.raises(RuntimeError, match=complaint) as refused:
        MailgunBackend.from_config(config)
    assert KEY not in str(refused.value)


def test_mail_backend_mailgun_is_built_from_the_app_config(database_url, fake):
    app = create_app(
        make_config(
            database_url,
            MAIL_BACKEND="mailgun",
            MAILGUN_API_KEY=KEY,
            MAILGUN_DOMAIN=DOMAIN,
            MAILGUN_BASE_URL=fake.base_url,
        )
    )
    with app.app_context():
        db.engine.dispose()
    built = app.extensions["mail_backend"]
    assert isinstance(built, MailgunBackend)
    assert built.send_batch(_batch(_recipients(1))) == {1: fake.requests[0].message_id}  # no app context
    with pytest.raises(RuntimeError, match="MAILGUN_API_KEY"):
        create_app(
            make_config(database_url, MAIL_BACKEND="mailgun", MAILGUN_API_KEY=None, MAILGUN_DOMAIN=DOMAIN)
        )


# -- the fake itself ------------------------------------------------------------------------------

_VALID = [("from", "a@school.example"), ("to", _email(1)), ("subject", "Hi"), ("text", "Hello")]


def test_the_fake_rejects_bad_auth_and_unknown_domains(fake):
    assert _post_form(fake, _VALID, key="key-wrong") == (401, {"message": "Forbidden"})
    assert _post_form(fake, _VALID, domain="mg.other.example")[0] == 404
    assert _post_form(fake, _VALID)[0] == 200
    assert len(fake.requests) == 1


def test_the_fake_rejects_more_than_1000_recipients(fake):
    fields = [("from", "a@school.example"), ("subject", "Hi"), ("text", "Hello")]
    fields += [("to", _email(n)) for n in range(1, 1002)]
    status, body = _post_form(fake, fields)
    assert status == 400 and "1000" in body["message"]
    fields.pop()
    assert _post_form(fake, fields)[0] == 200
    assert len(fake.recipients()) == 1000


@pytest.mark.parametrize("missing", ["from", "to", "subject", "text"])
def test_the_fake_requires_what_mailgun_requires(fake, missing):
    status, body = _post_form(fake, [(k, v) for k, v in _VALID if k != missing])
    assert status == 400 and body["message"]
    assert fake.requests == []


def test_the_fake_parses_multipart_bodies(fake):
    boundary = "----fake-boundary-1234"
    parts = [*_VALID, ("to", _email(2)), ("html", "<p>Héllo</p>")]
    chunks = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in parts
    ]
    chunks.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; filename="a.txt"\r\n'
        "Content-Type: text/plain\r\n\r\nfile body\r\n"
    )
    body = ("".join(chunks) + f"--{boundary}--\r\n").encode()
    url = f"{fake.base_url}/v3/{DOMAIN}/messages"
    assert _post(url, body, f"multipart/form-data; boundary={boundary}")[0] == 200
    fields = fake.requests[0].fields
    assert fields["to"] == [_email(1), _email(2)]
    assert fields["html"] == ["<p>Héllo</p>"]
    assert fake.requests[0].files["attachment"] == [("a.txt", b"file body")]


def test_the_fake_runs_as_a_separate_process_driven_over_http():
    with fake_process("tests.fakes.mailgun", "--key", KEY, "--domain", DOMAIN) as base_url:
        script = json.dumps([[503, {"message": "busy"}, {"Retry-After": "2"}]]).encode()
        assert _post(f"{base_url}/_fake/script", script, "application/json")[0] == 200
        remote = _backend(base_url, MAILGUN_TIMEOUT=5)
        with pytest.raises(TemporaryFailure) as failed:
            remote.send_batch(_batch(_recipients(3)))
        assert failed.value.retry_after == 2
        assert set(remote.send_batch(_batch(_recipients(3)))) == {1, 2, 3}
        stats = fake_stats(base_url)
        assert stats["requests"] == 1 and stats["recipients"] == 3 and stats["attempts"] == 2


# -- the Events API: which recipients of a batch Mailgun accepted -----------------------------------


def _get(url: str, key: str = KEY) -> tuple[int, dict]:
    """GET straight from the fake with Mailgun's Basic auth: status and JSON body."""
    token = base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"{}")


def _events_url(fake: FakeMailgun, **params) -> str:
    return f"{fake.base_url}/v3/{DOMAIN}/events?{urlencode(params)}"


def test_the_batch_id_travels_as_a_user_variable_onto_each_recipients_accepted_event(fake, backend):
    recipients = _recipients(3)
    backend.send_batch(_batch(recipients, batch_id="b-0001"))
    [request] = fake.accepted()
    assert request.fields["v:batch"] == ["b-0001"]
    events = fake.events.accepted_for("batch", "b-0001")
    assert sorted(e["recipient"] for e in events) == [r.email for r in recipients]
    assert {e["message"]["headers"]["message-id"] for e in events} == {request.message_id.strip("<>")}
    assert {e["event"] for e in events} == {"accepted"} and events[0]["tags"] == ["class-news"]


def test_accepted_pages_through_a_whole_batch_and_only_that_batch(fake, backend):
    ours, others = _recipients(1000), _recipients(10, start=2000)
    backend.send_batch(_batch(others, batch_id="b-other"))
    ids = backend.send_batch(_batch(ours, batch_id="b-ours"))
    backend.send_batch(_batch(others, batch_id="b-later"))

    accepted = backend.accepted("b-ours", datetime.now(UTC) - timedelta(seconds=5))

    assert accepted == {r.email: ids[r.delivery_id] for r in ours}
    # 1,000 events at 300 a page: four pages, then the empty page that ends the range.
    assert fake.stats()["event_requests"] == 5


def test_accepted_sees_an_event_only_once_mailgun_shows_it(fake, backend, clock):
    fake.events.delay = 30  # the fake reads the same (controlled) clock as the app
    backend.send_batch(_batch(_recipients(2), batch_id="b-late"))
    assert backend.accepted("b-late", clock.now()) == {}
    clock.shift(seconds=29)
    assert backend.accepted("b-late", clock.now()) == {}
    clock.shift(seconds=1)
    assert len(backend.accepted("b-late", clock.now() - timedelta(seconds=30))) == 2


def test_accepted_follows_next_pages_only_on_mailguns_own_host(fake, backend):
    """The next URL comes from the answer: the key must not be sent wherever it points."""
    backend.send_batch(_batch(_recipients(1), batch_id="b-1"))
    [event] = fake.events.accepted_for("batch", "b-1")
    elsewhere = {"items": [event], "paging": {"next": f"http://127.0.0.1:1/v3/{DOMAIN}/events/x"}}
    fake.queue_event_responses([(200, elsewhere)])
    with pytest.raises(TemporaryFailure, match="points somewhere else"):
        backend.accepted("b-1", datetime.now(UTC))
    assert fake.stats()["event_requests"] == 1


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ((500, {"message": f"boom {KEY}"}), r"Mailgun server error \(500\)"),
        ((429, {"message": "slow down"}, {"Retry-After": "3"}), "rate limit"),
        ((401, {"message": "Forbidden"}), "401"),
        ((200, ["not", "an", "object"]), "not a JSON object"),
        ((200, {"paging": {}}), "no list of items"),
    ],
)
def test_events_that_cannot_be_read_are_a_temporary_failure(fake, backend, answer, reason):
    fake.queue_event_responses([answer])
    with pytest.raises(TemporaryFailure, match=reason) as failed:
        backend.accepted("b-1", datetime.now(UTC))
    assert KEY not in failed.value.reason


def test_the_fake_events_api_checks_auth_domain_and_page_size(fake):
    assert _get(_events_url(fake), key="key-wrong") == (401, {"message": "Forbidden"})
    assert _get(f"{fake.base_url}/v3/mg.other.example/events")[0] == 404
    assert _get(_events_url(fake, limit=301))[0] == 400
    assert _get(_events_url(fake, **{"user-variables": "{not json"}))[0] == 400
    assert _get(f"{fake.base_url}/v3/{DOMAIN}/events/not-a-token")[0] == 404
    status, page = _get(_events_url(fake))
    assert status == 200 and page["items"] == []
    assert set(page["paging"]) == {"first", "last", "next", "previous"}


def test_the_fake_events_api_filters_and_pages_both_ways(fake, backend):
    backend.send_batch(_batch(_recipients(5), batch_id="b-a"))
    backend.send_batch(_batch(_recipients(2, start=50), batch_id="b-b"))
    query = {
        "event": "accepted",
        "user-variables": json.dumps({"batch": "b-a"}),
        "ascending": "yes",
        "limit": 2,
    }
    status, first = _get(_events_url(fake, **query))
    assert status == 200 and [e["recipient"] for e in first["items"]] == [_email(1), _email(2)]
    _, second = _get(first["paging"]["next"])
    assert [e["recipient"] for e in second["items"]] == [_email(3), _email(4)]
    _, back = _get(second["paging"]["previous"])
    assert [e["recipient"] for e in back["items"]] == [_email(1), _email(2)]
    _, third = _get(second["paging"]["next"])
    _, end = _get(third["paging"]["next"])
    assert [e["recipient"] for e in third["items"]] == [_email(5)] and end["items"] == []
    # Polling on: the same next URL shows what was written since.
    backend.send_batch(_batch(_recipients(1, start=6), batch_id="b-a"))
    assert [e["recipient"] for e in _get(third["paging"]["next"])[1]["items"]] == [_email(6)]
    _, newest_first = _get(_events_url(fake, recipient=_email(51)))
    assert [e["user-variables"]["batch"] for e in newest_first["items"]] == ["b-b"]
    _, descending = _get(_events_url(fake, limit=3))
    assert [e["recipient"] for e in descending["items"]] == [_email(6), _email(51), _email(50)]


def test_the_fake_as_a_process_drops_after_accepting_delays_events_and_counts_each_address():
    with fake_process("tests.fakes.mailgun", "--key", KEY, "--domain", DOMAIN, "--events-delay", "30") as url:
        script = json.dumps([{"drop": True}]).encode()
        assert _post(f"{url}/_fake/script", script, "application/json")[0] == 200
        remote = _backend(url, MAILGUN_TIMEOUT=5)
        with pytest.raises(OutcomeUnknown):
            remote.send_batch(_batch(_recipients(2), batch_id="b-p"))
        assert remote.accepted("b-p", datetime.now(UTC)) == {}  # shown 30 s late
        delay = json.dumps({"seconds": 0}).encode()
        assert _post(f"{url}/_fake/events-delay", delay, "application/json")[0] == 200
        remote.send_batch(_batch(_recipients(1), batch_id="b-q"))
        assert set(remote.accepted("b-q", datetime.now(UTC))) == {_email(1)}
        events_script = json.dumps([[503, {"message": "busy"}]]).encode()
        assert _post(f"{url}/_fake/events-script", events_script, "application/json")[0] == 200
        with pytest.raises(TemporaryFailure, match="503"):
            remote.accepted("b-q", datetime.now(UTC))
        _, counts = _get(f"{url}/_fake/recipients")
        assert counts == {"counts": {_email(1): 2, _email(2): 1}}
        stats = fake_stats(url)
        assert (stats["recipients"], stats["unique_recipients"], stats["dropped"]) == (3, 2, 1)
