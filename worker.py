"""The RQ worker: builds the app from config and works the named queues until SIGTERM.

Heroku stops dynos with SIGTERM (and SIGKILL ten seconds later); HerokuWorker lets the
job in hand finish or requeues it, so a daily restart loses nothing. The worker also
schedules the sweeper, which re-enqueues any email a lost job or a Redis outage left behind.
"""

from __future__ import annotations

import logging
import sys

from rq.worker import HerokuWorker

from app import create_app, jobs

SWEEP_EVERY_SECONDS = 120
SWEEP_JOB_ID = "sweep-outbox"
DIGEST_EVERY_SECONDS = 24 * 3600
DIGEST_JOB_ID = "daily-digest"
SUPPORT_SWEEP_JOB_ID = "sweep-support"
POLICY_DISPATCH_JOB_ID = "policy-dispatch"
RESET_SWEEP_JOB_ID = "sweep-reset-requests"
SUPPRESSION_SWEEP_JOB_ID = "sweep-suppressions"
log = logging.getLogger("worker")


class Worker(HerokuWorker):
    """HerokuWorker whose warm-shutdown request cannot be lost."""

    def _shutdown(self) -> None:
        # RQ raises StopRequested from the signal handler when no job is in hand. A SIGTERM
        # landing inside a log call (between dequeue and fork) has that exception swallowed by
        # logging's error handler, and the worker ran on, ignoring the stop. The flag survives
        # that: the work loop checks it before taking the next job.
        self._stop_requested = True
        super()._shutdown()


def main(argv: list[str]) -> int:
    """Run one worker on the queues named in argv (default: every queue the app uses)."""
    app = create_app()
    jobs.set_worker_app(app)
    if not app.config.get("REDIS_URL"):
        log.error("REDIS_URL is not set: without Redis, jobs run inside the web process.")
        return 2
    with app.app_context():
        connection = jobs.redis_connection()
        schedule_repeating(connection)
    # No app context around work(): each job pushes its own, after the fork.
    worker = Worker(argv or list(app.config["JOB_QUEUES"]), connection=connection)
    worker.work(with_scheduler=True)
    return 0


def schedule_repeating(connection) -> None:
    """Register the repeating jobs once per Redis, whatever the number of workers."""
    from app.auth.jobs import sweep_reset_requests
    from app.consent.jobs import refresh_policy_dispatches
    from app.mail.digest import send_digests
    from app.mail.jobs import sweep
    from app.mail.suppressions import sweep_suppressions
    from app.support.jobs import sweep_support

    _repeat(connection, SWEEP_JOB_ID, sweep, SWEEP_EVERY_SECONDS)
    _repeat(connection, DIGEST_JOB_ID, send_digests, DIGEST_EVERY_SECONDS)
    _repeat(connection, SUPPORT_SWEEP_JOB_ID, sweep_support, SWEEP_EVERY_SECONDS)
    _repeat(connection, POLICY_DISPATCH_JOB_ID, refresh_policy_dispatches, SWEEP_EVERY_SECONDS)
    _repeat(connection, RESET_SWEEP_JOB_ID, sweep_reset_requests, SWEEP_EVERY_SECONDS)
    _repeat(connection, SUPPRESSION_SWEEP_JOB_ID, sweep_suppressions, SWEEP_EVERY_SECONDS)


def _repeat(connection, job_id: str, func, interval: int) -> None:
    from rq import Queue, Repeat
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    try:
        status = Job.fetch(job_id, connection=connection).get_status()
    except NoSuchJobError:
        status = None
    if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED):
        return
    Queue("default", connection=connection).enqueue(
        func, job_id=job_id, repeat=Repeat(times=10**6, interval=interval), result_ttl=600
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
