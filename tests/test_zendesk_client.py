"""The Zendesk client against a fake Zendesk: a real HTTP server on loopback (no Redis needed).

Nothing here may reach zendesk.com: an autouse guard refuses to resolve any host but
loopback, so a misrouted request fails loudly instead of leaving the machine.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request

import pytest

from app.support.zendesk import (
    PermanentFailure,
    TemporaryFailure,
    TicketRequest,
    ZendeskClient,
    _matching_ticket_ids,
)
from tests.conftest import fake_process, fake_stats, post_to_fake
from tests.fakes.zendesk import FIRST_TICKET_ID, FakeZendesk

AGENT = "agent@support.example"
TOKEN = "zd-test-token-5c4b3a29181706f"
SUBDOMAIN = "joinourclass"
CLOSED_URL = "http://127.0.0.1:1"  # nothing listens on port 1: connections are refused
REQUESTER = "ada.requester@example.org"
pytestmark = pytest.mark.usefixtures("loopback_only")  # nothing may reach the real Zendesk


@pytest.fixture
def fake():
    with FakeZendesk(email=AGENT, api_token=TOKEN, subdomain=SUBDOMAIN) as server:
        yield server


def _client(fake_or_url, **overrides) -> ZendeskClient:
    base = fake_or_url if isinstance(fake_or_url, str) else fake_or_url.base_url
    config = {
        "ZENDESK_SUBDOMAIN": SUBDOMAIN,
        "ZENDESK_EMAIL": AGENT,
        "ZENDESK_API_TOKEN": TOKEN,
        "ZENDESK_BASE_URL": base,
        "ZENDESK_TIMEOUT": 5,
    }
    config.update(overrides)
    client = ZendeskClient.from_config(config)
    assert client is not None
    return client


@pytest.fixture
def client(fake) -> ZendeskClient:
    return _client(fake)


def _ticket(**changes) -> TicketRequest:
    values = {
        "reference": "JOC-7KQ2MX9P",
        "kind": "help",
        "name": "Ada Requester",
        "email": REQUESTER,
        "subject": "Cannot see my class",
        "message": "Hello,\nthe class page is empty since Monday.",
    }
    values.update(changes)
    return TicketRequest(**values)


def _paths(value, prefix: str = "") -> set[str]:
    """Every key path in a JSON value ("ticket.requester.email"; list items as "[]")."""
    if isinstance(value, dict):
        found: set[str] = set()
        for key, inner in value.items():
            found |= _paths(inner, f"{prefix}.{key}" if prefix else key)
        return found
    if isinstance(value, list):
        return set().union(*(_paths(item, f"{prefix}[]") for item in value)) if value else {prefix}
    return {prefix}


def _post(url: str, body: bytes, *, user: str = f"{AGENT}/token", password: str = TOKEN, headers=None):
    """POST straight to the fake (not through the client), returning status, JSON body, headers."""
    return post_to_fake(
        url, body, user=user, password=password, content_type="application/json", headers=headers
    )


# -- the request Zendesk receives ---------------------------------------------------------------


def test_request_shape_path_auth_headers_and_ticket(fake, client):
    ticket_id = client.create_ticket(_ticket())

    (request,) = fake.accepted()
    assert ticket_id == request.ticket_id == FIRST_TICKET_ID
    assert request.path == "/api/v2/tickets.json"
    expected_auth = "Basic " + base64.b64encode(f"{AGENT}/token:{TOKEN}".encode()).decode()
    assert request.headers["Authorization"] == expected_auth
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.headers["Idempotency-Key"] == "JOC-7KQ2MX9P"
    assert request.json == {
        "ticket": {
            "subject": "Cannot see my class",
            "comment": {"body": "Hello,\nthe class page is empty since Monday."},
            "requester": {"name": "Ada Requester", "email": REQUESTER},
            "external_id": "JOC-7KQ2MX9P",
            "tags": ["joinourclass", "help"],
        }
    }


def test_the_payload_holds_exactly_the_allowed_fields_and_only_strings():
    payload = ZendeskClient.payload(_ticket(kind="contact"))
    assert _paths(payload) == {
        "ticket.subject",
        "ticket.comment.body",
        "ticket.requester.name",
        "ticket.requester.email",
        "ticket.external_id",
        "ticket.tags[]",
    }
    leaves = [payload["ticket"]["subject"], payload["ticket"]["external_id"], *payload["ticket"]["tags"]]
    leaves += [*payload["ticket"]["comment"].values(), *payload["ticket"]["requester"].values()]
    assert all(isinstance(leaf, str) for leaf in leaves)
    assert payload["ticket"]["tags"] == ["joinourclass", "contact"]


def test_unicode_survives_the_trip(fake, client):
    client.create_ticket(_ticket(name="Zoë Ōtani", message="名前 🙂 ça va"))
    ticket = fake.accepted()[0].ticket
    assert ticket["requester"]["name"] == "Zoë Ōtani"
    assert ticket["comment"]["body"] == "名前 🙂 ça va"


def test_a_repeat_with_the_same_reference_returns_the_first_ticket(fake, client):
    first = client.create_ticket(_ticket())
    again = client.create_ticket(_ticket())
    assert first == again
    assert len(fake.tickets()) == 1 and len(fake.accepted()) == 2


def test_a_timed_out_request_retried_makes_one_ticket(fake):
    """The ticket may be made after we gave up; the retry's Idempotency-Key finds it."""
    fake.queue_responses([{"delay": 1.0}])  # answer normally, but too late for the client
    slow = _client(fake, ZENDESK_TIMEOUT=0.3)
    with pytest.raises(TemporaryFailure, match="timed out"):
        slow.create_ticket(_ticket())
    deadline = time.monotonic() + 5
    while not fake.accepted() and time.monotonic() < deadline:
        time.sleep(0.05)
    ticket_id = _client(fake).create_ticket(_ticket())
    assert ticket_id == fake.accepted()[0].ticket_id
    assert len(fake.tickets()) == 1


