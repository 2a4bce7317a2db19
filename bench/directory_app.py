"""The app as gunicorn serves it, plus one bare route: the framework's floor for bench/directory.py.

    gunicorn --config gunicorn.conf.py bench.directory_app:app

``/_bench/floor`` runs every request hook the real pages run (session, member, access check,
security headers, session save) and renders nothing, so a page's time divided by the floor's
says what the page itself costs. The route exists only in this wrapper, never in the app.
"""

from __future__ import annotations

from app import create_app
from app.permissions import public

app = create_app()


@app.route("/_bench/floor")
@public
def floor():
    """The floor: the same app and hooks, no query of its own and no template."""
    return "ok"
