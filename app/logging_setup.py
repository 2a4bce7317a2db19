"""Logs with a request id on every line, the route's pattern instead of the path, no personal data."""

from __future__ import annotations

import logging
import secrets
import sys
import time
import traceback

from flask import Flask, g, has_request_context, request


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request's id (or '-' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def _class_name(error: BaseException) -> str:
    """An exception's class as module.Name (psycopg.errors.UniqueViolation)."""
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def scrubbed_traceback(error: BaseException) -> str:
    """The frames and exception classes of a traceback and its causes, without any message.

    Messages carry data: a database error holds the statement's parameters and PostgreSQL's
    DETAIL line ("Key (email)=(...) already exists"), int() quotes what was typed. The frames
    (file, line, code) say where it failed, and that is all the logs keep.
    """
    blocks: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        blocks.append(
            f"Traceback (most recent call last):\n{frames}{_class_name(current)} (message not logged)"
        )
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n\nwhich led to:\n\n".join(reversed(blocks))


class ScrubbedFormatter(logging.Formatter):
    """Every logger's exceptions (log.exception in jobs too) reach stderr without their messages."""

    def formatException(self, ei) -> str:  # noqa: N802 (logging's name)
        """The traceback as scrubbed_traceback writes it."""
        return scrubbed_traceback(ei[1]) if ei and ei[1] is not None else ""


def configure_logging(app: Flask) -> None:
    """One stream handler on stderr; Heroku collects it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        ScrubbedFormatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
    )
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    if not any(isinstance(f, RequestIdFilter) for h in root.handlers for f in h.filters):
        root.addHandler(handler)
    root.setLevel(logging.INFO if not app.testing else logging.WARNING)
    # The development server logs each request's full path (tokens included); app.access below
    # logs the route's pattern instead, so keep only the server's warnings.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    def log_exception(exc_info) -> None:
        """Flask logs the path of a failing request; paths can hold tokens, so log the rule.

        The traceback goes in scrubbed and without exc_info, so no handler (ours or another)
        can print the exception's message.
        """
        rule = request.url_rule.rule if request.url_rule else "-"
        error = exc_info[1]
        app.logger.error(
            "Exception on %s %s: %s\n%s", request.method, rule, _class_name(error), scrubbed_traceback(error)
        )

    # Replaced on this app alone (Flask's types treat methods as read-only; Python does not).
    app.log_exception = log_exception  # type: ignore[method-assign]


access = logging.getLogger("app.access")


def start_request_log() -> None:
    """before_request: give the request its id (Heroku's, if it looks like one) and start its timer."""
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = (
        incoming if incoming.replace("-", "").isalnum() and len(incoming) <= 64 else secrets.token_hex(8)
    )
    g.request_started = time.perf_counter()


def log_request(response):
    """after_request: one access line with the route's pattern, never the path; the id in a header."""
    if request.endpoint == "static":
        return response
    elapsed = (time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000
    # The rule ("/classes/<int:class_id>"), never the path: paths can carry tokens.
    rule = request.url_rule.rule if request.url_rule else "-"
    access.info("%s %s %s %.1fms", request.method, rule, response.status_code, elapsed)
    response.headers["X-Request-ID"] = g.request_id
    return response