def test_bad_data_fails_for_good_without_a_request(fake, client):
    for bad in (_ticket(message="  "), _ticket(email=""), _ticket(subject=""), _ticket(reference="")):
        with pytest.raises(PermanentFailure) as refused:
            client.create_ticket(bad)
        assert REQUESTER not in str(refused.value)
    assert fake.attempts == 0


# -- failures -----------------------------------------------------------------------------------


def test_server_error_is_temporary_and_the_next_attempt_goes_through(fake, client):
    fake.queue_responses([(500, {"error": "InternalError"})])
    with pytest.raises(TemporaryFailure) as failed:
        client.create_ticket(_ticket())
    assert "500" in failed.value.reason
    assert failed.value.retry_after is None
    assert fake.accepted() == []
    assert client.create_ticket(_ticket()) == FIRST_TICKET_ID
    assert fake.attempts == 2


@pytest.mark.parametrize("status", [502, 503, 504])
def test_other_server_errors_are_temporary_and_keep_retry_after(fake, client, status):
    fake.queue_responses([(status, None, {"Retry-After": "30"})])
    with pytest.raises(TemporaryFailure) as failed:
        client.create_ticket(_ticket())
    assert failed.value.retry_after == 30


def test_rate_limit_is_temporary_with_retry_after_seconds(fake, client):
    fake.queue_responses([(429, {"error": "TooManyRequests"}, {"Retry-After": "93"})])
    with pytest.raises(TemporaryFailure) as failed:
        client.create_ticket(_ticket())
    assert failed.value.retry_after == 93
    assert "429" in failed.value.reason


