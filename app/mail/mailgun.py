"""Mailgun's HTTP API as a mail backend: one POST per batch of up to a thousand people.

Each batch goes to ``POST /v3/<domain>/messages`` with one ``to`` field per recipient and a
``recipient-variables`` JSON object. That object is what makes Mailgun send every recipient
their own copy, with only their own address in it and their own values (an unsubscribe link)
in place of the ``%recipient.x%`` placeholders. Without it Mailgun sends one message that shows
every address to everyone, so it is always sent, even when nobody has any variables.

Every batch also carries its id as the user variable ``batch`` (form field ``v:batch``), which
Mailgun copies onto every event of every recipient. When a call's answer is lost (a timeout
while waiting, a dropped connection, a 5xx), :meth:`MailgunBackend.accepted` reads the Events
API (``GET /v3/<domain>/events``, ``event=accepted`` and ``user-variables={"batch": id}``,
paged through ``paging.next`` until an empty page) to learn which recipients Mailgun took.

Only the standard library is used (``urllib.request``). Neither the API key nor any recipient
address is ever logged or put into an exception message: failures end up in the outbox's
``last_error`` column and in logs that many people can read.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import quote, urlencode, urlsplit

from app.mail.backends import Batch, MailBackend, OutcomeUnknown, PermanentFailure, TemporaryFailure
from app.mail.provider_events import PROVIDER_LISTS
from app.providers import ADDRESS, checked_base_url, network_reason, opener_for, retry_after_seconds

log = logging.getLogger(__name__)

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
DEFAULT_TIMEOUT = 30.0
MAX_REASON = 300
MAX_RESPONSE_BYTES = 64 * 1024  # Mailgun's answers are tiny; never read an unbounded body
MAX_EVENTS_PAGE_BYTES = 16 * 1024 * 1024  # an events page holds up to 300 full events
EVENTS_PAGE_SIZE = 300  # the Events API's largest page
# 1,000 recipients fill 4 pages. Should Mailgun ever ignore the user-variables filter, the
# window (the batch's call plus the clock skew either side) holds every accepted event of the
# domain: 200 pages read 60,000 of them before giving up (then the rows wait and ask again).
MAX_EVENT_PAGES = 200
CLOCK_SKEW_SECONDS = 60  # ask from a little before the batch to a little after its deadline
# Mailgun's events are eventually consistent: its event-polling guide trusts a page only once it
# is well in the past. An accepted batch nearly always shows within seconds; five minutes keeps
# a late event from looking like "never taken" (and a resend) at the price of a slower recovery.
DEFAULT_EVENTS_LAG = 300.0

_TRUE = {"1", "true", "yes", "on"}
_SPLITS_ADDRESS = re.compile(r"[\s,;<>\"]")


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


class MailgunBackend(MailBackend):
    """Send batches through Mailgun's messages endpoint."""

    max_batch = 1000

    def __init__(
        self,
        api_key: str,
        domain: str,
        *,
        base_url: str = REGIONS["us"],
        timeout: float = DEFAULT_TIMEOUT,
        tracking: bool = False,
        events_lag: float = DEFAULT_EVENTS_LAG,
    ) -> None:
        if not api_key or not domain:
            raise RuntimeError("The Mailgun backend needs MAILGUN_API_KEY and MAILGUN_DOMAIN.")
        base_url = checked_base_url(base_url, timeout, setting="MAILGUN", example="https://api.mailgun.net")
        self._api_key = api_key
        self.domain = domain
        self.base_url = base_url
        self.timeout = timeout
        self.tracking = tracking
        self.events_lag = max(0.0, events_lag)
        self.url = f"{base_url}/v3/{quote(domain, safe='')}/messages"
        self.events_url = f"{base_url}/v3/{quote(domain, safe='')}/events"
        token = base64.b64encode(f"api:{api_key}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"
        self._opener = opener_for(base_url)

    def __repr__(self) -> str:  # the key stays out of reprs, tracebacks and debuggers' displays
        return f"MailgunBackend(domain={self.domain!r}, base_url={self.base_url!r})"

    @classmethod
    def from_config(cls, config: Mapping) -> MailgunBackend:
        """Build from MAILGUN_* settings (an app's config or any mapping)."""
        api_key = config.get("MAILGUN_API_KEY") or ""
        domain = config.get("MAILGUN_DOMAIN") or ""
        missing = [
            name for name, value in (("MAILGUN_API_KEY", api_key), ("MAILGUN_DOMAIN", domain)) if not value
        ]
        if missing:
            raise RuntimeError(f"MAIL_BACKEND=mailgun needs {' and '.join(missing)} to be set.")
        region = str(config.get("MAILGUN_REGION") or "us").strip().lower()
        if region not in REGIONS:
            raise RuntimeError(f"MAILGUN_REGION must be one of {', '.join(REGIONS)}; got {region!r}.")
        base_url = config.get("MAILGUN_BASE_URL") or REGIONS[region]
        raw_timeout = config.get("MAILGUN_TIMEOUT")
        try:
            timeout = float(raw_timeout) if raw_timeout not in (None, "") else DEFAULT_TIMEOUT
        except (TypeError, ValueError):
            raise RuntimeError("MAILGUN_TIMEOUT must be a number of seconds.") from None
        raw_lag = config.get("MAILGUN_EVENTS_LAG_SECONDS")
        try:
            events_lag = float(raw_lag) if raw_lag not in (None, "") else DEFAULT_EVENTS_LAG
        except (TypeError, ValueError):
            raise RuntimeError("MAILGUN_EVENTS_LAG_SECONDS must be a number of seconds.") from None
        return cls(
            str(api_key),
            str(domain),
            base_url=str(base_url),
            timeout=timeout,
            tracking=_flag(config.get("MAILGUN_TRACKING", False)),
            events_lag=events_lag,
        )

    # -- building the request -------------------------------------------------------------

    def form_fields(self, batch: Batch) -> list[tuple[str, str]]:
        """The form Mailgun receives for this batch (``to`` repeated once per address).

        An address repeated with the same variables goes once (both deliveries get the id);
        ValueError for an address Mailgun would split, an address repeated with other variables
        or a header with a line break. The messages name deliveries, never addresses.
        """
        variables: dict[str, dict[str, str]] = {}
        for recipient in batch.recipients:
            if not recipient.email or _SPLITS_ADDRESS.search(recipient.email):
                # Mailgun would read such a value as several addresses (or none).
                raise ValueError(f"delivery {recipient.delivery_id} has an address Mailgun cannot take")
            known = variables.get(recipient.email)
            if known is not None and known != recipient.variables:
                raise ValueError(
                    f"delivery {recipient.delivery_id} repeats an address in the batch with other variables"
                )
            variables[recipient.email] = dict(recipient.variables)
        for name, value in batch.headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
                raise ValueError(f"header {name.splitlines()[0][:40]!r} holds a line break or colon")
        tracking = "yes" if self.tracking else "no"
        fields: list[tuple[str, str]] = [("from", batch.sender)]
        fields += [("to", email) for email in variables]
        fields += [("subject", batch.subject), ("text", batch.text)]
        if batch.html is not None:
            fields.append(("html", batch.html))
        # Always sent: without it every recipient would see every address in the batch.
        fields.append(("recipient-variables", json.dumps(variables, ensure_ascii=False)))
        if batch.tag:
            fields.append(("o:tag", batch.tag))
        if batch.batch_id:
            # A user variable: Mailgun puts it on every event, where accepted() looks for it.
            fields.append(("v:batch", batch.batch_id))
        fields += [("o:tracking", tracking), ("o:tracking-clicks", tracking), ("o:tracking-opens", tracking)]
        fields += [(f"h:{name}", value) for name, value in batch.headers.items()]
        return fields

    # -- sending ----------------------------------------------------------------------------

    def send_batch(self, batch: Batch) -> dict[int, str]:
        if not batch.recipients:
            return {}
        if len(batch.recipients) > self.max_batch:
            raise ValueError(
                f"a Mailgun batch takes at most {self.max_batch} recipients; got {len(batch.recipients)}"
            )
        try:
            fields = self.form_fields(batch)
        except ValueError as error:
            # Bad data, not a bad moment: retrying would fail the same way, so fail for good.
            raise PermanentFailure(f"batch not sent: {error}") from None
        body = urlencode(fields, doseq=True).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url,
            data=body,
            method="POST",
            headers={
                "Authorization": self._authorization,
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": "join-our-class-mailer",
            },
        )
        size, tag = len(batch.recipients), batch.tag
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status = response.status
                payload = self._read(response)
        except urllib.error.HTTPError as error:
            with error:
                failure = self._failure(error.code, self._read(error), error.headers)
            log.warning("mailgun batch (tag %s, %d recipients) failed: %s", tag, size, failure.reason)
            raise failure from None
        except urllib.error.URLError as error:
            # urllib raises URLError only while connecting or sending: the request never got
            # through whole, so Mailgun cannot have taken it.
            failure = TemporaryFailure(f"Mailgun could not be reached: {network_reason(error)}")
            log.warning("mailgun batch (tag %s, %d recipients) failed: %s", tag, size, failure.reason)
            raise failure from None
        except (OSError, http.client.HTTPException) as error:
            # Sent, then no answer (a timeout while waiting, a dropped connection): Mailgun may
            # have queued it. The send job asks the Events API before sending it again.
            failure = OutcomeUnknown(f"Mailgun did not answer: {network_reason(error)}")
            log.warning("mailgun batch (tag %s, %d recipients): %s", tag, size, failure.reason)
            raise failure from None
        provider_id = _message_id(payload)
        if not 200 <= status < 300 or provider_id is None:
            failure = OutcomeUnknown(f"Mailgun answered {status} without a message id")
            log.error("mailgun batch (tag %s, %d recipients): %s", tag, size, failure.reason)
            raise failure
        log.info("mailgun batch (tag %s, %d recipients) queued as %s", tag, size, provider_id)
        return {recipient.delivery_id: provider_id for recipient in batch.recipients}

    # -- asking what Mailgun accepted ---------------------------------------------------------

    def accepted(self, batch_id: str, since: datetime, *, until: datetime | None = None) -> dict[str, str]:
        """Recipients of the batch Mailgun accepted, from its Events API: address -> message id.

        Pages are followed through ``paging.next`` until an empty one, and only on Mailgun's own
        host (the next URL comes from the answer; the key must not follow it anywhere else).
        Raises TemporaryFailure when the events cannot be read: then nobody can tell.
        """
        query = {
            "event": "accepted",
            "user-variables": json.dumps({"batch": batch_id}),
            "begin": str(int(since.timestamp()) - CLOCK_SKEW_SECONDS),
            "ascending": "yes",
            "limit": str(EVENTS_PAGE_SIZE),
        }
        if until is not None:
            query["end"] = str(int(until.timestamp()) + CLOCK_SKEW_SECONDS + 1)
        url = f"{self.events_url}?{urlencode(query)}"
        found: dict[str, str] = {}
        for _ in range(MAX_EVENT_PAGES):
            page = self._events_page(url)
            items = page.get("items")
            if not isinstance(items, list):
                raise TemporaryFailure("Mailgun's events answer holds no list of items")
            if not items:
                return found
            found |= _accepted_in(items, batch_id)
            url = self._next_page(page)
        raise TemporaryFailure(f"Mailgun's events for one batch ran past {MAX_EVENT_PAGES} pages")

    def _events_page(self, url: str) -> dict:
        """One page of the Events API as JSON; TemporaryFailure for any failure to read it."""
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            url,
            method="GET",
            headers={
                "Authorization": self._authorization,
                "Accept": "application/json",
                "User-Agent": "join-our-class-mailer",
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                payload = response.read(MAX_EVENTS_PAGE_BYTES + 1)
        except urllib.error.HTTPError as error:
            with error:
                failure = self._failure(error.code, self._read(error), error.headers)
            raise TemporaryFailure(f"Mailgun's events could not be read: {failure.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            raise TemporaryFailure(f"Mailgun's events could not be read: {network_reason(error)}") from None
        if len(payload) > MAX_EVENTS_PAGE_BYTES:
            raise TemporaryFailure("Mailgun's events page was too large to read")
        try:
            page = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise TemporaryFailure("Mailgun's events answer was not JSON") from None
        if not isinstance(page, dict):
            raise TemporaryFailure("Mailgun's events answer was not a JSON object")
        return page

    def _next_page(self, page: dict) -> str:
        """The page's ``paging.next`` URL, if it points at Mailgun's events of our domain."""
        paging = page.get("paging")
        url = paging.get("next") if isinstance(paging, dict) else None
        if not isinstance(url, str):
            raise TemporaryFailure("Mailgun's events answer holds no next page")
        ours, theirs = urlsplit(self.events_url), urlsplit(url)
        same_host = (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)
        if not same_host or not theirs.path.startswith(ours.path):
            raise TemporaryFailure("Mailgun's next events page points somewhere else")
        return url

    def _read(self, response) -> bytes:
        try:
            return response.read(MAX_RESPONSE_BYTES) or b""
        except (OSError, http.client.HTTPException):
            return b""

    def _failure(self, status: int, payload: bytes, headers) -> TemporaryFailure | PermanentFailure:
        retry_after = retry_after_seconds(headers.get("Retry-After") if headers is not None else None)
        if status == 429:
            return TemporaryFailure("Mailgun rate limit reached (429)", retry_after)
        if status >= 500:
            # Mailgun has been seen to queue a batch and still answer 5xx: ask before re-sending.
            return OutcomeUnknown(f"Mailgun server error ({status})", retry_after)
        if 300 <= status < 400:
            return PermanentFailure(f"Mailgun answered with a redirect ({status}); check MAILGUN_BASE_URL")
        message = self._scrub(_json_message(payload))
        hint = " (check MAILGUN_API_KEY)" if status == 401 else ""
        reason = f"Mailgun refused the batch ({status}){hint}"
        if message:
            reason = f"{reason}: {message}"
        return PermanentFailure(reason[:MAX_REASON])

    def _scrub(self, text: str) -> str:
        """Mailgun's own message may quote an address (or, in theory, the key): drop both."""
        text = text.replace(self._api_key, "[key]")
        return ADDRESS.sub("[address]", text)

    # -- Mailgun's suppression lists ----------------------------------------------------------

    def remove_suppression(self, email: str, lists: list[str]) -> None:
        """``DELETE /v3/<domain>/<list>/<address>`` for each list; a 404 means it is not there (done).

        Delivery to the address resumes at Mailgun until it bounces or complains again.
        """
        for name in lists:
            if name not in PROVIDER_LISTS:
                raise ValueError(f"{name!r} is not one of Mailgun's suppression lists")
            self._delete_from(name, email)

    def _delete_from(self, name: str, email: str) -> None:
        url = f"{self.base_url}/v3/{quote(self.domain, safe='')}/{name}/{quote(email, safe='')}"
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            url,
            method="DELETE",
            headers={
                "Authorization": self._authorization,
                "Accept": "application/json",
                "User-Agent": "join-our-class-mailer",
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                self._read(response)
        except urllib.error.HTTPError as error:
            with error:
                payload = self._read(error)
                if error.code == 404:
                    log.info("mailgun %s: the address was not on it", name)
                    return
                failure = self._failure(error.code, payload, error.headers)
            # _failure words a refusal for the messages endpoint; say what was refused here.
            failure.reason = failure.reason.replace("the batch", f"the removal from {name}")
            failure.args = (failure.reason,)
            log.warning("mailgun %s: removing an address failed: %s", name, failure.reason)
            raise failure from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            failure = TemporaryFailure(f"Mailgun could not be reached: {network_reason(error)}")
            log.warning("mailgun %s: removing an address failed: %s", name, failure.reason)
            raise failure from None
        log.info("mailgun %s: an address was removed", name)


def _json_message(payload: bytes) -> str:
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ""
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return " ".join(data["message"].split())
    return ""


def _accepted_in(items: list, batch_id: str) -> dict[str, str]:
    """address -> message id for the page's ``accepted`` events of this batch.

    The filter is a search, not a promise: each event's own user variable is checked too.
    Events show the Message-Id without angle brackets; the send answer has them, and so do the
    ids stored on deliveries.
    """
    found = {}
    for item in items:
        if not isinstance(item, dict) or item.get("event") != "accepted":
            continue
        variables = item.get("user-variables")
        if not isinstance(variables, dict) or variables.get("batch") != batch_id:
            continue
        recipient = item.get("recipient")
        message = item.get("message")
        headers = message.get("headers") if isinstance(message, dict) else None
        message_id = headers.get("message-id") if isinstance(headers, dict) else None
        if isinstance(recipient, str) and recipient.strip() and isinstance(message_id, str) and message_id:
            found[recipient.strip().lower()] = f"<{message_id.strip().strip('<>')}>"
    return found


def _message_id(payload: bytes) -> str | None:
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("id"), str) and data["id"].strip():
        return data["id"].strip()
    return None
