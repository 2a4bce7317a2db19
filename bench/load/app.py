"""The app as gunicorn serves it for bench/load: production settings, sign-in limit raised.

    gunicorn --config gunicorn.conf.py bench.load.app:app

The sign-in limits stay switched on (their Redis or memory bookkeeping is part of the cost),
but the per-IP one is raised: every load client comes from 127.0.0.1, and the point is to
measure sign-in, not to watch the limiter refuse it. The per-address limit (30 an hour) is
untouched; the benchmark signs in as a different parent each time.
"""

from __future__ import annotations

from app import create_app
from config import config_from_env

config = config_from_env()
config.RATELIMIT_SIGN_IN = "100000 per minute"
app = create_app(config)