@pytest.mark.parametrize("status", [408, 409])
def test_conflict_and_request_timeout_are_temporary(fake, client, status):
    fake.queue_responses([(status, {"error": "Conflict"})])
    with pytest.raises(TemporaryFailure, match=str(status)):
        client.create_ticket(_ticket())


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_client_errors_are_permanent(fake, client, status):
    fake.queue_responses([(status, None)])  # no JSON body at all
    with pytest.raises(PermanentFailure, match=str(status)) as failed:
        client.create_ticket(_ticket())
    assert failed.value.status == status
    assert failed.value.credentials_refused is (status in (401, 403))


def test_a_validation_error_keeps_zendesks_words_but_not_the_address(fake, client):
    fake.queue_responses(
        [
            (
                422,
                {
                    "error": "RecordInvalid",
                    "description": "Record validation errors",
                    "details": {"requester": [{"description": f"Requester: Email {REQUESTER} is invalid"}]},
                },
            )
        ]
    )
    with pytest.raises(PermanentFailure) as failed:
        client.create_ticket(_ticket())
    reason = failed.value.reason
    assert "422" in reason and "RecordInvalid" in reason and "Requester: Email [address] is invalid" in reason
    assert REQUESTER not in reason


def test_a_long_refusal_is_truncated(fake, client):
    fake.queue_responses([(400, {"error": "BadRequest", "description": "x" * 2000})])
    with pytest.raises(PermanentFailure) as failed:
        client.create_ticket(_ticket())
    assert len(failed.value.reason) <= 300


def test_wrong_token_is_refused_and_marked_as_credentials(fake):
    wrong = ZendeskClient(SUBDOMAIN, AGENT, "zd-wrong", base_url=fake.base_url, timeout=5)
    with pytest.raises(PermanentFailure) as failed:
        wrong.create_ticket(_ticket())
    assert failed.value.status == 401 and failed.value.credentials_refused
    assert "ZENDESK_API_TOKEN" in failed.value.reason
    assert fake.accepted() == []


def test_closed_port_is_temporary():
    with pytest.raises(TemporaryFailure, match="connection refused"):
        _client(CLOSED_URL, ZENDESK_TIMEOUT=2).create_ticket(_ticket())


def test_timeout_is_temporary(fake):
    fake.queue_responses([{"delay": 3, "status": 201, "body": {"ticket": {"id": 5}}}])
    slow = _client(fake, ZENDESK_TIMEOUT=0.5)
    started = time.monotonic()
    with pytest.raises(TemporaryFailure, match="timed out"):
        slow.create_ticket(_ticket())
    assert time.monotonic() - started < 2.5


def test_a_redirect_is_not_followed(fake, client):
    fake.queue_responses([(302, None, {"Location": "http://127.0.0.1:1/elsewhere"})])
    with pytest.raises(PermanentFailure, match="redirect"):
        client.create_ticket(_ticket())


@pytest.mark.parametrize("body", [{"ticket": {}}, {"ticket": {"id": "7"}}, {"id": 7}, None])
def test_a_success_without_a_ticket_id_is_tried_again_after_a_lookup(fake, client, body):
    """The ticket may exist: a temporary failure, so the retry asks for it by external_id."""
    fake.queue_responses([(201, body)])
    with pytest.raises(TemporaryFailure, match="without a ticket id"):
        client.create_ticket(_ticket())


def test_a_refused_lookup_is_temporary_but_a_refused_token_is_not(client, monkeypatch):
    """A 404 or 422 to the lookup says nothing about the ticket: retried, never failed for good."""

    def refuse(status):
        def call(request, what):
            raise PermanentFailure(f"Zendesk refused the request ({status})", status)

        return call

    monkeypatch.setattr(client, "_call", refuse(404))
    with pytest.raises(TemporaryFailure, match="lookup failed"):
        client.find_ticket("req-1")
    monkeypatch.setattr(client, "_call", refuse(401))
    with pytest.raises(PermanentFailure) as refused:
        client.find_ticket("req-1")
    assert refused.value.credentials_refused


