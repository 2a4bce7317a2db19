"""A fake Mailgun: a real HTTP server on loopback speaking the part of the API the app uses.

Not a mock object: the backend under test makes real HTTP requests, with real Basic auth and a
real form body, and the fake checks them the way Mailgun does (auth, domain, required fields,
at most 1,000 recipients) before recording them. ``messages_for(email)`` then shows what that
one person would receive, placeholders filled in, so tests can check nobody sees another's
address or link.

In-process::

    with FakeMailgun() as fake:
        backend = MailgunBackend(fake.api_key, fake.domain, base_url=fake.base_url)
        fake.queue_responses([(500, {"message": "boom"}), (429, {}, {"Retry-After": "1"})])

As a separate process (a worker test or a benchmark)::

    python -m tests.fakes.mailgun --port 0 --key K --domain D
    # prints "listening http://127.0.0.1:N" then "ready"; GET /_fake/stats, POST /_fake/script,
    # POST /_fake/reset; it stops on SIGTERM/SIGINT or after --lifetime seconds.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from email.utils import getaddresses
from urllib.parse import parse_qsl, unquote

from app.mail.backends import personalise
from tests.fakes.base import MAX_DELAY as MAX_DELAY  # re-exported: it used to be defined here
from tests.fakes.base import BadRequest, FakeHandler, FakeServer, basic_auth_matches, command_line, run
from tests.fakes.base import Scripted as Scripted  # re-exported: tests import it from here

MAX_RECIPIENTS = 1000
MAX_BODY = 25 * 1024 * 1024  # Mailgun's message size limit
QUEUED = "Queued. Thank you."


@dataclass
class RecordedRequest:
    """A request the fake accepted (answered 200)."""

    path: str
    fields: dict[str, list[str]]
    headers: dict[str, str]
    time: float
    message_id: str
    files: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    @property
    def recipients(self) -> list[str]:
        return _addresses(self.fields.get("to", []))


@dataclass
class FakeMessage:
    """What one recipient would receive from one accepted request."""

    to: str
    sender: str
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    tags: list[str]
    message_id: str


def _addresses(values: Iterable[str]) -> list[str]:
    """Every address in the ``to`` values (Mailgun also takes comma-separated lists)."""
    return [address for _name, address in getaddresses(list(values)) if address]


def parse_form(
    content_type: str, body: bytes
) -> tuple[dict[str, list[str]], dict[str, list[tuple[str, bytes]]]]:
    """A form body (urlencoded or multipart) as multi-value fields, plus any uploaded files."""
    fields: dict[str, list[str]] = {}
    files: dict[str, list[tuple[str, bytes]]] = {}
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=20_000)
        except (UnicodeDecodeError, ValueError) as error:
            raise BadRequest(400, f"malformed form body: {type(error).__name__}") from None
        for name, value in pairs:
            fields.setdefault(name, []).append(value)
        return fields, files
    if kind == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        if not message.is_multipart() or message.defects:
            raise BadRequest(400, "malformed multipart body")
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                continue
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            if filename is not None:
                files.setdefault(name, []).append((filename, payload))
                continue
            charset = part.get_content_charset() or "utf-8"
            try:
                fields.setdefault(name, []).append(payload.decode(charset))
            except (LookupError, UnicodeDecodeError):
                raise BadRequest(400, f"field {name!r} is not valid {charset}") from None
        return fields, files
    raise BadRequest(400, "expected application/x-www-form-urlencoded or multipart/form-data")


def validate(fields: dict[str, list[str]]) -> None:
    """What Mailgun checks before it queues a message."""
    for name in ("from", "to", "subject"):
        if not any(value.strip() for value in fields.get(name, [])):
            raise BadRequest(400, f"'{name}' parameter is missing")
    if not any(fields.get(name) for name in ("text", "html", "amp-html", "template")):
        raise BadRequest(
            400, "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified"
        )
    recipients = _addresses(fields["to"])
    if not recipients or any("@" not in address for address in recipients):
        raise BadRequest(400, "'to' parameter is not a valid address. please check documentation")
    if len(recipients) > MAX_RECIPIENTS:
        raise BadRequest(400, f"Too many recipients: at most {MAX_RECIPIENTS} are allowed per message")
    raw = fields.get("recipient-variables")
    if raw:
        try:
            variables = json.loads(raw[0])
        except ValueError:
            raise BadRequest(400, "recipient-variables parameter is not a valid JSON") from None
        if not isinstance(variables, dict) or not all(isinstance(v, dict) for v in variables.values()):
            raise BadRequest(400, "recipient-variables must be a JSON object of objects")


class MailgunHandler(FakeHandler):
    server_version = "FakeMailgun/1.0"
    max_body = MAX_BODY

    def serve(self, path: str, body: bytes) -> None:
        fake: FakeMailgun = self.fake
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "v3" or parts[2] != "messages":
            raise BadRequest(404, "Not Found")
        if not fake._authorised(self.headers.get("Authorization")):
            raise BadRequest(401, "Forbidden")
        domain = unquote(parts[1])
        if domain != fake.domain:
            raise BadRequest(404, f"Domain not found: {domain}")
        if self.answer_scripted():
            return
        fields, files = parse_form(self.headers.get("Content-Type", ""), body)
        validate(fields)
        message_id = fake._new_id()
        fake._accept(
            RecordedRequest(
                path=path,
                fields=fields,
                headers=dict(self.headers.items()),
                time=time.time(),
                message_id=message_id,
                files=files,
            )
        )
        self._json(200, {"id": message_id, "message": QUEUED})


class FakeMailgun(FakeServer[RecordedRequest]):
    """A loopback HTTP server that accepts ``POST /v3/<domain>/messages`` like Mailgun.

    ``attempts`` counts every POST to a messages URL, whatever the answer.
    """

    handler = MailgunHandler
    thread_name = "fake-mailgun"

    def __init__(self, api_key: str = "key-fake-0123456789", domain: str = "mg.example.test", port: int = 0):
        super().__init__(port)
        self.api_key = api_key
        self.domain = domain
        self._ids = itertools.count(1)

    # -- reading ----------------------------------------------------------------------------

    def recipients(self) -> list[str]:
        """Every address accepted so far, in order, once per request it was in."""
        return [address for request in self.accepted() for address in request.recipients]

    def stats(self) -> dict[str, int]:
        requests, attempts = self._snapshot()
        recipients = sum(len(request.recipients) for request in requests)
        return {"requests": len(requests), "recipients": recipients, "attempts": attempts}

    def messages_for(self, email: str) -> list[FakeMessage]:
        """What ``email`` would receive, as Mailgun would build it from each accepted request.

        With ``recipient-variables`` each recipient gets their own copy: only their address in
        To, their own values in place of ``%recipient.x%``. Without it Mailgun sends one message
        whose To lists every address in the request, and that is what this returns.
        """
        wanted = email.strip().lower()
        messages = []
        for request in self.accepted():
            addresses = request.recipients
            if wanted not in {address.lower() for address in addresses}:
                continue
            raw = request.first("recipient-variables")
            if raw:
                table = json.loads(raw)
                lowered = {key.lower(): value for key, value in table.items()}
                variables = {str(k): str(v) for k, v in lowered.get(wanted, {}).items()}
                to = email
            else:
                variables = {}
                to = ", ".join(request.fields["to"])
            headers = {
                name[2:]: personalise(values[0], variables)
                for name, values in request.fields.items()
                if name.startswith("h:") and values
            }
            messages.append(
                FakeMessage(
                    to=to,
                    sender=request.first("from") or "",
                    subject=personalise(request.first("subject") or "", variables) or "",
                    text=personalise(request.first("text"), variables),
                    html=personalise(request.first("html"), variables),
                    headers=headers,
                    tags=list(request.fields.get("o:tag", [])),
                    message_id=request.message_id,
                )
            )
        return messages

    # -- what the handler calls ----------------------------------------------------------------

    def _new_id(self) -> str:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        return f"<{stamp}.{next(self._ids)}.{uuid.uuid4().hex[:12]}@{self.domain}>"

    def _authorised(self, header: str | None) -> bool:
        return basic_auth_matches(header, "api", self.api_key)


def main(argv: list[str] | None = None) -> int:
    parser = command_line("Run a fake Mailgun API on 127.0.0.1.")
    parser.add_argument("--key", default="key-fake-0123456789", help="the API key it accepts")
    parser.add_argument("--domain", default="mg.example.test", help="the sending domain it accepts")
    return run(parser, argv, lambda args: FakeMailgun(api_key=args.key, domain=args.domain, port=args.port))


if __name__ == "__main__":
    sys.exit(main())
