"""Logs with a request id on every line, the route's pattern instead of the path, no personal data."""

from __future__ import annotations

import logging
import secrets
import sys
import time

from flask import Flask, g, has_request_context, request


class RequestIdFilter(logging.Filter):
    """Stamp each record with the current request's id (or '-' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def configure_logging(app: Flask) -> None:
    """One stream handler on stderr; Heroku collects it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
    )
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    if not any(isinstance(f, RequestIdFilter) for h in root.handlers for f in h.filters):
        root.addHandler(handler)
    root.setLevel(logging.INFO if not app.testing else logging.WARNING)
    # The development server logs each request's full path (tokens included); app.access below
    # logs the route's pattern instead, so keep only the server's warnings.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    access = logging.getLogger("app.access")

    def log_exception(exc_info) -> None:
        """Flask logs the path of a failing request; paths can hold tokens, so log the rule."""
        rule = request.url_rule.rule if request.url_rule else "-"
        app.logger.error("Exception on %s %s", request.method, rule, exc_info=exc_info)

    app.log_exception = log_exception

    @app.before_request
    def _start():
        incoming = request.headers.get("X-Request-ID", "")
        # Heroku's router sends a request id; keep it only if it looks like one.
        g.request_id = (
            incoming if incoming.replace("-", "").isalnum() and len(incoming) <= 64 else secrets.token_hex(8)
        )
        g.request_started = time.perf_counter()

    @app.after_request
    def _log(response):
        if request.endpoint == "static":
            return response
        elapsed = (time.perf_counter() - g.get("request_started", time.perf_counter())) * 1000
        # The rule ("/classes/<int:class_id>"), never the path: paths can carry tokens.
        rule = request.url_rule.rule if request.url_rule else "-"
        access.info("%s %s %s %.1fms", request.method, rule, response.status_code, elapsed)
        response.headers["X-Request-ID"] = g.request_id
        return response