def test_the_token_and_addresses_never_appear_in_failures_or_logs(fake, client, caplog):
    fake.queue_responses(
        [
            (500, {"error": f"boom {TOKEN} {REQUESTER}"}),
            (429, {"error": REQUESTER}, {"Retry-After": "3"}),
            (400, {"error": "InvalidValue", "description": f"{REQUESTER} with token {TOKEN}"}),
            (401, {"error": f"Couldn't authenticate {AGENT} with {TOKEN}"}),
            (302, None, {"Location": "http://127.0.0.1:1/elsewhere"}),
        ]
    )
    failures: list[Exception] = []
    with caplog.at_level(logging.DEBUG, logger="app.support.zendesk"):
        for _ in range(5):
            with pytest.raises((TemporaryFailure, PermanentFailure)) as failed:
                client.create_ticket(_ticket())
            failures.append(failed.value)
        for other in (
            _client(CLOSED_URL, ZENDESK_TIMEOUT=2),
            ZendeskClient(SUBDOMAIN, AGENT, "zd-wrong", base_url=fake.base_url),
        ):
            with pytest.raises((TemporaryFailure, PermanentFailure)) as failed:
                other.create_ticket(_ticket())
            failures.append(failed.value)
        client.create_ticket(_ticket())  # success is logged too
    assert len(failures) == 7
    said = [str(f) for f in failures] + [repr(f) for f in failures] + [f.reason for f in failures]
    said += [caplog.text, repr(client), repr(_ticket())]
    for text in said:
        assert TOKEN not in text
        assert "example.org" not in text
        assert AGENT not in text
    assert "JOC-7KQ2MX9P" in caplog.text  # our reference is how the logs name a request


# -- configuration ------------------------------------------------------------------------------


def test_from_config_builds_the_subdomains_url_and_reads_the_timeout():
    config = {"ZENDESK_SUBDOMAIN": "MySchools", "ZENDESK_EMAIL": AGENT, "ZENDESK_API_TOKEN": TOKEN}
    chosen = ZendeskClient.from_config(config)
    assert chosen.url == "https://myschools.zendesk.com/api/v2/tickets.json"
    assert chosen.timeout == 30
    config |= {"ZENDESK_BASE_URL": "http://127.0.0.1:9/", "ZENDESK_TIMEOUT": "2.5"}
    chosen = ZendeskClient.from_config(config)
    assert chosen.url == "http://127.0.0.1:9/api/v2/tickets.json" and chosen.timeout == 2.5


def test_from_config_is_none_when_nothing_is_set():
    assert ZendeskClient.from_config({}) is None
    assert ZendeskClient.from_config({"ZENDESK_SUBDOMAIN": " ", "ZENDESK_EMAIL": None}) is None


@pytest.mark.parametrize(
    ("config", "complaint"),
    [
        ({"ZENDESK_SUBDOMAIN": SUBDOMAIN}, "ZENDESK_EMAIL and ZENDESK_API_TOKEN"),
        ({"ZENDESK_SUBDOMAIN": SUBDOMAIN, "ZENDESK_EMAIL": AGENT}, "ZENDESK_API_TOKEN"),
        ({"ZENDESK_EMAIL": AGENT, "ZENDESK_API_TOKEN": TOKEN}, "ZENDESK_SUBDOMAIN"),
        (
            {"ZENDESK_SUBDOMAIN": "evil.example/x?", "ZENDESK_EMAIL": AGENT, "ZENDESK_API_TOKEN": TOKEN},
            "name",
        ),
        (
            {"ZENDESK_SUBDOMAIN": SUBDOMAIN, "ZENDESK_EMAIL": AGENT, "ZENDESK_API_TOKEN": TOKEN}
            | {"ZENDESK_TIMEOUT": "soon"},
            "ZENDESK_TIMEOUT",
        ),
        (
            {"ZENDESK_SUBDOMAIN": SUBDOMAIN, "ZENDESK_EMAIL": AGENT, "ZENDESK_API_TOKEN": TOKEN}
            | {"ZENDESK_TIMEOUT": "0"},
            "positive",
        ),
        (
            {"ZENDESK_SUBDOMAIN": SUBDOMAIN, "ZENDESK_EMAIL": AGENT, "ZENDESK_API_TOKEN": TOKEN}
            | {"ZENDESK_BASE_URL": "http://zendesk.example"},
            "https",
        ),
        (
            {"ZENDESK_SUBDOMAIN": SUBDOMAIN, "ZENDESK_EMAIL": AGENT, "ZENDESK_API_TOKEN": TOKEN}
            | {"ZENDESK_BASE_URL": "ftp://127.0.0.1"},
            "http",
        ),
    ],
)
def test_from_config_refuses_an_incomplete_or_unsafe_setup(config, complaint):
    with pytest.raises(RuntimeError, match=complaint) as refused:
        ZendeskClient.from_config(config)
    assert TOKEN not in str(refused.value) and AGENT not in str(refused.value)


