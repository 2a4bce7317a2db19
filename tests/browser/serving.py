"""Serve a Flask app on 127.0.0.1 in a thread, for the browser tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from werkzeug.serving import ThreadedWSGIServer

from app.extensions import db


class _RequestJoiningServer(ThreadedWSGIServer):
    """A threaded server whose ``server_close`` waits for requests still being answered.

    Werkzeug's request threads are daemons that nobody waits for. A request Chromium started just
    before its context closed could then still hold a database connection when the engine is
    disposed and the tables emptied; the connection was later garbage-collected open (psycopg's
    ResourceWarning, an error under ``filterwarnings = error``) and its writes could land in the
    next test. Non-daemon threads are tracked by ``socketserver`` and joined on close.
    """

    daemon_threads = False
    block_on_close = True


@contextmanager
def serve_on_loopback(server_app: Flask) -> Iterator[str]:
    """Serve ``server_app`` on a free loopback port; yield its base URL; stop it and close its engine."""
    server = _RequestJoiningServer("127.0.0.1", 0, server_app)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="live-server", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        with server_app.app_context():
            db.session.remove()
            db.engine.dispose()
