"""A fake LibreTranslate: a real HTTP server on loopback speaking ``/translate`` and ``/languages``.

Not a mock object: the client under test makes real HTTP requests with a real JSON body, and
the fake checks them as LibreTranslate does (``q`` a string or a list of strings, ``source``
and ``target`` among its languages, ``format`` text or html, ``api_key`` when one is
required) before answering ``{"translatedText": ...}`` (a list for a list ``q``). Errors are
LibreTranslate's ``{"error": "..."}``: 400 for a bad request, 403 ``Invalid API key``, and
whatever a test scripts (500, 429 with Retry-After, a delay longer than the client waits).

Its "translation" is deterministic: each text gets ``[<target>] `` in front; in HTML each run
of text between tags gets it, and the tags stay as they were. ``requests`` keeps every
accepted translation request with its raw bytes; ``attempts`` counts every POST to
``/translate``, whatever the answer; ``languages_asked`` counts ``GET /languages``.

In-process::

    with FakeLibreTranslate(api_key="k") as fake:
        client = TranslateClient(fake.base_url, "k", timeout=2)
        fake.queue_responses([(500, {"error": "boom"}), {"delay": 3}])

As a separate process::

    python -m tests.fakes.libretranslate --port 0 [--api-key K]
    # prints "listening http://127.0.0.1:N" then "ready"; GET /_fake/stats, POST /_fake/script,
    # POST /_fake/reset; it stops on SIGTERM/SIGINT or after --lifetime seconds.
"""

from __future__ import annotations

import hmac
import json
import re
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.fakes.base import BadRequest, FakeHandler, FakeServer, command_line, run

TRANSLATE_PATH = "/translate"
LANGUAGES_PATH = "/languages"
MAX_BODY = 2 * 1024 * 1024
LANGUAGES = {"en": "English", "es": "Spanish", "ar": "Arabic", "fr": "French"}
_TEXT_BETWEEN_TAGS = re.compile(r"(?<=>)([^<]+)|^([^<]+)")


@dataclass
class RecordedTranslation:
    """A translation request the fake accepted and answered 200."""

    headers: dict[str, str]
    body: bytes
    json: dict
    time: float

    @property
    def texts(self) -> list[str]:
        """``q`` as a list, whichever way it was sent."""
        q = self.json["q"]
        return [q] if isinstance(q, str) else list(q)


def fake_translation(text: str, target: str, format: str) -> str:
    """``[es] text``; in HTML, every run of text between tags is marked and the tags are kept."""
    mark = f"[{target}] "
    if format == "text":
        return mark + text

    def marked(match: re.Match) -> str:
        run = match.group(0)
        return run if not run.strip() else run[: len(run) - len(run.lstrip())] + mark + run.lstrip()

    return _TEXT_BETWEEN_TAGS.sub(marked, text)


class LibreTranslateHandler(FakeHandler):
    server_version = "FakeLibreTranslate/1.0"
    max_body = MAX_BODY
    not_found = "Not Found"

    def error_payload(self, status: int, message: str) -> object:
        return {"error": message}

    def invalid_payload(self, error: ValueError) -> object:
        return {"error": f"Invalid request: {error}"}

    def do_GET(self):  # noqa: N802 - http.server's naming
        """``/languages`` as LibreTranslate lists them; anything else as the base serves it."""
        if urlsplit(self.path).path != LANGUAGES_PATH:
            super().do_GET()
            return
        fake: FakeLibreTranslate = self.fake
        with fake._lock:
            fake.languages_asked += 1
        self._json(200, fake.language_list())

    def serve(self, path: str, body: bytes) -> None:
        """``POST /translate``: check the request as LibreTranslate does, then translate."""
        if path != TRANSLATE_PATH:
            raise BadRequest(404, self.not_found)
        fake: FakeLibreTranslate = self.fake
        if self.answer_scripted():
            return
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            raise BadRequest(400, "Invalid request: expected application/json")
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(400, "Invalid request: the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise BadRequest(400, "Invalid request: expected a JSON object")
        if not fake._key_matches(payload.get("api_key")):
            raise BadRequest(403, "Invalid API key")
        texts, single = _texts(payload.get("q"))
        source, target = payload.get("source"), payload.get("target")
        for name, code in (("source", source), ("target", target)):
            if not code:
                raise BadRequest(400, f"Invalid request: missing {name} parameter")
            if code not in LANGUAGES and not (name == "source" and code == "auto"):
                raise BadRequest(400, f"{code} is not supported")
        text_format = payload.get("format") or "text"
        if text_format not in ("text", "html"):
            raise BadRequest(400, f"{text_format} format is not supported")
        translated = [fake_translation(text, str(target), text_format) for text in texts]
        fake._accept(RecordedTranslation(dict(self.headers.items()), body, payload, time.time()))
        self._json(200, {"translatedText": translated[0] if single else translated})


def _texts(q: object) -> tuple[list[str], bool]:
    """``q`` as a list of strings, and whether it came as one string (400 otherwise)."""
    if isinstance(q, str) and q:
        return [q], True
    if isinstance(q, list) and q and all(isinstance(item, str) for item in q):
        return q, False
    raise BadRequest(400, "Invalid request: missing q parameter")


class FakeLibreTranslate(FakeServer[RecordedTranslation]):
    """A loopback HTTP server answering ``POST /translate`` and ``GET /languages`` like LibreTranslate."""

    handler = LibreTranslateHandler
    thread_name = "fake-libretranslate"

    def __init__(self, api_key: str | None = None, port: int = 0):
        super().__init__(port)
        self.api_key = api_key
        self.languages_asked = 0

    def config(self, **overrides) -> dict:
        """TRANSLATE_* settings that point the app at this fake."""
        return {"TRANSLATE_URL": self.base_url, "TRANSLATE_API_KEY": self.api_key, **overrides}

    def language_list(self) -> list[dict]:
        """Every language, each translating to all the others."""
        return [
            {"code": code, "name": name, "targets": [other for other in LANGUAGES if other != code]}
            for code, name in LANGUAGES.items()
        ]

    def stats(self) -> dict[str, int]:
        requests, attempts = self._snapshot()
        return {"requests": len(requests), "attempts": attempts, "languages": self.languages_asked}

    def _clear(self) -> None:
        super()._clear()
        self.languages_asked = 0

    def _key_matches(self, given: object) -> bool:
        """No key required, or exactly the required one."""
        if self.api_key is None:
            return True
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.api_key.encode())


def main(argv: list[str] | None = None) -> int:
    """The fake LibreTranslate on 127.0.0.1."""
    parser = command_line("Run a fake LibreTranslate API on 127.0.0.1.")
    parser.add_argument("--api-key", default=None, help="require this api_key (none by default)")
    return run(parser, argv, lambda args: FakeLibreTranslate(api_key=args.api_key, port=args.port))


if __name__ == "__main__":
    sys.exit(main())