def test_the_app_refuses_to_start_half_configured(build_app):
    with pytest.raises(RuntimeError, match="ZENDESK_API_TOKEN"):
        build_app(ZENDESK_SUBDOMAIN=SUBDOMAIN, ZENDESK_EMAIL=AGENT)


# -- the fake itself ------------------------------------------------------------------------------

_VALID = {
    "ticket": {"subject": "Hi", "comment": {"body": "Hello"}, "requester": {"name": "A", "email": "a@x.org"}}
}


def test_the_fake_checks_auth_and_what_zendesk_requires(fake):
    url = f"{fake.base_url}/api/v2/tickets.json"
    body = json.dumps(_VALID).encode()
    assert _post(url, body, password="wrong")[0] == 401
    assert _post(url, body, user=AGENT)[0] == 401  # the "/token" suffix is part of the user name
    assert _post(f"{fake.base_url}/api/v2/requests.json", body)[0] == 404
    assert _post(url, b"{not json")[0] == 400
    no_body = {"ticket": {"subject": "Hi", "comment": {"body": " "}}}
    assert _post(url, json.dumps(no_body).encode())[0] == 422
    bad_requester = {"ticket": {"comment": {"body": "x"}, "requester": {"name": "A"}}}
    assert _post(url, json.dumps(bad_requester).encode())[0] == 422
    status, answer, headers = _post(url, body)
    assert status == 201 and answer["ticket"]["id"] == FIRST_TICKET_ID
    assert len(fake.accepted()) == 1


def test_the_fake_honours_idempotency_keys(fake):
    url = f"{fake.base_url}/api/v2/tickets.json"
    body = json.dumps(_VALID).encode()
    first = _post(url, body, headers={"Idempotency-Key": "k1"})
    again = _post(url, body, headers={"Idempotency-Key": "k1"})
    assert (first[0], again[0]) == (201, 200)
    assert first[1]["ticket"]["id"] == again[1]["ticket"]["id"]
    assert again[2]["x-idempotency-lookup"] == "hit"
    other = json.dumps({"ticket": {**_VALID["ticket"], "subject": "Other"}}).encode()
    assert _post(url, other, headers={"Idempotency-Key": "k1"})[0] == 400
    assert fake.stats() == {"requests": 2, "tickets": 1, "attempts": 3, "lookups": 0}


def test_the_fake_runs_as_a_separate_process_driven_over_http():
    with fake_process("tests.fakes.zendesk", "--email", AGENT, "--token", TOKEN) as base_url:
        script = json.dumps([[503, {"error": "busy"}, {"Retry-After": "2"}]]).encode()
        assert _post(f"{base_url}/_fake/script", script)[0] == 200
        remote = _client(base_url)
        with pytest.raises(TemporaryFailure) as failed:
            remote.create_ticket(_ticket())
        assert failed.value.retry_after == 2
        assert remote.create_ticket(_ticket()) == FIRST_TICKET_ID
        assert fake_stats(base_url) == {"requests": 1, "tickets": 1, "attempts": 2, "lookups": 0}


