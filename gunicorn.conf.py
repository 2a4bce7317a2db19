"""Gunicorn settings for Heroku-style hosts: PORT from the environment, no access log.

The app logs each request itself with the route's pattern instead of the path, so tokens
in reset or unsubscribe links never reach the logs.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
accesslog = None
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server):
    """Check the configuration once, in the master, before the port is bound or a worker forks:
    a wrong one is one message and exit status 4 (each worker's create_app checks it again)."""
    from config import ConfigError, config_from_env, refuse_to_start

    try:
        config_from_env()
    except ConfigError as error:
        refuse_to_start(error)
