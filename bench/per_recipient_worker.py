"""worker.py with the Mailgun backend's ``max_batch`` forced, for ``bench.mail_fanout`` only.

The app has no setting for the batch size, so the benchmark's "one provider call per
recipient" run uses this wrapper: it runs worker.py unchanged, except that right after
``create_app()`` the backend instance takes ``max_batch`` from BENCH_MAILGUN_MAX_BATCH
(default 1). Nothing in app code is patched or subclassed; the work horses forked by RQ
inherit the setting from this process.

    python -m bench.per_recipient_worker [queue ...]
"""

from __future__ import annotations

import os
import sys

import worker
from app import create_app

MAX_BATCH_VARIABLE = "BENCH_MAILGUN_MAX_BATCH"


def create_app_with_max_batch(*args, **kwargs):
    app = create_app(*args, **kwargs)
    max_batch = int(os.environ.get(MAX_BATCH_VARIABLE, "1"))
    if max_batch < 1:
        raise SystemExit(f"{MAX_BATCH_VARIABLE} must be at least 1")
    app.extensions["mail_backend"].max_batch = max_batch
    return app


worker.create_app = create_app_with_max_batch  # worker.main() builds its app through this name

if __name__ == "__main__":
    sys.exit(worker.main(sys.argv[1:]))