# -- finding a ticket an unanswered attempt made ---------------------------------------------------


def test_find_ticket_lists_tickets_by_external_id(fake, client):
    ticket_id = client.create_ticket(_ticket())
    client.create_ticket(_ticket(reference="JOC-OTHER234"))
    assert client.find_ticket("JOC-7KQ2MX9P") == ticket_id
    assert client.find_ticket("JOC-NONE2345") is None
    assert fake.lookups == 2 and fake.attempts == 2  # lookups are GETs, not ticket attempts


def test_find_ticket_sends_an_authenticated_get_with_the_reference_encoded(fake):
    url = f"{fake.base_url}/api/v2/tickets.json?external_id=JOC-7KQ2MX9P"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:  # the fake, as Zendesk, wants the token
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5)
    with refused.value:
        assert refused.value.code == 401
    wrong = _client(fake, ZENDESK_API_TOKEN="zd-wrong-token-000000000000")
    with pytest.raises(PermanentFailure) as failed:
        wrong.find_ticket("JOC-7KQ2MX9P")
    assert failed.value.credentials_refused


def test_an_answer_dropped_after_the_ticket_was_made_is_temporary_and_the_lookup_finds_it(fake, client):
    fake.drop_after_create(1)
    with pytest.raises(TemporaryFailure, match="could not be reached"):
        client.create_ticket(_ticket())
    (made,) = fake.tickets()  # Zendesk made it; we never heard
    assert client.find_ticket("JOC-7KQ2MX9P") == made.ticket_id


def test_the_fake_can_ignore_idempotency_keys(fake, client):
    fake.honour_idempotency = False
    first, second = client.create_ticket(_ticket()), client.create_ticket(_ticket())
    assert first != second
    assert fake.tickets_for("JOC-7KQ2MX9P") == [first, second]  # a duplicate, as the lookup shows
    assert client.find_ticket("JOC-7KQ2MX9P") == first  # the oldest is the one we keep


def test_a_lookup_that_cannot_be_made_is_temporary():
    with pytest.raises(TemporaryFailure, match="connection refused"):
        _client(CLOSED_URL, ZENDESK_TIMEOUT=2).find_ticket("JOC-7KQ2MX9P")


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b'{"tickets": [{"id": 9, "external_id": "R"}, {"id": 3, "external_id": "R"}], "count": 2}', [9, 3]),
        (b'{"tickets": [{"id": 9, "external_id": "other"}, "junk", {"id": true, "external_id": "R"}]}', []),
        (b'{"tickets": []}', []),
        (b'{"ticket": {"id": 9}}', None),
        (b"not json", None),
        (b"[]", None),
    ],
)
def test_only_a_ticket_list_with_our_external_id_counts(payload, expected):
    assert _matching_ticket_ids(payload, "R") == expected


def test_the_separate_fake_takes_faults_over_http():
    with fake_process(
        "tests.fakes.zendesk", "--email", AGENT, "--token", TOKEN, "--ignore-idempotency"
    ) as base_url:
        faults = json.dumps({"drop_after_create": 1}).encode()
        assert _post(f"{base_url}/_fake/faults", faults)[1] == {
            "drop_after_create": 1,
            "honour_idempotency": False,
        }
        remote = _client(base_url)
        with pytest.raises(TemporaryFailure):
            remote.create_ticket(_ticket())
        assert remote.find_ticket("JOC-7KQ2MX9P") == FIRST_TICKET_ID
        assert remote.create_ticket(_ticket()) == FIRST_TICKET_ID + 1  # the key is ignored
        assert fake_stats(base_url) == {"requests": 2, "tickets": 2, "attempts": 2, "lookups": 1}
