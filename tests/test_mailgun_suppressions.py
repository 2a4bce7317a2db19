"""The Mailgun backend takes addresses off Mailgun's suppression lists (DELETE, as the API does),
against the fake Mailgun on loopback; the fake answers those calls as Mailgun does."""

from __future__ import annotations

import base64
import logging
import urllib.request

import pytest

from app.mail.backends import DevMailboxBackend, MemoryBackend, PermanentFailure, TemporaryFailure
from app.mail.mailgun import MailgunBackend
from tests.conftest import fake_process
from tests.fakes.mailgun import FakeMailgun

KEY = "key-test-lists-1234567890"
DOMAIN = "mg.lists.example"
ADDRESS = "Pia.Parent+news@example.org"
pytestmark = pytest.mark.usefixtures("loopback_only")


@pytest.fixture
def fake():
    with FakeMailgun(api_key=KEY, domain=DOMAIN) as server:
        yield server


@pytest.fixture
def backend(fake) -> MailgunBackend:
    return MailgunBackend(KEY, DOMAIN, base_url=fake.base_url, timeout=5)


def _delete(url: str, key: str = KEY) -> tuple[int, bytes]:
    token = base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(url, method="DELETE", headers={"Authorization": f"Basic {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_each_list_gets_one_authenticated_delete_and_a_missing_address_is_no_failure(fake, backend):
    fake.suppress("bounces", ADDRESS)
    fake.suppress("unsubscribes", ADDRESS)
    backend.remove_suppression(ADDRESS, ["bounces", "complaints", "unsubscribes"])
    # complaints held nothing: Mailgun answers 404, which means there is nothing left to remove
    assert fake.removals == [("bounces", ADDRESS.lower()), ("unsubscribes", ADDRESS.lower())]
    assert fake.attempts == 3
    assert fake.suppressed("bounces") == set() and fake.suppressed("unsubscribes") == set()


def test_the_fake_speaks_mailguns_answers(fake):
    fake.suppress("complaints", ADDRESS)
    url = f"{fake.base_url}/v3/{DOMAIN}/complaints/{ADDRESS.replace('@', '%40').replace('+', '%2B')}"
    assert _delete(url, key="key-wrong")[0] == 401
    assert _delete(f"{fake.base_url}/v3/mg.other.example/complaints/x%40example.org")[0] == 404
    assert _delete(f"{fake.base_url}/v3/{DOMAIN}/spam/x%40example.org")[0] == 404
    status, body = _delete(url)
    assert status == 200 and b"Spam complaint has been removed" in body
    status, body = _delete(url)
    assert status == 404 and b"Address not found in complaints table" in body


@pytest.mark.parametrize(
    ("answer", "failure", "reason"),
    [
        ((503, {"message": "busy"}, {"Retry-After": "7"}), TemporaryFailure, "Mailgun server error (503)"),
        ((429, {"message": "slow down"}), TemporaryFailure, "Mailgun rate limit reached (429)"),
        (
            (401, {"message": "Forbidden"}),
            PermanentFailure,
            "Mailgun refused the removal from bounces (401) (check MAILGUN_API_KEY): Forbidden",
        ),
        (
            (400, {"message": f"Invalid address {ADDRESS}"}),
            PermanentFailure,
            "Mailgun refused the removal from bounces (400): Invalid address [address]",
        ),
    ],
)
def test_failures_are_temporary_or_permanent_and_name_no_address(
    fake, backend, caplog, answer, failure, reason
):
    fake.suppress("bounces", ADDRESS)
    fake.queue_responses([answer])
    with caplog.at_level(logging.INFO), pytest.raises(failure) as raised:
        backend.remove_suppression(ADDRESS, ["bounces"])
    assert raised.value.reason == reason and str(raised.value) == reason
    assert ADDRESS.lower() not in caplog.text.lower() and KEY not in caplog.text
    assert fake.suppressed("bounces") == {ADDRESS.lower()}  # still listed: the caller retries


def test_an_unreachable_mailgun_is_a_temporary_failure():
    closed = MailgunBackend(KEY, DOMAIN, base_url="http://127.0.0.1:1", timeout=2)
    with pytest.raises(TemporaryFailure, match="could not be reached"):
        closed.remove_suppression(ADDRESS, ["bounces"])


def test_only_mailguns_three_lists_are_named(backend):
    with pytest.raises(ValueError, match="not one of Mailgun's suppression lists"):
        backend.remove_suppression(ADDRESS, ["bounces/../../messages"])


@pytest.mark.parametrize("local", [DevMailboxBackend, MemoryBackend])
def test_local_backends_have_no_lists_and_record_what_was_asked(local):
    made = local()
    made.remove_suppression(ADDRESS, ["bounces", "complaints"])
    assert made.removed == [(ADDRESS, ("bounces", "complaints"))]


def test_the_fake_takes_deletes_as_a_separate_process():
    with fake_process("tests.fakes.mailgun", "--key", KEY, "--domain", DOMAIN) as base_url:
        remote = MailgunBackend(KEY, DOMAIN, base_url=base_url, timeout=5)
        remote.remove_suppression(ADDRESS, ["bounces"])  # not listed there: a 404, and no failure
